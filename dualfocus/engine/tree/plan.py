"""The fast engine's plan, on the host: which column of which row each token and image patch takes.

One call's requests live in R rows of one KV cache. A row is a tree of *branches*: a branch sees
a prefix of its parent's path plus its own columns. Nothing shared is copied or recomputed; a
column a branch must not see is masked, never moved. For DualFocus a row is one question: the
trunk (system + image) feeds a macro branch and a box branch; the micro turn continues the box
branch (with the crop), and the candidates to score continue the micro branch.

Reuse is exact: a request continuing a parent reuses the KV of the longest common prefix of its
units with the parent's path, minus one unit fed again so that the logits of its first new token
are computed here. For scoring, reuse also stops before the first labelled unit whose log-prob
the path lacks. This module is pure Python (no torch): `forward` runs the model over what it lays out.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from dualfocus.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

NAN = float("nan")


class Patch(NamedTuple):
    """One column of image features: row `index` of the features of the image in `slot`."""

    slot: int
    index: int


Unit = int | Patch  # what one column holds: a token id or an image patch (None: an unused column)
Leaf = tuple[int, int]  # (row, branch)


@dataclass
class Row:
    """The columns of one row, all branches interleaved in the order they were laid out."""

    units: list[Unit | None] = field(default_factory=list)
    lps: list[float] = field(default_factory=list)  # log p(unit | its path before it); NaN: not recorded
    paths: list[list[int]] = field(default_factory=list)  # per branch: the columns it sees, in order


@dataclass
class NewColumns:
    """One row's new columns in one forward (padded with unused columns to the step's width)."""

    units: list[Unit | None] = field(default_factory=list)
    branch: list[int] = field(default_factory=list)  # -1: unused
    position: list[int] = field(default_factory=list)  # position id: index on the branch's path
    before: list[int] = field(default_factory=list)  # new-column index of the path's previous column; -1: none new
    lps: list[float] = field(default_factory=list)  # known log-probs (NaN: unknown)
    wanted: list[bool] = field(default_factory=list)  # compute the log-prob here when unknown


@dataclass
class Step:
    """One forward's new columns, for every row."""

    start: int  # index of the first new column
    width: int
    rows: list[NewColumns]
    columns: dict[Leaf, list[int]]  # the new columns of each (row, branch), in order
    visible: list[tuple[int, int, list[int]]]  # (row, branch, columns) it now sees: for the mask
    hidden: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (row, branch, columns) it no longer sees


class Forest:
    """R rows of token trees: the host bookkeeping of one call's KV cache."""

    def __init__(self, rows: int):
        self.rows = [Row() for _ in range(rows)]
        self.width = 0  # columns so far
        self.visible: list[tuple[int, int, list[int]]] = []  # not yet in a Step
        self.hidden: list[tuple[int, int, list[int]]] = []  # retracted, not yet in a Step

    def new_branch(self, row: int, parent: int | None = None, cut: int = 0) -> int:
        """A branch that sees the first `cut` columns of `parent`'s path."""
        paths = self.rows[row].paths
        inherited = paths[parent][:cut] if parent is not None else []
        paths.append(list(inherited))
        if inherited:
            self.visible.append((row, len(paths) - 1, inherited))
        return len(paths) - 1

    @property
    def n_branches(self) -> int:
        return max(len(r.paths) for r in self.rows)

    def path_units(self, leaf: Leaf) -> list[Unit | None]:
        row = self.rows[leaf[0]]
        return [row.units[c] for c in row.paths[leaf[1]]]

    def path_lps(self, leaf: Leaf) -> list[float]:
        row = self.rows[leaf[0]]
        return [row.lps[c] for c in row.paths[leaf[1]]]

    def retract(self, leaf: Leaf, n: int) -> None:
        """Take the last `n` columns off a branch's path (rejected draft tokens): they stay in the
        cache, seen by no one; later columns of the branch follow the path that remains."""
        if n <= 0:
            return
        path = self.rows[leaf[0]].paths[leaf[1]]
        if n > len(path):
            raise RuntimeError(f"internal: retracting {n} columns of a path of {len(path)}")
        self.hidden.append((leaf[0], leaf[1], path[-n:]))
        del path[-n:]

    def set_lp(self, row: int, column: int, value: float) -> None:
        """Record a log-prob learnt after its column ran (an accepted draft token)."""
        self.rows[row].lps[column] = value

    def commit(self, step: Step, lps: Sequence[Sequence[float]]) -> None:
        """Record a step that ran, with the log-probs it knows per new column."""
        for row, new, row_lps in zip(self.rows, step.rows, lps):
            row.units.extend(new.units)
            row.lps.extend(row_lps)
        self.width += step.width


class StepBuilder:
    """Lays out the next forward's new columns, one segment (branch, units) at a time."""

    def __init__(self, forest: Forest):
        self.forest, self.start = forest, forest.width
        self.rows: dict[int, NewColumns] = {}
        self.columns: dict[Leaf, list[int]] = {}

    def append(self, row: int, branch: int, units: Sequence[Unit], lps: Sequence[float] | None = None,
               record: int = 0) -> None:
        """Append `units` to `branch`'s path; compute the unknown log-probs of the first `record`."""
        new = self.rows.setdefault(row, NewColumns())
        path = self.forest.rows[row].paths[branch]
        s, n = len(new.units), len(units)
        cols = list(range(self.start + s, self.start + s + n))
        self.columns.setdefault((row, branch), []).extend(cols)
        if not n:
            return
        new.units += units
        new.branch += [branch] * n
        new.position += range(len(path), len(path) + n)
        new.before += [path[-1] - self.start if path and path[-1] >= self.start else -1, *range(s, s + n - 1)]
        new.lps += lps if lps is not None else [NAN] * n
        new.wanted += [k < record for k in range(n)]
        path.extend(cols)
        self.forest.visible.append((row, branch, cols))

    def finish(self, widths: Sequence[int] = ()) -> Step:
        """The step, every row padded to the widest; to the first of `widths` that holds it, if any."""
        width = max((len(c.units) for c in self.rows.values()), default=0)
        width = next((w for w in sorted(widths) if w >= width), width)
        rows = [self.rows.get(r, NewColumns()) for r in range(len(self.forest.rows))]
        for new in rows:
            pad = width - len(new.units)
            new.units += [None] * pad
            new.branch += [-1] * pad
            new.position += [0] * pad
            new.before += [-1] * pad
            new.lps += [NAN] * pad
            new.wanted += [False] * pad
        visible, self.forest.visible = self.forest.visible, []
        hidden, self.forest.hidden = self.forest.hidden, []
        return Step(self.start, width, rows, self.columns, visible, hidden)


# -- requests -> units ------------------------------------------------------------------------------
def units_of(ids: Sequence[int], slots: Sequence[int], n_image: int) -> list[Unit]:
    """Token ids with the k-th image marker expanded to `n_image` patches of feature slot slots[k]."""
    out: list[Unit] = []
    images = iter(slots)
    for t in ids:
        if t == IMAGE_TOKEN_INDEX:
            out += patch_run(next(images), n_image)
        else:
            out.append(int(t))
    return out


@lru_cache(maxsize=4096)
def patch_run(slot: int, n_image: int) -> tuple[Patch, ...]:
    """The patches of one image, made once (slots restart at 0 in every call)."""
    return tuple(Patch(slot, j) for j in range(n_image))


def label_units(ids: Sequence[int], labels: Sequence[int], n_image: int) -> list[int]:
    """Labels aligned with units (an image marker's label becomes an IGNORE_INDEX run)."""
    out: list[int] = []
    for t, lab in zip(ids, labels):
        out += [IGNORE_INDEX] * n_image if t == IMAGE_TOKEN_INDEX else [int(lab)]
    return out


def unit_index(ids: Sequence[int], k: int, n_image: int) -> int:
    """The unit index where ids[k] starts."""
    return k + (n_image - 1) * sum(1 for t in ids[:k] if t == IMAGE_TOKEN_INDEX)


def row_groups(groups: Sequence[Hashable | None]) -> list[list[int]]:
    """Request indices per row: one row per group, and one per request without a group."""
    rows: dict = {}
    for i, g in enumerate(groups):
        rows.setdefault(("group", g) if g is not None else ("own", i), []).append(i)
    return list(rows.values())


def reserve_columns(longest: int, n_image: int, new_tokens: int, turns: int) -> int:
    """KV columns to allocate up front: each turn a prompt and an image with its new tokens, and
    room to score (growing later copies the cache)."""
    return (1 + turns) * (longest + n_image + new_tokens) + new_tokens + 64


# -- placing requests --------------------------------------------------------------------------------
def place_fresh(step: StepBuilder, units: Sequence[list[Unit]], rows: Sequence[list[int]],
                records: Sequence[int]) -> list[Leaf]:
    """New rows: a trunk holding what a row's requests share (but its last unit), one child each.

    `records[i]`: how many leading units of request i want their log-probs.
    """
    leaves: list[Leaf] = [(-1, -1)] * len(units)
    forest = step.forest
    for row, members in enumerate(rows):
        trunk_len = max(common_prefix_all([units[i] for i in members]) - 1, 0)
        trunk = forest.new_branch(row)
        step.append(row, trunk, units[members[0]][:trunk_len],
                    record=max(min(records[i], trunk_len) for i in members))
        for i in members:
            branch = forest.new_branch(row, trunk, trunk_len)
            step.append(row, branch, units[i][trunk_len:], record=records[i] - trunk_len)
            leaves[i] = (row, branch)
    return leaves


def place_child(step: StepBuilder, parent: Leaf, units: list[Unit], record: int,
                labels: list[int] | None = None) -> Leaf:
    """A new branch of the parent's row, reusing what it shares with the parent's path."""
    path_lps = step.forest.path_lps(parent)
    cut = common_prefix(step.forest.path_units(parent), units)
    if labels is not None:
        cut = first_unknown_label(labels, path_lps, cut)
    cut = max(min(cut, len(units)) - 1, 0)  # feed one shared unit again: its logits are needed
    row = parent[0]
    branch = step.forest.new_branch(row, parent[1], cut)
    first_lp = path_lps[cut] if cut < len(path_lps) else NAN
    new = units[cut:]
    step.append(row, branch, new, [first_lp] + [NAN] * (len(new) - 1), record=record - cut)
    return row, branch


def mean_nll(lps: Sequence[float], labels: Sequence[int], computed_here: bool) -> tuple[float, int] | None:
    """(mean negative log-likelihood of the labelled units, their count); None when a reused column
    lacks its log-prob. `computed_here`: every log-prob came from this request's own forward, so a
    NaN is the model's (e.g. fp16 overflow) and is returned as the loss. LLaVA shifts labels by one.
    """
    if len(lps) != len(labels):
        raise RuntimeError(f"internal: path of {len(lps)} units for {len(labels)} labels")
    picked = [lps[j] for j in range(1, len(labels)) if labels[j] != IGNORE_INDEX]
    if not computed_here and any(v != v for v in picked):  # NaN
        return None
    n = len(picked)
    return (-sum(picked) / n if n else NAN), n


def common_prefix(a: Sequence, b: Sequence) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def common_prefix_all(seqs: Sequence[Sequence]) -> int:
    n = len(seqs[0])
    for s in seqs[1:]:
        n = min(n, common_prefix(seqs[0], s))
    return n


def first_unknown_label(labels: Sequence[int], path_lps: Sequence[float], limit: int) -> int:
    """Index of the first labelled unit below `limit` whose log-prob the path lacks (else limit)."""
    for j in range(1, min(limit, len(labels))):
        if labels[j] != IGNORE_INDEX and path_lps[j] != path_lps[j]:  # NaN
            return j
    return limit
