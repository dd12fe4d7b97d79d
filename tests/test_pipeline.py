"""The DualFocus pipeline on a tiny model trained to follow the protocol (`focus_model`).

The trained model writes real boxes, so every step runs: macro + box, crop, micro continuing the
box pass, candidate scoring continuing the micro pass, and every fallback. The fast engine's
results must equal the reference engine's (losses within 1e-4).
"""

from __future__ import annotations

import json
import math

import pytest
from focus_model import CASES, MAX_NEW_TOKENS, case_image
from PIL import Image

from dualfocus.benchmarks import get_protocol
from dualfocus.engine.base import Score
from dualfocus.engine.fast import FastEngine
from dualfocus.engine.reference import ReferenceEngine
from dualfocus.focus import pipeline
from dualfocus.focus.pipeline import DualFocus, FocusConfig, FocusResult
from dualfocus.focus.protocols import BOX_REQUEST
from dualfocus.focus.scoring import ScoringError
from dualfocus.focus.text import Chat

TOL = 1e-4
EXACT_FIELDS = ("text", "answer", "macro_raw", "macro_answer", "box_text", "box", "crop", "micro_raw",
                "micro_answer", "candidates", "choice", "fallback", "error", "mode", "selection")
TRACE_FIELDS = {"answer", "macro_raw", "macro_answer", "box_text", "box", "crop", "micro_raw", "micro_answer",
                "candidates", "losses", "choice", "fallback", "error", "mode", "selection"}


@pytest.fixture(scope="module")
def engines(focus_loaded):
    tokenizer, model, image_processor = focus_loaded
    return {"fast": FastEngine(model, tokenizer, image_processor),
            "reference": ReferenceEngine(model, tokenizer, image_processor)}


def config(**kw) -> FocusConfig:
    return FocusConfig(max_new_tokens=MAX_NEW_TOKENS, **kw)


def mixed_items(benchmark: str):
    """16 questions of one benchmark: its 6 trained cases, then their questions on other pictures.

    Returns (items, cases) where cases[k] is the trained case of item k, or None for a variant.
    """
    own = [c for c in CASES if c.benchmark == benchmark]
    others = [c for c in CASES if c.benchmark != benchmark]
    items = [(c.query(), c.image()) for c in own]
    cases = list(own)
    for k in range(10):  # variants: another case's image, or this one's at another size
        c = own[k % len(own)]
        image = others[k].image() if k < len(others) else case_image(c.question_id, (33 + 7 * k, 90 - 5 * k))
        items.append((c.query(), image))
        cases.append(None)
    return items, cases


def assert_same_results(got: list[FocusResult], want: list[FocusResult]) -> None:
    for k, (g, w) in enumerate(zip(got, want)):
        for name in EXACT_FIELDS:
            assert getattr(g, name) == getattr(w, name), f"item {k} ({g.question_id}): {name}"
        if w.losses is None:
            assert g.losses is None
        else:
            assert g.losses == pytest.approx(w.losses, abs=TOL), f"item {k} ({g.question_id}): losses"


def assert_trained_trace(res: FocusResult, case) -> None:
    """The trained case's passes came out as trained, and the choice is the one its answers call for."""
    assert (res.macro_raw, res.box_text, res.micro_raw) == (case.macro, case.box, case.micro)
    if case.expect == "both_valid":
        assert res.choice in ("scored_macro", "scored_micro", "tie_macro")
        assert len(res.losses) == 2 and all(math.isfinite(x) for x in res.losses)
    else:
        assert res.choice == case.expect and res.losses is None


@pytest.mark.parametrize("selection", ["original", "candidate"])
@pytest.mark.parametrize("bench", ["seed", "textvqa"])
def test_fast_equals_reference_on_a_mixed_batch(engines, bench, selection):
    items, cases = mixed_items(bench)
    assert len(items) >= 16
    proto = get_protocol(bench)
    got = DualFocus(engines["fast"], proto, config(selection=selection)).run(items)
    want = DualFocus(engines["reference"], proto, config(selection=selection)).run(items)
    assert_same_results(got, want)
    for res, case in zip(got, cases):
        if case is not None:
            assert_trained_trace(res, case)
    # every step ran: crops, micro passes and scored candidates
    assert sum(r.crop is not None for r in got) >= 4
    assert sum(r.losses is not None for r in got) >= 1


@pytest.mark.parametrize("bench", ["seed", "textvqa"])
def test_box_drafts_save_forwards_and_change_nothing(engines, bench):
    """The box pass's drafts (focus.drafts): the same results as without, in fewer forwards for a
    well-formed box; the trained bad boxes (pixel units, "none", ...) break the format and cost none."""
    items, _ = mixed_items(bench)
    proto = get_protocol(bench)
    on = DualFocus(engines["fast"], proto, config()).run(items)
    off = DualFocus(engines["fast"], proto, config(draft_box=False)).run(items)
    assert_same_results(on, off)
    assert all(r.extra["box_forwards"] == r.extra["box_tokens"] for r in off)
    good = [r for r in on if r.box is not None and len(r.box_text) == len("[0.12, 0.34, 0.56, 0.78]")]
    assert len(good) >= 4
    for r in good:  # "▁[" 0 . d d , ▁ ... ] </s>: 25 tokens in the prompt's forward, "▁[ 0 ." and two per number
        assert (r.extra["box_tokens"], r.extra["box_forwards"]) == (25, 10), r.box_text
    assert all(r.extra["box_forwards"] <= r.extra["box_tokens"] for r in on)


def test_fixed_shape_decode_steps_equal_the_reference(engines):
    """The static decode path (engine.tree.static, run eagerly on CPU) through the whole method:
    box drafts, micro continuations and scoring."""
    items, _ = mixed_items("seed")
    proto = get_protocol("seed")
    fast = engines["fast"]
    static = FastEngine(fast.model, fast.tokenizer, fast.image_processor, static_decode="eager")
    got = DualFocus(static, proto, config()).run(items)
    want = DualFocus(engines["reference"], proto, config()).run(items)
    assert_same_results(got, want)
    assert sum(r.losses is not None for r in got) >= 1


def test_the_choice_follows_the_losses(engines):
    """Both-valid-different questions: the lower loss wins; the scored texts are the candidates."""
    proto = get_protocol("seed")
    case = next(c for c in CASES if c.question_id == "s2")
    res = DualFocus(engines["fast"], proto, config()).run([(case.query(), case.image())])[0]
    assert res.candidates == ["green", "yellow"]  # option texts of B (macro) and D (micro)
    macro_loss, micro_loss = res.losses
    assert res.answer == ("D" if micro_loss < macro_loss else "B")
    assert res.choice == ("scored_micro" if micro_loss < macro_loss else "scored_macro")
    text_case = next(c for c in CASES if c.question_id == "t1")
    res = DualFocus(engines["fast"], get_protocol("textvqa"), config()).run([(text_case.query(), text_case.image())])[0]
    assert res.candidates == ["stop", "exit"]


def test_losses_equal_the_reference_scoring_of_the_same_examples(engines):
    """The pipeline's losses are the engine's loglikelihood of `scoring_example` (full image, crop)."""
    from dualfocus import boxes
    from dualfocus.engine.base import ScoringRequest
    from dualfocus.focus.scoring import scoring_example

    proto = get_protocol("textvqa")
    case = next(c for c in CASES if c.question_id == "t6")
    image = case.image()
    res = DualFocus(engines["fast"], proto, config(selection="candidate")).run([(case.query(), image)])[0]
    crop = boxes.crop(image, tuple(res.crop))
    tok = engines["reference"].tokenizer
    requests = []
    for cand in res.candidates:
        ids, labels = scoring_example(proto, case.query(), res.box_text, cand, tok, "vicuna_v1", "candidate")
        requests.append(ScoringRequest(ids.tolist(), labels.tolist(), [image, crop]))
    want = [s.loss for s in engines["reference"].loglikelihood(requests)]
    assert res.losses == pytest.approx(want, abs=TOL)


def _scripted(base):
    """A test-only engine: the box pass says what a test wants; calls are counted; losses can be NaN."""

    class Scripted(base):
        def __init__(self, engine, box_texts=None, nan_for=()):
            super().__init__(engine.model, engine.tokenizer, engine.image_processor)
            self.chat = Chat(engine.tokenizer)
            self.box_texts = dict(box_texts or {})  # bare question -> box text
            self.nan_for = tuple(nan_for)  # a scoring request whose ids decode to contain this -> NaN loss
            self.calls: list[tuple[str, int]] = []

        def generate(self, requests):
            self.calls.append(("generate", len(requests)))
            gens = super().generate(requests)
            for req, gen in zip(requests, gens):
                prompt = self.tokenizer.decode([t for t in req.token_ids if t >= 0])
                last_turn = prompt.rsplit("USER: ", 1)[-1]  # the micro prompt replays the box turn
                for question, text in self.box_texts.items():
                    if f"{BOX_REQUEST}: {question}" in last_turn:
                        gen.token_ids = list(self.chat.answer_ids(text))
            return gens

        def loglikelihood(self, requests):
            self.calls.append(("loglikelihood", len(requests)))
            scores = super().loglikelihood(requests)
            for k, req in enumerate(requests):
                text = self.tokenizer.decode([t for t in req.input_ids if t >= 0])
                if any(marker in text for marker in self.nan_for):
                    scores[k] = Score(float("nan"), scores[k].n_tokens)
            return scores

    return Scripted


BAD_BOXES = [
    ("none", "no_box"),
    ("the car is on the left", "no_box"),
    ("[120, 45, 300, 200]", "pixel_units"),
    ("[0.70, 0.20, 0.30, 0.60]", "inverted"),
    ("[0.30, 0.30, 0.30, 0.60]", "degenerate"),
    ("[0.20, 0.30, 1.50, 0.70]", "out_of_range"),
    ("[-0.10, 0.30, 0.50, 0.70]", "out_of_range"),
    ("[0.20, 0.30, 0.60, 0.70] <image>", "image_token_in_box_text"),  # replayed, it would be an image marker
]


@pytest.mark.parametrize("box_text, reason", BAD_BOXES)
def test_each_bad_box_keeps_the_macro_answer(engines, box_text, reason):
    """A box the crop cannot use: no micro pass, the macro answer, the reason recorded (both engines)."""
    cases = [c for c in CASES if c.question_id in ("s2", "t1")]  # trained with good boxes and scoring
    out = {}
    for name in ("fast", "reference"):
        results = []
        for case in cases:
            engine = _scripted(type(engines[name]))(engines[name], {case.query().question: box_text})
            res = DualFocus(engine, get_protocol(case.benchmark), config()).run([(case.query(), case.image())])[0]
            assert res.box_text == box_text and res.fallback == reason
            assert (res.box, res.crop, res.micro_raw, res.micro_answer, res.losses) == (None,) * 5
            assert res.answer == res.macro_answer == case.macro and res.choice == f"no_micro: {reason}"
            assert [c[0] for c in engine.calls] == ["generate"]  # no micro pass, nothing scored
            results.append(res)
        out[name] = results
    assert_same_results(out["fast"], out["reference"])


def test_an_empty_crop_keeps_the_macro_answer(engines):
    """A good box on an image one pixel wide: no pixels to crop (`empty_crop`)."""
    case = next(c for c in CASES if c.question_id == "s1")
    engine = _scripted(FastEngine)(engines["fast"], {case.query().question: case.box})
    res = DualFocus(engine, get_protocol("seed"), config()).run([(case.query(), Image.new("RGB", (1, 40), "red"))])[0]
    assert res.fallback == "empty_crop" and res.choice == "no_micro: empty_crop" and res.micro_raw is None


def test_a_replaced_good_box_is_cropped_and_continued(engines):
    """Control for the wrapper: a good box that differs from what the model wrote still gets its micro pass,
    continuing a box branch whose tokens differ from the replayed text (fast == reference)."""
    case = next(c for c in CASES if c.question_id == "t2")
    box = "[0.10, 0.20, 0.90, 0.70]"
    out = []
    for name in ("fast", "reference"):
        engine = _scripted(type(engines[name]))(engines[name], {case.query().question: box})
        out += DualFocus(engine, get_protocol("textvqa"), config()).run([(case.query(), case.image())])
    assert out[0].box == [0.1, 0.2, 0.9, 0.7] and out[0].micro_raw is not None
    assert_same_results(out[:1], out[1:])


@pytest.mark.parametrize("engine_name", ["fast", "reference"])
def test_macro_mode_runs_one_pass(engines, engine_name):
    items, _ = mixed_items("seed")
    engine = _scripted(type(engines[engine_name]))(engines[engine_name])
    results = DualFocus(engine, get_protocol("seed"), config(mode="macro")).run(items)
    assert engine.calls == [("generate", len(items))]
    full = DualFocus(engines[engine_name], get_protocol("seed"), config()).run(items)
    for res, ref in zip(results, full):
        assert res.mode == "macro" and res.choice == "macro_only"
        assert res.macro_raw == ref.macro_raw and res.answer == res.macro_answer == ref.macro_answer
        assert (res.box_text, res.crop, res.micro_raw, res.losses) == (None, None, None, None)


def test_metadata_holds_the_whole_trace(engines):
    items, cases = mixed_items("textvqa")
    results = DualFocus(engines["fast"], get_protocol("textvqa"), config()).run(items[:6])
    for res, case in zip(results, cases):
        meta = res.metadata()
        assert set(meta) == TRACE_FIELDS
        json.dumps(meta)  # goes into an answer record as is
        assert meta["macro_raw"] == case.macro and meta["box_text"] == case.box and meta["choice"] == res.choice
    scored = next(r for r in results if r.losses is not None).metadata()
    assert len(scored["candidates"]) == 2 and len(scored["losses"]) == 2 and scored["crop"] and scored["box"]


def test_a_question_whose_scoring_example_fails_does_not_stop_the_batch(engines, monkeypatch):
    """t1's candidates cannot be built: t1 gets an error and its macro answer; t6 is still scored."""
    real = pipeline.scoring_example

    def failing(protocol, q, *args, **kw):
        if q.question_id == "t1":
            raise ScoringError(f"question {q.question_id!r}: cannot be scored (test)")
        return real(protocol, q, *args, **kw)

    items, _ = mixed_items("textvqa")
    before = {r.question_id: r for r in DualFocus(engines["fast"], get_protocol("textvqa"), config()).run(items[:6])}
    monkeypatch.setattr(pipeline, "scoring_example", failing)
    for name in ("fast", "reference"):
        results = {r.question_id: r for r in DualFocus(engines[name], get_protocol("textvqa"), config()).run(items[:6])}
        bad = results["t1"]
        assert bad.error.startswith("scoring: ") and "cannot be scored" in bad.error
        assert bad.answer == bad.macro_answer == "stop" and bad.choice == "scoring_failed" and bad.fallback is None
        assert bad.micro_raw == "exit" and bad.candidates is None and bad.losses is None
        assert results["t6"].losses == pytest.approx(before["t6"].losses, abs=TOL)
        for qid in ("t2", "t3", "t4", "t5"):
            assert results[qid].choice == before[qid].choice and results[qid].error is None


def test_a_nan_loss_does_not_stop_the_batch(engines):
    """A NaN candidate loss (fp16 overflow on a GPU) cannot choose: that question keeps its macro
    answer with an error; the other questions are answered as usual."""
    items, _ = mixed_items("textvqa")
    engine = _scripted(FastEngine)(engines["fast"], nan_for=("phone",))  # t6's question
    results = {r.question_id: r for r in DualFocus(engine, get_protocol("textvqa"), config()).run(items[:6])}
    bad = results["t6"]
    assert bad.error is not None and "NaN" in bad.error
    assert bad.answer == bad.macro_answer == "yes" and bad.choice == "scoring_failed"
    assert bad.micro_raw is not None and bad.candidates is not None and math.isnan(min(bad.losses, key=math.isnan))
    assert results["t1"].choice in ("scored_macro", "scored_micro") and results["t1"].error is None


@pytest.mark.parametrize("engine_name", ["fast", "reference"])
def test_a_question_past_the_models_positions_is_an_error_record(engines, tmp_path, engine_name):
    """Refused by the engine before any forward; the runner writes it as that question's error
    record, and the other questions of its batch are answered."""
    from dualfocus.benchmarks import get_benchmark
    from dualfocus.eval.runner import read_answer_file, run_benchmark

    own = [c for c in CASES if c.benchmark == "textvqa"][:3]
    rows = []
    for c in own:
        c.image().save(tmp_path / f"{c.question_id}.png")
        rows.append({"question_id": c.question_id, "image": f"{c.question_id}.png", "text": c.text})
    long_text = "What is written on the sign? " * 800  # > 4096 positions with the tiny tokenizer
    rows.insert(1, {"question_id": "long", "image": f"{own[0].question_id}.png", "text": long_text})
    out = tmp_path / "answers.jsonl"
    run_benchmark(DualFocus(engines[engine_name], get_protocol("textvqa"), config()), get_benchmark("textvqa"),
                  rows, str(out), image_folder=str(tmp_path), batch_size=4, progress=False)
    records = {r["question_id"]: r for r in read_answer_file(str(out))}
    assert records["long"]["error"].startswith("pipeline: ContextLengthError: a prompt of ")
    assert "exceeds the model's 4096 positions (max_position_embeddings); shorten the question" in records["long"]["error"]
    for c in own:
        assert "error" not in records[c.question_id] and records[c.question_id]["metadata"]["macro_raw"] == c.macro
