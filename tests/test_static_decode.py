"""The fixed-shape decode path (engine.tree.static), run eagerly on CPU, equals the growing eager
path and the reference engine: greedy tokens, continuations and scores (tiny random fp32 models).
It exercises everything a CUDA graph would replay (bucketed widths, whole-capacity attention under
a boolean mask, the KV written at an index tensor) except the capture call itself.
"""

from __future__ import annotations

import pytest
import test_engine
from test_drafts import Oracle, continue_and_score_a_drafted_box
from test_engine import mixed_requests

from dualfocus.engine import fast as fast_module
from dualfocus.engine.fast import FastEngine
from dualfocus.engine.tree import plan
from dualfocus.engine.tree.static import BUCKETS, StaticDecoder

engines = test_engine.engines


@pytest.fixture()
def static(engines, monkeypatch):
    """(static fast engine, reference, widths of the static steps run)."""
    fast, ref = engines
    widths = []
    step = StaticDecoder._step

    def counted(self, inp):
        widths.append(inp.token.shape[1])
        return step(self, inp)

    monkeypatch.setattr(StaticDecoder, "_step", counted)
    return FastEngine(fast.model, fast.tokenizer, fast.image_processor, static_decode="eager"), ref, widths


@pytest.mark.parametrize("draft", [None, (6, 0), (3, 2), (40, 5)])
def test_static_decode_equals_the_reference(static, draft):
    fast, ref, widths = static
    requests = mixed_requests(fast.tokenizer)
    want = ref.generate(requests)
    if draft is not None:
        for req, w in zip(requests, want):
            req.draft = Oracle(w.token_ids, *draft)
    got = fast.generate(requests)
    assert [g.token_ids for g in got] == [w.token_ids for w in want]
    if draft is None:  # every decode step ran static (wider drafted steps, up to 3 x 7 columns, run eagerly)
        assert len(widths) == max(g.forwards for g in got) - 1
    assert set(widths) <= set(BUCKETS)  # a row decodes one column per branch (3 in group "g1"), plus drafts
    assert widths and (draft is not None or max(widths) == 4)


def test_continuing_and_scoring_after_static_steps_equals_the_reference(static):
    fast, ref, widths = static
    continue_and_score_a_drafted_box(fast, ref, draft_length=4)
    assert widths


def test_a_full_buffer_grows_on_the_eager_path_and_static_steps_resume(static, monkeypatch):
    """Reserve too little: the step that does not fit grows the buffer (eagerly); later steps run
    static again on the new buffer, with fresh inputs."""
    fast, ref, widths = static
    monkeypatch.setattr(fast_module, "CAPACITY_STEP", 1)
    monkeypatch.setattr(plan, "reserve_columns", lambda longest, n_image, new_tokens, turns: longest + n_image + 3)
    requests = mixed_requests(fast.tokenizer)[:6]
    want = ref.generate(requests)
    got = fast.generate(requests)
    assert [g.token_ids for g in got] == [w.token_ids for w in want]
    assert len(widths) >= 8  # 20 new tokens, 3 columns of room: static before and after the growth


def test_a_later_call_of_the_same_shape_reuses_the_buffer_and_sees_none_of_it(static):
    """The second call takes the first's KV buffer and static inputs (graphs, on CUDA); what the
    first call left there is hidden by the new call's masks."""
    fast, ref, widths = static
    first = mixed_requests(fast.tokenizer)
    second = first[::-1]  # the same rows and longest prompt, other contents in every column
    fast.generate(first)
    spare = fast._spare
    assert spare is not None and spare.static.tree is None
    got = fast.generate(second)
    assert fast._spare is None  # in use while the call's handles live
    tokens = [g.token_ids for g in got]
    del got
    assert fast._spare is not None and fast._spare.static is spare.static  # then kept again
    assert tokens == [w.token_ids for w in ref.generate(second)]
