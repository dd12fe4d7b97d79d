"""The pipeline's bookkeeping on `FakeEngine` (no model): passes, fallbacks, choices, order, hints.

The answers are scripted per question and pass, the losses fixed per candidate text, so every
branch of `DualFocus.run` is reached in milliseconds and each value asserted is known exactly.
"""

from __future__ import annotations

import math

import pytest
from fake_engine import FakeEngine, by_pass, by_text
from PIL import Image

from dualfocus.benchmarks import get_protocol
from dualfocus.constants import IMAGE_TOKEN_INDEX
from dualfocus.focus import pipeline
from dualfocus.focus.pipeline import SCORING_FAILED, DualFocus, FocusConfig
from dualfocus.focus.protocols import FocusQuery
from dualfocus.model.tokenizer import load_tokenizer
from dualfocus.preprocess import LabelMaskingError

GOOD_BOX = "[0.25, 0.25, 0.75, 0.75]"
SCRIPT = {  # question -> (macro, box, micro)
    "what is on the sign": ("stop", GOOD_BOX, "exit"),  # both valid, different: scored
    "what colour is the car": ("red", GOOD_BOX, "red"),  # agree
    "what is the brand": ("nike", "[120, 45, 300, 200]", "adidas"),  # pixel units: no micro pass
    "what is written here": ("", GOOD_BOX, "open"),  # macro invalid (empty)
    "who is there": ("a man", "none", "a woman"),  # no box
}
LOSSES = {"stop": 2.0, "exit": 1.0}


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return load_tokenizer(tiny_tokenizer_dir)


def textvqa(question: str, qid) -> FocusQuery:
    return FocusQuery("textvqa", qid, question, text=f"{question}\nAnswer the question using a single word or phrase.")


def items(questions=tuple(SCRIPT)):
    return [(textvqa(q, k), Image.new("RGB", (400, 300), (10 * k, 0, 0))) for k, q in enumerate(questions)]


def run(tokenizer, script=SCRIPT, losses=LOSSES, questions=tuple(SCRIPT), **config):
    engine = FakeEngine(tokenizer, by_pass(script), by_text(losses))
    results = DualFocus(engine, get_protocol("textvqa"), FocusConfig(**config)).run(items(questions))
    return engine, results


def test_each_question_gets_its_own_path_in_order(tokenizer):
    engine, results = run(tokenizer)
    assert [r.question_id for r in results] == [0, 1, 2, 3, 4]
    assert [r.choice for r in results] == ["scored_micro", "agree", "no_micro: pixel_units", "macro_invalid",
                                           "no_micro: no_box"]
    assert [r.answer for r in results] == ["exit", "red", "nike", "open", "a man"]
    assert [r.fallback for r in results] == [None, None, "pixel_units", None, "no_box"]
    assert results[0].candidates == ["stop", "exit"] and results[0].losses == [2.0, 1.0]
    assert [r.losses for r in results[1:]] == [None] * 4
    assert [r.micro_raw for r in results] == ["exit", "red", None, "open", None]
    # the box (100, 75)-(300, 225) squared around its centre, 25 px on each side: 250 x 250
    assert results[0].crop == [75, 25, 325, 275] and results[2].crop is None
    # one call per step: macro + box for all, micro for the three with a crop, scoring for one
    assert engine.verbs() == [("generate", 10), ("generate", 3), ("loglikelihood", 2)]


def test_the_engine_is_asked_with_the_right_hints_and_parents(tokenizer):
    engine, _ = run(tokenizer)
    (_, first, first_out), (_, micro, micro_out), (_, scoring, _) = engine.calls
    assert [r.group for r in first] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # macro and box of a question share
    assert [r.expect_turns for r in first] == [0, 1] * 5  # the box pass is continued
    box_handles = [first_out[2 * k + 1].handle for k in (0, 1, 3)]
    assert [r.parent for r in micro] == box_handles  # each micro pass continues its own box pass
    for req in micro:
        ids = list(req.token_ids)
        assert ids.count(IMAGE_TOKEN_INDEX) == 2 == len(req.images)
        assert req.keep_logprobs == len(ids) - 1 - ids[::-1].index(IMAGE_TOKEN_INDEX)  # up to the crop
        assert req.images[1].size == (250, 250)
    assert [r.parent for r in scoring] == [micro_out[0].handle] * 2


@pytest.mark.parametrize("losses, choice, answer", [
    ({"stop": 2.0, "exit": 1.0}, "scored_micro", "exit"),
    ({"stop": 1.0, "exit": 2.0}, "scored_macro", "stop"),
    ({"stop": 1.5, "exit": 1.5}, "tie_macro", "stop"),
])
def test_the_lower_loss_wins(tokenizer, losses, choice, answer):
    _, [res] = run(tokenizer, losses=losses, questions=["what is on the sign"])
    assert (res.choice, res.answer, res.text) == (choice, answer, answer)


@pytest.mark.parametrize("selection, choices, verbs", [
    ("macro", ["macro_only"] * 5, [("generate", 10), ("generate", 3)]),
    ("micro", ["micro_only", "micro_only", "no_micro: pixel_units", "micro_only", "no_micro: no_box"],
     [("generate", 10), ("generate", 3)]),
    ("candidate", ["scored_micro", "agree", "no_micro: pixel_units", "macro_invalid", "no_micro: no_box"],
     [("generate", 10), ("generate", 3), ("loglikelihood", 2)]),
])
def test_selections(tokenizer, selection, choices, verbs):
    engine, results = run(tokenizer, selection=selection)
    assert [r.choice for r in results] == choices and engine.verbs() == verbs
    assert all(r.selection == selection for r in results)


def test_macro_mode_is_one_pass(tokenizer):
    engine, results = run(tokenizer, mode="macro")
    assert engine.verbs() == [("generate", 5)] and [r.group for r in engine.calls[0][1]] == [0, 1, 2, 3, 4]
    assert [(r.answer, r.choice, r.mode) for r in results] == [
        ("stop", "macro_only", "macro"), ("red", "macro_only", "macro"), ("nike", "macro_only", "macro"),
        ("", "macro_only", "macro"), ("a man", "macro_only", "macro")]
    assert all(r.box_text is None and r.micro_raw is None for r in results)


def test_a_nan_loss_is_a_scoring_failure_not_a_missing_micro_pass(tokenizer):
    _, results = run(tokenizer, losses={"stop": float("nan"), "exit": 1.0})
    bad = results[0]
    assert (bad.choice, bad.answer, bad.fallback) == (SCORING_FAILED, "stop", None)
    assert bad.error == "choose: candidate loss is NaN: [nan, 1.0]"
    assert bad.micro_raw == "exit" and bad.candidates == ["stop", "exit"] and math.isnan(bad.losses[0])
    assert [r.choice for r in results[1:]] == ["agree", "no_micro: pixel_units", "macro_invalid", "no_micro: no_box"]


def test_a_candidate_that_cannot_be_scored_keeps_the_macro_answer(tokenizer, monkeypatch):
    real = pipeline.scoring_example
    script = {**SCRIPT, "what is in the box": ("pen", GOOD_BOX, "pencil")}

    def failing(protocol, q, box_text, candidate, *args):
        if candidate == "pencil":
            raise LabelMaskingError("tokenization mismatch (test)")
        return real(protocol, q, box_text, candidate, *args)

    monkeypatch.setattr(pipeline, "scoring_example", failing)
    engine, results = run(tokenizer, script=script, questions=["what is in the box", "what is on the sign"])
    bad, good = results
    assert (bad.choice, bad.answer, bad.fallback, bad.micro_raw) == (SCORING_FAILED, "pen", None, "pencil")
    assert bad.error == "scoring: tokenization mismatch (test)" and bad.candidates is None and bad.losses is None
    assert good.choice == "scored_micro" and good.losses == [2.0, 1.0]
    assert engine.verbs()[-1] == ("loglikelihood", 2)  # only the good question's candidates


def test_an_image_marker_in_the_box_text_is_a_fallback(tokenizer):
    script = {"what is on the sign": ("stop", GOOD_BOX + " <image>", "exit")}
    engine, [res] = run(tokenizer, script=script, questions=list(script))
    assert (res.fallback, res.choice, res.box) == ("image_token_in_box_text", "no_micro: image_token_in_box_text", None)
    assert engine.verbs() == [("generate", 2)]


def test_forced_outputs_are_the_answer_tokens(tokenizer):
    forced = (("macro", "stop"), ("box", GOOD_BOX), ("micro", "exit"))
    engine = FakeEngine(tokenizer, by_pass(SCRIPT))
    df = DualFocus(engine, get_protocol("textvqa"), FocusConfig(forced_outputs=forced))
    for name, text in forced:
        assert df._params[name].forced == (*tokenizer(" " + text, add_special_tokens=False).input_ids,
                                           tokenizer.eos_token_id)
        assert df.chat.answer_text(df._params[name].forced) == text
