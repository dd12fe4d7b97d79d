"""Drafted decoding emits exactly what plain decoding emits, in fewer forwards when the draft is right.

`BoxDrafter` (focus.drafts) on the tokenizer's ids; the fast engine with drafts that are right,
partly wrong, always wrong, too long or holding EOS, against the reference engine (which ignores
drafts) on tiny random fp32 models: the same tokens, and continuations / scores of a drafted
generation equal the reference's (rejected columns are seen by no one).
"""

from __future__ import annotations

import pytest
import test_engine
from test_engine import IMAGES, TOL, chat, gen, greedy, mixed_requests

from dualfocus.engine.base import SamplingParams, ScoringRequest
from dualfocus.focus.drafts import SAMPLE, BoxDrafter
from dualfocus.focus.text import Chat
from dualfocus.model.tokenizer import load_tokenizer

engines = test_engine.engines  # the same (fast, reference) pairs on the two tiny shapes


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return load_tokenizer(tiny_tokenizer_dir)


def pieces(tok, ids):
    return tok.convert_ids_to_tokens(list(ids))


def test_the_box_drafter_drafts_the_format_after_the_models_digits(tok):
    drafter = BoxDrafter.from_tokenizer(tok)
    ids = list(Chat(tok).answer_ids(SAMPLE))  # ▁ ▁[ 0 . 1 2 , ▁ 0 . 3 4 , ... 7 8 ] </s>
    drafts = {n: pieces(tok, drafter(ids[:n])) for n in range(1, len(ids))}
    assert drafts[1] == ["▁[", "0", "."]
    assert drafts[2] == ["0", "."]  # after "▁["
    assert drafts[3] == drafts[4] == drafts[5] == []  # "0" (the model's), "." and the first digit
    assert drafts[6] == [",", "▁", "0", "."]  # after "0.12"
    assert drafts[7] == ["▁", "0", "."] and drafts[8] == ["0", "."]
    assert drafts[24] == ["]"]  # after the 4th number; EOS is the model's to say
    assert drafts[25] == []


def test_the_box_drafter_drafts_nothing_off_the_format(tok):
    drafter = BoxDrafter.from_tokenizer(tok)
    chat = Chat(tok)
    assert drafter(chat.answer_ids("[0.123")[:-1]) == ()  # a third digit: no comma drafted
    assert drafter(chat.answer_ids("[0.12, 0.34, 0.56, 0.78, 0.9")[:-1]) == ()  # a fifth number
    assert drafter(chat.answer_ids("A. red")[:-1]) == ()
    assert pieces(tok, drafter(chat.answer_ids("[0.1, 0.34")[:-1])) == [",", "▁", "0", "."]  # found again


class Oracle:
    """Drafts the true continuation `truth`, `length` tokens at a time, with every `wrong`-th drafted
    token replaced (0: never); counts its calls."""

    def __init__(self, truth, length: int = 6, wrong: int = 0, vocab: int = 1000):
        self.truth, self.length, self.wrong, self.vocab, self.calls = list(truth), length, wrong, vocab, 0

    def __call__(self, ids):
        self.calls += 1
        assert list(ids) == self.truth[: len(ids)], "a draft is asked only after the model's own tokens"
        draft = self.truth[len(ids) : len(ids) + self.length] + [2, 2]  # past the end: EOS, cut by the engine
        if self.wrong:
            draft = [(t + 1) % self.vocab if (len(ids) + k) % self.wrong == 0 else t for k, t in enumerate(draft)]
        return draft


@pytest.mark.parametrize("length, wrong", [(6, 0), (3, 2), (40, 5), (2, 1)])
def test_drafted_greedy_equals_plain_greedy(engines, length, wrong):
    fast, ref = engines
    plain = mixed_requests(fast.tokenizer)
    want = ref.generate(plain)
    drafted = mixed_requests(fast.tokenizer)
    for req, w in zip(drafted, want):
        req.draft = Oracle(w.token_ids, length, wrong)
    got = fast.generate(drafted)
    assert [g.token_ids for g in got] == [w.token_ids for w in want]
    forwards = [g.forwards for g in got]
    if wrong == 1:  # every drafted token wrong: one forward per token, as plain decoding
        assert forwards == [len(w.token_ids) for w in want]
    elif wrong == 0:  # right drafts of 6: a forward per 7 tokens, after the prompt's
        assert forwards == [1 + -(-(len(w.token_ids) - 1) // (length + 1)) for w in want]
    else:
        assert sum(forwards) < sum(len(w.token_ids) for w in want)
    assert all(isinstance(r.draft, Oracle) and r.draft.calls > 0 for r, w in zip(drafted, want)
               if len(w.token_ids) > 1)


def test_sampling_ignores_the_draft(engines):
    fast, _ = engines
    tok = fast.tokenizer
    params = SamplingParams(max_new_tokens=12, temperature=0.9, seed=3)
    plain = fast.generate([gen(tok, chat("<image>\nWhat is it?"), [IMAGES["a"]], params)])[0]
    req = gen(tok, chat("<image>\nWhat is it?"), [IMAGES["a"]], params)
    req.draft = Oracle(plain.token_ids)
    drafted = fast.generate([req])[0]
    assert drafted.token_ids == plain.token_ids and drafted.forwards == len(plain.token_ids)
    assert req.draft.calls == 0


def test_forced_outputs_accept_the_drafts_that_match(engines):
    fast, ref = engines
    tok = fast.tokenizer
    forced = tuple(Chat(tok).answer_ids(SAMPLE))  # 26 tokens
    req = gen(tok, chat("<image>\nWhere is it?"), [IMAGES["b"]], SamplingParams(forced=forced))
    req.draft = BoxDrafter.from_tokenizer(tok)
    got = fast.generate([req])[0]
    assert got.token_ids == list(forced) == ref.generate([req])[0].token_ids
    # prompt; "▁" + ▁[ 0 .; then two forwards per number (its 2nd digit brings ", ▁ 0 ." or "]"); EOS
    assert got.forwards == 10 and len(forced) == 26


def continue_and_score_a_drafted_box(fast, ref, draft_length: int):
    """A box pass drafted by an `Oracle` (3 wrong tokens in), then a continuation and a score of it,
    each equal to the reference's; returns (box generation, reference box)."""
    tok = fast.tokenizer
    prompt = chat("<image>\nPlease provide the bounding box coordinate of the region this question asks: "
                  "What is the man holding?")
    first = ref.generate([gen(tok, prompt, [IMAGES["a"]], greedy(20))])[0]
    req = gen(tok, prompt, [IMAGES["a"]], greedy(20), expect_turns=1)
    req.draft = Oracle(first.token_ids, length=draft_length, wrong=3)
    box = fast.generate([req])[0]
    assert box.token_ids == first.token_ids
    answer = Chat(tok).answer_text(first.token_ids)
    follow = chat("<image>\nPlease provide the bounding box coordinate of the region this question asks: "
                  "What is the man holding?", answer, "<image>\nWhat is the man holding?")
    images = [IMAGES["a"], IMAGES["c"]]
    cont = gen(tok, follow, images, greedy(9), parent=box.handle)
    got = fast.generate([cont])[0]
    assert got.token_ids == ref.generate([gen(tok, follow, images, greedy(9))])[0].token_ids
    ids = cont.token_ids + got.token_ids
    labels = [-100] * len(cont.token_ids) + got.token_ids
    scored = fast.loglikelihood([ScoringRequest(ids, labels, images, parent=got.handle)])[0]
    assert scored.loss == pytest.approx(ref.loglikelihood([ScoringRequest(ids, labels, images)])[0].loss, abs=TOL)
    return box, first


def test_continuing_and_scoring_a_drafted_generation_equals_the_reference(engines):
    """A drafted pass leaves rejected columns in the cache: a continuation and a score of it must
    not see them."""
    box, first = continue_and_score_a_drafted_box(*engines, draft_length=5)
    assert box.forwards < len(first.token_ids)
