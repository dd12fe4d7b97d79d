"""The fast engine's planner (`dualfocus.engine.tree.plan`), pure Python: layouts checked by hand.

Notation: a row's columns are numbered in the order they are laid out; a branch's path is the
list of columns it sees. Token ids are small ints, image patches `Patch(slot, index)`.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from dualfocus.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from dualfocus.engine.tree.plan import (
    Forest,
    Patch,
    StepBuilder,
    label_units,
    mean_nll,
    place_child,
    place_fresh,
    reserve_columns,
    row_groups,
    unit_index,
    units_of,
)

NAN = float("nan")


def test_the_planner_imports_and_runs_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
        "from dualfocus.engine.tree import plan\n"
        "step = plan.StepBuilder(plan.Forest(1))\n"
        "leaves = plan.place_fresh(step, [[1, 5, 6], [1, 5, 7]], [[0, 1]], [0, 0])\n"
        "assert leaves == [(0, 1), (0, 2)] and step.finish().width == 5\n"
        "assert sys.modules['torch'] is None\n"  # still the block: nothing imported it
        "assert not [m for m in sys.modules if m.split('.')[0] in ('transformers', 'numpy', 'PIL')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_units_expand_each_image_marker_to_its_patches():
    ids = [1, IMAGE_TOKEN_INDEX, 9, IMAGE_TOKEN_INDEX, 4]
    assert units_of(ids, [3, 0], 2) == [1, Patch(3, 0), Patch(3, 1), 9, Patch(0, 0), Patch(0, 1), 4]
    assert label_units(ids, [IGNORE_INDEX, IMAGE_TOKEN_INDEX, 9, IGNORE_INDEX, 4], 2) == [IGNORE_INDEX] * 3 + [
        9, IGNORE_INDEX, IGNORE_INDEX, 4]
    assert [unit_index(ids, k, 2) for k in range(5)] == [0, 1, 3, 4, 6]


def test_rows_are_groups_and_ungrouped_requests():
    assert row_groups(["a", None, "b", "a", None]) == [[0, 3], [1], [2], [4]]
    assert reserve_columns(longest=10, n_image=4, new_tokens=3, turns=1) == 2 * 17 + 3 + 64


def test_a_group_shares_a_trunk_and_each_request_gets_a_child():
    """[1, 5, 6, 8] and [1, 5, 7]: common prefix 2, trunk 1 (its last unit is fed again by each child)."""
    forest = Forest(1)
    step = StepBuilder(forest)
    leaves = place_fresh(step, [[1, 5, 6, 8], [1, 5, 7]], [[0, 1]], records=[0, 3])
    s = step.finish()
    assert leaves == [(0, 1), (0, 2)]
    assert forest.rows[0].paths == [[0], [0, 1, 2, 3], [0, 4, 5]]
    new = s.rows[0]
    assert new.units == [1, 5, 6, 8, 5, 7]
    assert new.branch == [0, 1, 1, 1, 2, 2]
    assert new.position == [0, 1, 2, 3, 1, 2]
    assert new.before == [-1, 0, 1, 2, 0, 4]  # each child continues the trunk's column 0
    # request 1 wants units 0-2: the trunk's (which has no predecessor to compute it from) and its own two
    assert new.wanted == [True, False, False, False, True, True]
    assert s.columns == {(0, 0): [0], (0, 1): [1, 2, 3], (0, 2): [4, 5]}
    assert s.visible == [(0, 0, [0]), (0, 1, [0]), (0, 1, [1, 2, 3]), (0, 2, [0]), (0, 2, [4, 5])]


def test_rows_are_padded_to_the_widest():
    forest = Forest(3)
    step = StepBuilder(forest)
    place_fresh(step, [[1, 2, 3], [4]], [[0], [1]], [0, 0])
    s = step.finish()
    assert s.width == 3 and [r.units for r in s.rows] == [[1, 2, 3], [4, None, None], [None] * 3]
    assert s.rows[1].branch == [1, -1, -1] and s.rows[2].before == [-1, -1, -1]
    forest.commit(s, [[NAN, -1.0, -2.0], [NAN] * 3, [NAN] * 3])
    assert forest.width == 3 and forest.path_lps((0, 1))[1:] == [-1.0, -2.0]


def test_a_child_reuses_the_common_prefix_and_carries_its_first_log_prob():
    forest = Forest(1)
    step = StepBuilder(forest)
    place_fresh(step, [[1, 5, 6, 8]], [[0]], [0])
    forest.commit(step.finish(), [[NAN, -0.5, -0.6, -0.7]])  # the trunk is empty; branch 1 holds all four
    step = StepBuilder(forest)
    leaf = place_child(step, (0, 1), [1, 5, 6, 9, Patch(0, 0)], record=4)
    s = step.finish()
    # common prefix 3 -> cut 2: units from index 2 are fed (6 again: the logits of 9 are needed)
    assert leaf == (0, 2) and forest.rows[0].paths[2] == [0, 1, 4, 5, 6]
    assert s.rows[0].units == [6, 9, Patch(0, 0)] and s.rows[0].position == [2, 3, 4]
    assert s.rows[0].lps[0] == -0.6 and math.isnan(s.rows[0].lps[1])
    assert s.rows[0].before == [-1, 0, 1] and s.rows[0].wanted == [True, True, False]


def test_scoring_reuse_stops_before_a_labelled_unit_without_a_log_prob():
    forest = Forest(1)
    step = StepBuilder(forest)
    place_fresh(step, [[1, 5, 6, 8]], [[0]], [0])
    forest.commit(step.finish(), [[NAN, -0.5, NAN, -0.7]])
    step = StepBuilder(forest)
    labels = [IGNORE_INDEX, IGNORE_INDEX, 6, 8]
    place_child(step, (0, 1), [1, 5, 6, 8], record=4, labels=labels)
    assert step.finish().rows[0].units == [5, 6, 8]  # unit 2 lacks its log-prob: cut at 2, minus one


def test_mean_nll():
    labels = [IGNORE_INDEX, 4, IGNORE_INDEX, 7]
    assert mean_nll([NAN, -1.0, NAN, -3.0], labels, False) == (2.0, 2)
    assert mean_nll([NAN, NAN, 0.0, -3.0], labels, False) is None  # a reused column without its log-prob
    loss, n = mean_nll([NAN, NAN, 0.0, -3.0], labels, True)  # computed here: the model's NaN
    assert math.isnan(loss) and n == 2
    with pytest.raises(RuntimeError, match="internal"):
        mean_nll([0.0], labels, False)


def test_a_step_is_padded_to_the_first_width_that_holds_it():
    forest = Forest(2)
    step = StepBuilder(forest)
    a, b = forest.new_branch(0), forest.new_branch(1)
    step.append(0, a, [1, 2, 3])
    step.append(1, b, [4])
    done = step.finish(widths=(1, 2, 4, 8))
    assert done.width == 4
    assert done.rows[0].units == [1, 2, 3, None] and done.rows[1].units == [4, None, None, None]
    assert done.rows[1].branch == [b, -1, -1, -1]
    wide = StepBuilder(forest)
    wide.append(0, a, list(range(9)))
    assert wide.finish(widths=(1, 2, 4, 8)).width == 9  # wider than every bucket: as wide as it is


def test_retracted_columns_leave_the_path_and_the_next_step_hides_them():
    """Rejected draft tokens: their columns stay in the row, off the branch's path, and a branch
    made later from that path does not inherit them."""
    forest = Forest(1)
    first = StepBuilder(forest)
    trunk = forest.new_branch(0)
    first.append(0, trunk, [1, 2, 3, 4, 5])  # columns 0-4: a pending token (1) and a draft (2-5)
    forest.commit(first.finish(), [[NAN] * 5])
    forest.retract((0, trunk), 2)  # 4 and 5 rejected
    forest.set_lp(0, 2, -0.5)  # the accepted draft token 3 learns its log-prob
    assert forest.rows[0].paths[trunk] == [0, 1, 2]
    assert forest.path_units((0, trunk)) == [1, 2, 3] and forest.path_lps((0, trunk))[2] == -0.5
    nxt = StepBuilder(forest)
    nxt.append(0, trunk, [9])
    child = forest.new_branch(0, trunk, 3)
    step = nxt.finish()
    assert step.hidden == [(0, trunk, [3, 4])]
    assert step.columns[(0, trunk)] == [5] and step.rows[0].position == [3]  # after the kept path
    assert step.rows[0].before == [-1]  # its predecessor (column 2) ran in an earlier step
    assert forest.rows[0].paths[child] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="retracting"):
        forest.retract((0, trunk), 10)
