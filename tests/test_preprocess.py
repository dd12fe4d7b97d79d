"""LLaVA's label masking: which positions are labelled, for v1, llama_2 and plain, and the mismatch error."""

import copy

import pytest

from dualfocus.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from dualfocus.conversation import conv_templates
from dualfocus.mm_utils import tokenizer_image_token
from dualfocus.model.tokenizer import load_tokenizer
from dualfocus.preprocess import LabelMaskingError, preprocess

EOS = 2
Q1 = "<image>\nWhat is the colour of the car? Please provide the bounding box coordinate of the region this question asks about."
A1 = "[0.12, 0.34, 0.56, 0.78]"
Q2 = "<image>\nPlease combine the information from these two images and answer this question."
A2 = "red"
TWO_ROUNDS = [
    {"from": "human", "value": Q1},
    {"from": "gpt", "value": A1},
    {"from": "human", "value": Q2},
    {"from": "gpt", "value": A2},
]


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return load_tokenizer(tiny_tokenizer_dir)


def _labelled(labels):
    return [i for i, x in enumerate(labels.tolist()) if x != IGNORE_INDEX]


def _check_two_rounds(tok, template, instruction_1, instruction_2, answer_texts):
    """instruction_k: the prompt text up to the k-th answer (its separator's trailing space excluded)."""
    sources = [copy.deepcopy(TWO_ROUNDS)]
    out = preprocess(sources, tok, conv_templates[template], has_image=True, record_id="r1")
    assert sources == [TWO_ROUNDS]  # not modified
    ids, labels = out["input_ids"][0], out["labels"][0]
    assert ids.tolist().count(IMAGE_TOKEN_INDEX) == 2 and ids[0].item() == 1

    # The answer starts right after the instruction's last token (its trailing "▁" merges into the
    # answer's first token) and runs to the "</s>" that ends it, which LLaVA labels too.
    start_1 = len(tokenizer_image_token(instruction_1, tok))
    end_1 = ids.tolist().index(EOS) + 1
    start_2 = len(tokenizer_image_token(instruction_2, tok))
    end_2 = len(ids)
    assert ids[end_2 - 1].item() == EOS
    assert _labelled(labels) == list(range(start_1, end_1)) + list(range(start_2, end_2))
    keep = labels != IGNORE_INDEX
    assert (labels[keep] == ids[keep]).all()
    assert tok.convert_ids_to_tokens([ids[start_1].item()]) == ["▁["]
    texts = [tok.decode(ids[a:b].tolist()) for a, b in ((start_1, end_1), (start_2, end_2))]
    assert texts == [" " + t for t in answer_texts]  # 4.31's decode: a space before "</s>"-led text
    return ids, labels


def test_vicuna_v1_two_images_two_rounds(tok):
    system = conv_templates["vicuna_v1"].system
    first = f"{system} USER: {Q1} ASSISTANT:"
    second = f"{first} {A1}</s>USER: {Q2} ASSISTANT:"
    _check_two_rounds(tok, "vicuna_v1", first, second, [A1 + "</s>", A2 + "</s>"])


def test_llava_llama_2_two_images_two_rounds(tok):
    system = conv_templates["llava_llama_2"].system
    first = f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{Q1} [/INST]"
    second = f"{first} {A1} </s><s>[INST] {Q2} [/INST]"
    ids, labels = _check_two_rounds(tok, "llava_llama_2", first, second, [A1 + " </s>", A2 + " </s>"])
    # The "<s>" that opens the second turn is real text in the conversation and stays masked.
    bos_positions = [i for i, x in enumerate(ids.tolist()) if x == 1]
    assert len(bos_positions) == 2 and labels[bos_positions[1]].item() == IGNORE_INDEX


def test_v1_without_images_masks_the_same_way(tok):
    sources = [
        [{"from": "human", "value": "What is the colour of the car?"}, {"from": "gpt", "value": "red"}]
    ]
    out = preprocess(sources, tok, conv_templates["vicuna_v1"], has_image=False)
    ids, labels = out["input_ids"][0], out["labels"][0]
    assert tok.decode(ids[labels != IGNORE_INDEX].tolist()) == " red</s>"
    with_image = preprocess(sources, tok, conv_templates["vicuna_v1"], has_image=True)
    assert with_image["labels"][0].tolist() == labels.tolist()


def test_first_turn_from_gpt_is_skipped(tok):
    sources = [[{"from": "gpt", "value": "ignored"}] + TWO_ROUNDS[:2]]
    out = preprocess(sources, tok, conv_templates["vicuna_v1"])
    assert tok.decode(out["labels"][0][out["labels"][0] != IGNORE_INDEX].tolist()) == " " + A1 + "</s>"


def test_plain_labels_the_caption_and_newline(tok):
    sources = [[{"from": "human", "value": "<image>\nignored text"}, {"from": "gpt", "value": "a red car"}]]
    out = preprocess(copy.deepcopy(sources), tok, conv_templates["plain"])
    ids, labels = out["input_ids"][0], out["labels"][0]
    assert ids[:2].tolist() == [1, IMAGE_TOKEN_INDEX]
    assert ids[2:].tolist() == tok("a red car\n").input_ids[1:]
    assert _labelled(labels) == list(range(2, len(ids)))
    assert tok.decode(ids[2:].tolist()) == "a red car\n"


def test_plain_takes_one_image_and_one_caption(tok):
    with pytest.raises(ValueError, match="conversation 'p9'.*got 4 turns"):
        preprocess([copy.deepcopy(TWO_ROUNDS)], tok, conv_templates["plain"], record_id="p9")


def test_mismatch_raises_with_record_and_lengths(tok):
    """An answer holding "</s>" splits into an extra round, so the rounds no longer add up: LLaVA
    printed a warning and masked everything (tests/test_fidelity.py runs it); we name it."""
    bad = copy.deepcopy(TWO_ROUNDS)
    bad[1]["value"] = A1 + "</s>USER: and?"
    with pytest.raises(
        LabelMaskingError, match=r"conversation 'q-17'.* \d+ tokens .* \d+ tokens"
    ) as info:
        preprocess([bad], tok, conv_templates["vicuna_v1"], record_id="q-17")
    assert isinstance(info.value, ValueError)


def test_mpt_template_with_a_llama_tokenizer_mismatches(tok):
    # LLaVA's MPT masking assumes a tokenizer without BOS; with a Llama one the rounds overcount.
    with pytest.raises(LabelMaskingError, match="tokenization mismatch in conversation 5"):
        preprocess([copy.deepcopy(TWO_ROUNDS)], tok, conv_templates["mpt"], record_id=5)


def test_turns_must_alternate(tok):
    bad = [TWO_ROUNDS[0], TWO_ROUNDS[2]]
    with pytest.raises(ValueError, match="conversation 'x'.*alternate"):
        preprocess([bad], tok, conv_templates["vicuna_v1"], record_id="x")
    with pytest.raises(ValueError, match="unknown speaker"):
        preprocess([[{"from": "system", "value": "hi"}]], tok, conv_templates["vicuna_v1"], record_id="x")
