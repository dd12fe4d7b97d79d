"""dualfocus.focus.scoring (candidate loss, the "PPL selection"): what each rule labels, per benchmark, with the tiny tokenizer."""

import pytest

from dualfocus.benchmarks import get_protocol
from dualfocus.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from dualfocus.conversation import conv_templates
from dualfocus.focus.scoring import ScoringError, original_scoring_prompt, scoring_example
from dualfocus.mm_utils import tokenizer_image_token
from dualfocus.model.tokenizer import load_tokenizer

BOX = "[0.1, 0.2, 0.3, 0.4]"
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
BOX_TURN = "<image>\nPlease provide the bounding box coordinate of the region this question asks: "
COMBINE = "<image>\nPlease combine the information from these two images and answer this question:"

RECORDS = {
    "seed": {
        "question_id": "s1",
        "image": "a.png",
        "text": "What colour is the car?\nA. red\nB. green\nC. blue\nD. yellow\n"
        "Answer with the option's letter from the given choices directly.",
    },
    "gqa": {"question_id": "g1", "image": "a.jpg", "question": "What colour is the car?\nA. red\nB. green"},
    "textvqa": {
        "question_id": 9,
        "image": "a.jpg",
        "text": "what is the brand?\nReference OCR token: dakota\nAnswer the question using a single word or phrase.",
    },
    "mmbench": {
        "index": 3,
        "question": "What colour is the car?",
        "hint": float("nan"),
        "A": "red",
        "B": "green",
        "C": float("nan"),
        "D": float("nan"),
        "image": "aGVsbG8=",
    },
}

# The human turn the original scores under (its template prefix cut at the first "<image>").
ORIGINAL_HUMAN = {
    "seed": BOX_TURN
    + "What colour is the car? ASSISTANT: "
    + BOX
    + "</s>USER: "
    + COMBINE
    + " What colour is the car?\nAnswer the question using a single word or phrase ",
    "gqa": BOX_TURN + "What colour is the car? ASSISTANT: " + BOX + "</s>USER: "
    "<image>\nWhat colour is the car?\nAnswer the question using a single word or phrase. ",
    "textvqa": BOX_TURN
    + "what is the brand? ASSISTANT: "
    + BOX
    + "</s>USER: "
    + COMBINE
    + "what is the brand?\nAnswer the question using a single word or phrase ",
    "mmbench": BOX_TURN
    + "What colour is the car? ASSISTANT: "
    + BOX
    + "</s>USER: "
    + COMBINE
    + " What colour is the car? Answer the question using a single word or phrase. ASSISTANT:",
}
CANDIDATE = {"seed": "red", "gqa": "red", "textvqa": "Dakota Digital", "mmbench": "red"}
# What the original labels: the box answer and "</s>", then the candidate (for MMBench after a
# second "ASSISTANT:") and "</s>". Decoded as transformers 4.31 decodes, which puts a space before
# the text ahead of the first special token.
ORIGINAL_LABELLED_TEXT = {
    "seed": " " + BOX + "</s> red</s>",
    "gqa": " " + BOX + "</s> red</s>",
    "textvqa": " " + BOX + "</s> Dakota Digital</s>",
    "mmbench": " " + BOX + "</s> ASSISTANT: red</s>",
}


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return load_tokenizer(tiny_tokenizer_dir)


def _body(tok, text):
    """Token ids of ``text`` as it follows a space in a conversation (its own BOS dropped)."""
    return tok(text).input_ids[1:]


def _query(name):
    protocol = get_protocol(name)
    return protocol, protocol.from_record(RECORDS[name])


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_original_scoring_prompt(name):
    protocol, q = _query(name)
    assert original_scoring_prompt(protocol, q, BOX) == ORIGINAL_HUMAN[name]


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_original_rule_labels(tok, name):
    protocol, q = _query(name)
    candidate = CANDIDATE[name]
    input_ids, labels = scoring_example(protocol, q, BOX, candidate, tok, "vicuna_v1", "original")
    assert input_ids.dtype == labels.dtype and input_ids.shape == labels.shape and input_ids.ndim == 1

    # The whole sequence: the default template around ONE human turn holding the scoring conversation.
    conversation = SYSTEM + " USER: " + ORIGINAL_HUMAN[name] + " ASSISTANT: " + candidate + "</s>"
    assert input_ids.tolist() == tokenizer_image_token(conversation, tok)
    assert input_ids.tolist().count(IMAGE_TOKEN_INDEX) == 2

    labelled = [t for t in labels.tolist() if t != IGNORE_INDEX]
    second = ("ASSISTANT: " + candidate) if name == "mmbench" else candidate
    expected = _body(tok, BOX) + [tok.eos_token_id] + _body(tok, second) + [tok.eos_token_id]
    assert labelled == expected
    assert len(labelled) == len(_body(tok, BOX)) + len(_body(tok, second)) + 2
    assert tok.decode(labelled) == ORIGINAL_LABELLED_TEXT[name]
    # Labels are the input ids where not ignored, and ignored at the images.
    for i, t in zip(input_ids.tolist(), labels.tolist()):
        assert t in (IGNORE_INDEX, i)
        if i == IMAGE_TOKEN_INDEX:
            assert t == IGNORE_INDEX


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_candidate_rule_labels_only_the_candidate(tok, name):
    protocol, q = _query(name)
    candidate = CANDIDATE[name]
    input_ids, labels = scoring_example(protocol, q, BOX, candidate, tok, "vicuna_v1", "candidate")

    conv = conv_templates["vicuna_v1"].copy()
    for role, text in protocol.micro_messages(q, BOX):
        conv.append_message(conv.roles[role], text)
    conv.append_message(conv.roles[1], candidate)
    assert conv.get_prompt().endswith(" ASSISTANT: " + candidate + "</s>")
    assert input_ids.tolist() == tokenizer_image_token(conv.get_prompt(), tok)
    assert input_ids.tolist().count(IMAGE_TOKEN_INDEX) == 2

    labelled = [t for t in labels.tolist() if t != IGNORE_INDEX]
    assert labelled == _body(tok, candidate) + [tok.eos_token_id]
    assert tok.decode(labelled) == " " + candidate + "</s>"  # 4.31 decodes a space before "</s>"-led text
    n = len(labelled)
    assert labels[-n:].tolist() == input_ids[-n:].tolist()  # the labelled tokens are the last ones
    assert (labels[:-n] == IGNORE_INDEX).all()


def test_candidate_rule_with_another_template(tok):
    protocol, q = _query("seed")
    input_ids, labels = scoring_example(protocol, q, BOX, "red", tok, "llava_llama_2", "candidate")
    labelled = [t for t in labels.tolist() if t != IGNORE_INDEX]
    assert labelled[: len(_body(tok, "red"))] == _body(tok, "red")
    assert labelled[-1] == tok.eos_token_id
    assert input_ids.tolist().count(IMAGE_TOKEN_INDEX) == 2


def test_the_two_candidates_share_everything_but_their_answer(tok):
    protocol, q = _query("seed")
    a_ids, a_labels = scoring_example(protocol, q, BOX, "red", tok)
    b_ids, b_labels = scoring_example(protocol, q, BOX, "blue", tok)
    prefix = len(a_ids) - len(_body(tok, "red")) - 1
    assert a_ids[:prefix].tolist() == b_ids[:prefix].tolist()
    assert a_labels[:prefix].tolist() == b_labels[:prefix].tolist()


def test_scoring_refuses_what_it_cannot_score(tok):
    protocol, q = _query("seed")
    with pytest.raises(ScoringError):
        scoring_example(protocol, q, BOX, "", tok)
    for selection in ("macro", "micro", "oracle"):
        with pytest.raises(ValueError, match="does not score"):
            scoring_example(protocol, q, BOX, "red", tok, selection=selection)
    with pytest.raises(ValueError, match="unknown conv_mode"):
        scoring_example(protocol, q, BOX, "red", tok, conv_mode="nope")


def test_original_scoring_with_an_unk_after_a_special_token_is_a_named_masking_error(tmp_path):
    """legacy: false on a vocabulary without the stripped piece: "</s>USER" -> <unk> = pad. The release's
    preprocess then masks every label (NaN loss, argmin -> the macro answer); ours raises, and the
    pipeline keeps the macro answer with the reason (docs/protocol.md, difference 16)."""
    from dualfocus.benchmarks import get_protocol
    from dualfocus.focus.scoring import scoring_example
    from dualfocus.preprocess import LabelMaskingError
    from dualfocus.tiny.tokenizer import train_llama_tokenizer, write_tokenizer_configs

    tok = load_tokenizer(write_tokenizer_configs(train_llama_tokenizer(tmp_path / "t", legacy=True), legacy=False))
    proto = get_protocol("seed")
    q = proto.from_record({"question_id": 1, "image": "x", "text": "Colour?\nA. red\nB. blue"})
    with pytest.raises(LabelMaskingError, match="tokenization mismatch"):
        scoring_example(proto, q, "[0.1, 0.2, 0.3, 0.4]", "A", tok, selection="original")
