"""The fast engine computes what the reference engine computes (tiny random fp32 models).

Greedy tokens must be identical and losses equal within 1e-4, for mixed batches (image sizes,
prompt lengths, groups sharing a prefix, 0-2 images, 1-20 new tokens), for continuations of an
earlier generation (`parent`) whatever they share with it, and for scoring with and without a
parent. Hints (`group`, `parent`) never change a result.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from dualfocus.constants import IGNORE_INDEX
from dualfocus.conversation import conv_templates
from dualfocus.engine.base import ContextLengthError, GenerationRequest, SamplingParams, ScoringRequest
from dualfocus.engine.fast import FastEngine
from dualfocus.engine.reference import ReferenceEngine
from dualfocus.focus.text import Chat
from dualfocus.mm_utils import tokenizer_image_token
from dualfocus.model.builder import load_pretrained_model
from dualfocus.tiny.checkpoint import TinySpec, build_tiny_checkpoint

TOL = 1e-4

# Two tiny shapes: LLaVA-1.5's (mlp2x_gelu, patch features: 4 image tokens, GQA 4:2 heads) and
# another (linear projector, CLS kept: 10 image tokens, plain multi-head attention).
SPECS = {
    "mlp2x-4tok": TinySpec(),
    "linear-cls-10tok": TinySpec(image_size=42, projector="linear", select_feature="cls_patch", text_kv_heads=4),
}


@pytest.fixture(scope="module", params=sorted(SPECS))
def engines(request, tmp_path_factory, tiny_tokenizer_dir):
    """(fast, reference) on one tiny random checkpoint, loaded as users load one."""
    path = build_tiny_checkpoint(tmp_path_factory.mktemp(request.param) / "llava", spec=SPECS[request.param],
                                 seed=7, tokenizer_dir=tiny_tokenizer_dir)
    tokenizer, model, image_processor, _ = load_pretrained_model(str(path), None, None, device="cpu")
    return FastEngine(model, tokenizer, image_processor), ReferenceEngine(model, tokenizer, image_processor)


def make_image(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def chat(*turns: str | None) -> str:
    """vicuna_v1 prompt: USER, ASSISTANT, USER, ... turns, then the open assistant turn."""
    conv = conv_templates["vicuna_v1"].copy()
    for k, text in enumerate(turns):
        conv.append_message(conv.roles[k % 2], text)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def greedy(n: int, **kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, **kw)


def gen(tok, prompt: str, images, params: SamplingParams, group=None, parent=None, **hints) -> GenerationRequest:
    """A request for `prompt`'s token ids; the prompt text rides along (`.prompt`) for the tests."""
    req = GenerationRequest(tokenizer_image_token(prompt, tok), images, params, group=group, parent=parent, **hints)
    req.prompt = prompt
    return req


def text(tok, generation) -> str:
    return Chat(tok).answer_text(generation.token_ids)


IMAGES = {name: make_image(i, size) for i, (name, size) in
          enumerate({"a": (30, 20), "b": (64, 64), "c": (17, 50), "d": (100, 33), "e": (28, 28)}.items())}


def mixed_requests(tok) -> list[GenerationRequest]:
    """18 requests: groups of 1-3 sharing a prefix, ungrouped ones, shared PIL images, 0-2 images."""
    a, b, c, d, e = (IMAGES[k] for k in "abcde")
    return [
        gen(tok, chat("<image>\nWhat is the man holding?"), [a], greedy(7), "g1"),
        gen(tok, chat("<image>\nPlease provide the bounding box coordinate of the region this "
                               "question asks: What is the man holding?"), [a], greedy(20), "g1"),
        gen(tok, chat("<image>\nWhat is the man holding?"), [a], greedy(3), "g1"),  # a prefix-twin
        gen(tok, chat("<image>\nHow many people are there?"), [b], greedy(1), "g2"),
        gen(tok, chat("<image>\nIs the sign red or blue?\nA. red\nB. blue"), [b], greedy(12), "g2"),
        gen(tok, chat("<image>\nWhere is the cat sitting?"), [c], greedy(9), "g3"),
        gen(tok, chat("<image>\nDescribe the image in detail."), [d], greedy(16)),
        gen(tok, chat("<image>\nWhat colour is the shirt?"), [a], greedy(5)),  # image shared with g1
        gen(tok, chat("<image>\nWhich side is the dog on?", "left", "<image>\nPlease combine the "
                               "information from these two images and answer this question: Which side?"),
                          [d, e], greedy(11), "g4"),
        gen(tok, chat("<image>\nWhich side is the dog on?"), [d], greedy(4), "g4"),
        gen(tok, chat("What is in the picture?"), [], greedy(6)),  # text only
        gen(tok, "<image>\nred", [e], greedy(2)),  # no template at all
        gen(tok, chat("<image>\n" + "The quick brown fox jumps over the lazy dog! Isn't it? " * 3), [c],
                          greedy(14), "g5"),
        gen(tok, chat("<image>\n" + "The quick brown fox jumps over the lazy dog! Isn't it? " * 3), [c],
                          greedy(14), "g5"),  # an exact duplicate in the same group
        gen(tok, chat("<image>\nA. circle\nB. square\nC. triangle\nD. rectangle"), [b], greedy(8), "g6"),
        gen(tok, chat("<image>\nA. circle\nB. square"), [e], greedy(10), "g6"),  # same text, other image
        gen(tok, chat("<image>\nWhat does the text on the sign say?"), [d], greedy(18)),
        gen(tok, chat("<image>\n<image>\nTwo pictures: the same one?"), [a, a], greedy(13)),
    ]


def test_greedy_batch_matches_reference(engines):
    fast, ref = engines
    tok = fast.tokenizer
    requests = mixed_requests(tok)
    assert len(requests) >= 16
    got, want = fast.generate(requests), ref.generate(requests)
    for k, (g, w, r) in enumerate(zip(got, want, requests)):
        assert g.token_ids == w.token_ids, f"request {k}"
        assert 1 <= len(g.token_ids) <= r.params.max_new_tokens
    assert got[0].token_ids[:3] == got[2].token_ids  # same prompt, fewer tokens
    assert got[12].token_ids == got[13].token_ids
    # one request at a time gives the same as the whole batch: batching is not a hint that changes results
    for k in (1, 8, 10):
        assert fast.generate([requests[k]])[0].token_ids == got[k].token_ids


KEEP_ALL = 10**6  # keep_logprobs: record the log-prob of every prompt token (a later scoring reuses them)


def _continuations(tok, requests, parents):
    """Children of the first generations: replays, a BOS-only relative, a prefix, a repeat, two of one parent."""
    (r0, g0), (r1, g1), (r2, g2) = zip(requests[:3], parents[:3])
    crop = IMAGES["a"].crop((5, 2, 25, 18))
    q0 = r0.prompt.split("USER: ")[1].removesuffix(" ASSISTANT:")
    children = [
        # the micro turn: the generation replayed as text, then a question with the full image and a crop
        (gen(tok, chat(q0, text(tok, g0), "<image>\nPlease combine the information from these two "
                                "images and answer this question: What is he holding?"),
                           [IMAGES["a"], crop], greedy(9), parent=g0.handle, keep_logprobs=KEEP_ALL), 0),
        (gen(tok, chat(q0, text(tok, g0), "<image>\nAnd the colour?"), [IMAGES["a"], IMAGES["e"]],
                           greedy(6), parent=g0.handle), 0),  # a second child of the same parent
        (gen(tok, "<image>\nDescribe it.", [IMAGES["c"]], greedy(7), parent=g1.handle), 1),  # BOS only
        (gen(tok, r1.prompt[: r1.prompt.index("<image>") + 30], [IMAGES["a"]], greedy(5), parent=g1.handle), 1),
        (gen(tok, r2.prompt, r2.images, greedy(8), parent=g2.handle), 2),  # the parent's prompt again
        (gen(tok, chat("<image>\nWhere is the cat sitting?", text(tok, parents[5]), "And the dog?"),
                           [IMAGES["c"]], greedy(12), parent=parents[5].handle), 5),
        (gen(tok, chat("What is in the picture?", text(tok, parents[10]), "<image>\nThis one?"),
                           [IMAGES["b"]], greedy(10), parent=parents[10].handle), 10),  # text-only parent
    ]
    return [c for c, _ in children], [i for _, i in children]


def test_continuation_equals_full_recompute(engines):
    fast, ref = engines
    tok = fast.tokenizer
    requests = mixed_requests(tok)
    parents = fast.generate(requests)
    children, owners = _continuations(tok, requests, parents)
    got = fast.generate(children)
    want = ref.generate(children)
    plain = fast.generate([GenerationRequest(c.token_ids, c.images, c.params) for c in children])
    for k, (g, w, p) in enumerate(zip(got, want, plain)):
        assert g.token_ids == w.token_ids == p.token_ids, f"child {k}"
    # The replays are meaningful: the replayed text does not re-tokenize to the generated ids.
    replays = [(requests[owners[k]], parents[owners[k]], children[k]) for k in (0, 5, 6)]
    diverged = 0
    for r, g, c in replays:
        path = tokenizer_image_token(r.prompt, tok) + g.token_ids
        diverged += tokenizer_image_token(c.prompt, tok)[: len(path)] != path
    assert diverged >= 1
    assert got[4].token_ids[: len(parents[2].token_ids)] == parents[2].token_ids  # the repeat: same start
    # Grandchildren, and parents of different calls in one batch (one shared state).
    grand = [
        gen(tok, chat(children[0].prompt.split("USER: ", 1)[1].split(" ASSISTANT:")[0], text(tok, got[0]),
                               "Sure?"), [IMAGES["a"]], greedy(6), parent=got[0].handle),
        gen(tok, chat("<image>\nHow many people are there?", text(tok, parents[3]), "Really?"), [IMAGES["b"]],
                          greedy(7), parent=parents[3].handle),
    ]
    assert [g.token_ids for g in fast.generate(grand)] == [g.token_ids for g in ref.generate(grand)]


def _scoring_request(tok, prompt: str, answer: str, images, parent=None, label_from: str | None = None):
    """ids of prompt + " answer</s>"; labels from `label_from` (a substring of the prompt) or the answer."""
    full = f"{prompt} {answer}</s>"
    ids = tokenizer_image_token(full, tok)
    start = full.index(label_from) if label_from is not None else len(prompt)
    n_masked = len(tokenizer_image_token(full[:start], tok))
    labels = [IGNORE_INDEX] * n_masked + ids[n_masked:]
    return ScoringRequest(ids, labels, images, parent=parent)


def test_scoring_with_and_without_parent_matches_reference(engines):
    fast, ref = engines
    tok = fast.tokenizer
    requests = mixed_requests(tok)
    parents = fast.generate(requests)
    micro = fast.generate(_continuations(tok, requests, parents)[0][:1])[0]
    a, crop = IMAGES["a"], IMAGES["a"].crop((5, 2, 25, 18))
    micro_prompt = _continuations(tok, requests, parents)[0][0].prompt
    scoring = [
        # candidates continuing the micro pass (two per parent, as the pipeline scores them)
        _scoring_request(tok, micro_prompt, "a red ball", [a, crop], parent=micro.handle),
        _scoring_request(tok, micro_prompt, "blue", [a, crop], parent=micro.handle),
        # labels reaching back into the parent's path: the replayed first answer is labelled too
        _scoring_request(tok, micro_prompt, "blue", [a, crop], parent=micro.handle,
                         label_from=text(tok, parents[0]) or "ASSISTANT"),
        # every text token labelled, BOS excepted
        ScoringRequest(*(lambda ids: (ids, [IGNORE_INDEX] + [t if t >= 0 else IGNORE_INDEX for t in ids[1:]]))(
            tokenizer_image_token(micro_prompt + " yes</s>", tok)), [a, crop], parent=micro.handle),
        # continuing an older call's handle (the box pass) and the text-only generation
        _scoring_request(tok, requests[1].prompt, "[0.1, 0.2, 0.3, 0.4]", [a], parent=parents[1].handle),
        _scoring_request(tok, requests[10].prompt, "a dog", [], parent=parents[10].handle),
        # nothing but BOS in common with its parent
        _scoring_request(tok, "<image>\nWhat is it?", "a cat", [IMAGES["e"]], parent=parents[4].handle),
    ]
    got = fast.loglikelihood(scoring)
    want = ref.loglikelihood(scoring)
    # the same, continuing a micro pass that recorded no prompt log-probs: less reuse, same scores
    bare = _continuations(tok, requests, parents)[0][0]
    bare.keep_logprobs = 0
    bare_micro = fast.generate([bare])[0]
    assert bare_micro.token_ids == micro.token_ids
    rescored = fast.loglikelihood([ScoringRequest(s.input_ids, s.labels, s.images, parent=bare_micro.handle)
                                   for s in scoring[:4]])
    assert [r.loss for r in rescored] == pytest.approx([g.loss for g in got[:4]], abs=TOL)
    plain = fast.loglikelihood([ScoringRequest(s.input_ids, s.labels, s.images) for s in scoring])
    for k, (g, w, p) in enumerate(zip(got, want, plain)):
        assert g.n_tokens == w.n_tokens == p.n_tokens > 0, f"scoring request {k}"
        assert g.loss == pytest.approx(w.loss, abs=TOL), f"scoring request {k}"
        assert p.loss == pytest.approx(w.loss, abs=TOL), f"scoring request {k}"
    assert got[2].n_tokens > got[1].n_tokens
    # Without parents: a batch of different prompts and images, one request twice.
    unparented = [_scoring_request(tok, r.prompt, "red", r.images) for r in requests[:12]] + plain_twice(tok)
    got, want = fast.loglikelihood(unparented), ref.loglikelihood(unparented)
    for k, (g, w) in enumerate(zip(got, want)):
        assert (g.n_tokens, g.loss) == (w.n_tokens, pytest.approx(w.loss, abs=TOL)), f"request {k}"


def plain_twice(tok) -> list[ScoringRequest]:
    req = _scoring_request(tok, chat("<image>\nWhat colour is the car?"), "red", [IMAGES["d"]])
    return [req, ScoringRequest(req.input_ids, req.labels, req.images)]


@pytest.fixture(scope="module")
def eos_engines(tiny_tokenizer_dir, tmp_path_factory):
    """A tiny random model whose lm_head makes EOS the greedy choice by the 4th token of `EOS_PROMPT`."""
    path = build_tiny_checkpoint(tmp_path_factory.mktemp("eos") / "llava", seed=3, tokenizer_dir=tiny_tokenizer_dir)
    tok, model, ip, _ = load_pretrained_model(str(path), None, None, device="cpu")
    ref = ReferenceEngine(model, tok, ip)
    tokens = ref.generate([gen(tok, EOS_PROMPT, [IMAGES["b"]], greedy(3))])[0].token_ids
    with torch.no_grad():
        ids = torch.tensor([tokenizer_image_token(EOS_PROMPT, tok) + tokens])
        embeds = model.prepare_inputs_labels_for_multimodal(ids, None, None, ref.pixel_values([IMAGES["b"]]))[0]
        h = model.model(inputs_embeds=embeds).last_hidden_state[0, -1]  # predicts the 4th new token
        target = model.lm_head(h).max() + 5.0
        model.lm_head.weight[tok.eos_token_id] = h * target / h.dot(h)
    return FastEngine(model, tok, ip), ref


EOS_PROMPT = chat("<image>\nIs the sign red or blue?")


def test_ignore_eos(eos_engines):
    fast, ref = eos_engines
    tok = fast.tokenizer
    eos = fast.eos_token_id
    stop = [gen(tok, EOS_PROMPT, [IMAGES["b"]], greedy(12)) for _ in range(2)]
    forced = [gen(tok, EOS_PROMPT, [IMAGES["b"]], greedy(12, ignore_eos=True))]
    got, want = fast.generate(stop + forced), ref.generate(stop + forced)
    assert [g.token_ids for g in got] == [w.token_ids for w in want]
    short, long = got[0].token_ids, got[2].token_ids
    assert short[-1] == eos and len(short) <= 4
    assert len(long) == 12 and long[: len(short)] == short  # went on past EOS


def test_sampling_with_a_seed_is_reproducible(engines):
    fast, ref = engines
    tok = fast.tokenizer
    requests = [
        gen(tok, r.prompt, r.images, SamplingParams(12, temperature=0.9, top_p=0.9, seed=s), r.group)
        for s, r in enumerate(mixed_requests(tok)[:8])
    ]
    first, second = fast.generate(requests), fast.generate(requests)
    assert [g.token_ids for g in first] == [g.token_ids for g in second]
    assert [g.token_ids for g in ref.generate(requests)] == [g.token_ids for g in first]
    other = [gen(tok, r.prompt, r.images, SamplingParams(12, 0.9, 0.9, seed=100 + k), r.group)
             for k, r in enumerate(requests)]
    assert [g.token_ids for g in fast.generate(other)] != [g.token_ids for g in first]
    greedy_ids = [g.token_ids for g in fast.generate([gen(tok, r.prompt, r.images, greedy(12), r.group)
                                                      for r in requests])]
    assert greedy_ids != [g.token_ids for g in first]


@pytest.mark.parametrize("n_images", [0, 2])
def test_image_count_must_match_the_markers(engines, n_images):
    fast, ref = engines
    tok = fast.tokenizer
    images = [IMAGES["a"]] * n_images
    tok = fast.tokenizer
    request = gen(tok, chat("<image>\nWhat is it?"), images, greedy(2))
    ids = tokenizer_image_token(chat("<image>\nWhat is it?") + " red</s>", fast.tokenizer)
    score = ScoringRequest(ids, ids, images)
    for engine in (fast, ref):
        with pytest.raises(ValueError, match=rf"1 <?image>? ?(markers|tokens) but {n_images} images"):
            engine.generate([request])
        with pytest.raises(ValueError, match=rf"1 <?image>? ?(markers|tokens) but {n_images} images"):
            engine.loglikelihood([score])


@pytest.mark.parametrize("which", [0, 1], ids=["fast", "reference"])
def test_parented_and_unparented_requests_do_not_mix(engines, which):
    """The parent rule is the contract's: both engines refuse, though the reference ignores parents."""
    engine = engines[which]
    tok = engine.tokenizer
    first = engine.generate(mixed_requests(tok)[:2])
    other = engine.generate(mixed_requests(tok)[:1])  # another call: another state
    mixed = [gen(tok, chat("<image>\nOK?"), [IMAGES["a"]], greedy(2), parent=first[0].handle),
             gen(tok, chat("<image>\nOK?"), [IMAGES["a"]], greedy(2))]
    with pytest.raises(ValueError, match="handles"):
        engine.generate(mixed)
    mixed[1].parent = other[0].handle
    with pytest.raises(ValueError, match="handles"):
        engine.generate(mixed)
    ids = tokenizer_image_token(chat("<image>\nOK?") + " yes</s>", tok)
    with pytest.raises(ValueError, match="handles"):
        engine.loglikelihood([ScoringRequest(ids, ids, [IMAGES["a"]], parent=first[0].handle),
                              ScoringRequest(ids, ids, [IMAGES["a"]])])
    mixed[1].parent = first[1].handle  # one call's handles: accepted
    assert [len(g.token_ids) for g in engine.generate(mixed)] == [2, 2]


@pytest.mark.parametrize("which", [0, 1], ids=["fast", "reference"])
def test_scoring_labels_must_be_the_input_ids(engines, which):
    engine = engines[which]
    ids = tokenizer_image_token(chat("<image>\nOK?") + " yes</s>", engine.tokenizer)
    labels = [IGNORE_INDEX] * (len(ids) - 2) + [ids[-2] + 1, ids[-1]]
    with pytest.raises(ValueError, match="labels differ from input_ids"):
        engine.loglikelihood([ScoringRequest(ids, labels, [IMAGES["a"]])])
    with pytest.raises(ValueError, match="differ in length"):
        engine.loglikelihood([ScoringRequest(ids, labels[:-1], [IMAGES["a"]])])


# -- the model's positions -------------------------------------------------------------------------
LIMIT = 64  # max_position_embeddings of the `short` model; its tokenizer_model_max_length is 16


@pytest.fixture(scope="module")
def short(tmp_path_factory, tiny_tokenizer_dir):
    """(fast, reference) on a tiny model of 64 positions whose config also says tokenizer_model_max_length=16."""
    import json

    path = build_tiny_checkpoint(tmp_path_factory.mktemp("short") / "llava", spec=TinySpec(max_position_embeddings=LIMIT),
                                 seed=7, tokenizer_dir=tiny_tokenizer_dir)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "tokenizer_model_max_length": 16}))
    tokenizer, model, image_processor, _ = load_pretrained_model(str(path), None, None, device="cpu")
    return FastEngine(model, tokenizer, image_processor), ReferenceEngine(model, tokenizer, image_processor)


def positions(engine, prompt: str) -> int:
    return len(tokenizer_image_token(prompt, engine.tokenizer)) - 1 + engine.model.num_image_tokens


def fitting_prompt(engine, room: int) -> str:
    """A one-image prompt leaving exactly `room` positions free."""
    words = ["red"]
    while positions(engine, chat("<image>\n" + " ".join(words + ["red"]))) <= LIMIT - room:
        words.append("red")
    prompt = chat("<image>\n" + " ".join(words))
    assert positions(engine, prompt) == LIMIT - room, "the tiny tokenizer gives one token per ' red'"
    return prompt


def test_a_prompt_past_tokenizer_model_max_length_is_not_truncated(short):
    """LLaVA's splice cuts at tokenizer_model_max_length (16 here); the engines do not, and agree."""
    fast, ref = short
    tok = fast.tokenizer
    request = gen(tok, fitting_prompt(fast, 6), [IMAGES["a"]], greedy(6, ignore_eos=True))
    assert positions(fast, request.prompt) > 16
    assert [g.token_ids for g in ref.generate([request])] == [g.token_ids for g in fast.generate([request])]


@pytest.mark.parametrize("verb", ["generate", "loglikelihood"])
def test_both_engines_refuse_past_the_positions_before_any_forward(short, monkeypatch, verb):
    fast, ref = short
    tok = fast.tokenizer
    prompt = fitting_prompt(fast, 6)
    if verb == "generate":  # 58 prompt positions + 7 new tokens: one too many
        requests = [gen(tok, chat("<image>\nOK?"), [IMAGES["b"]], greedy(2)),
                    gen(tok, prompt, [IMAGES["a"]], greedy(7))]
        expected = r"a prompt of 58 positions \(1 image\(s\) of 4 each\) \+ 7 new tokens"
    else:  # 65 positions, nothing generated
        ids = tokenizer_image_token(prompt + " red" * 7, fast.tokenizer)
        requests = [ScoringRequest(ids, ids, [IMAGES["a"]])]
        expected = r"a prompt of 65 positions \(1 image\(s\) of 4 each\) \+ 0 new tokens"
    model = fast.model

    def no_forward(*args, **kwargs):
        raise AssertionError("a forward ran")

    monkeypatch.setattr(model, "image_features", no_forward)
    monkeypatch.setattr(model.model.embed_tokens, "forward", no_forward)
    messages = []
    for engine in (fast, ref):
        with pytest.raises(ContextLengthError) as info:
            getattr(engine, verb)(requests)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert re.fullmatch(expected + r" exceeds the model's 64 positions \(max_position_embeddings\); shorten the "
                                   r"question", messages[0])


def test_a_request_that_exactly_fits_is_answered(short):
    fast, ref = short
    tok = fast.tokenizer
    request = gen(tok, fitting_prompt(fast, 6), [IMAGES["a"]], greedy(6, ignore_eos=True))
    assert len(fast.generate([request])[0].token_ids) == len(ref.generate([request])[0].token_ids) == 6
