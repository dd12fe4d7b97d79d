"""dualfocus.focus.protocols and each benchmark's protocol subclass: pinned prompts per benchmark, answer parsing, and the choice table."""

import dataclasses
import math

import pytest

from dualfocus.benchmarks import BENCHMARK_NAMES, get_protocol
from dualfocus.benchmarks.mmbench import mmbench_rotations
from dualfocus.conversation import conv_templates
from dualfocus.focus.protocols import (
    AGREE,
    BOTH_INVALID,
    BOTH_VALID,
    MACRO_INVALID,
    MACRO_ONLY,
    MICRO_INVALID,
    MICRO_ONLY,
    NO_MICRO,
    SCORED_MACRO,
    SCORED_MICRO,
    TIE_MACRO,
    Decision,
    FocusQuery,
    RecordError,
    pick,
)

PROTOCOL_NAMES = ("seed", "mmbench", "gqa", "textvqa", "vqa")  # the release's protocols, pinned below
BOX = "[0.1, 0.2, 0.3, 0.4]"
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

SEED_RECORD = {
    "question_id": "101",
    "image": "SEED-Bench-image/0001.png",
    "text": "How many cats are there?\nA. One\nB. Two\nC. Three\nD. Four\n"
    "Answer with the option's letter from the given choices directly.",
}
GQA_RECORD = {
    "question_id": "20240871",
    "image": "n161313.jpg",
    "question": "Is the sky blue or gray?\nA. blue\nB. gray\nC. white\nD. black",
}
TEXTVQA_RECORD = {
    "question_id": 34602,
    "image": "003a8ae2ef43b901.jpg",
    "text": "what is the brand of this camera?\nReference OCR token: dakota, digital, Single-Use, Camera\n"
    "Answer the question using a single word or phrase.",
}
VQA_RECORD = {
    "question_id": 7,
    "image": "x.jpg",
    "text": "What is unusual about this image?\nAnswer the question using a single word or phrase.",
}
MMBENCH_RECORD = {
    "index": 241,
    "question": "Which animal is on the left?",
    "hint": "The picture shows a farm.",
    "A": "cat",
    "B": "dog",
    "C": "cow",
    "D": float("nan"),
    "image": "aGVsbG8=",
    "answer": "B",
    "category": "spatial",
}
MMBENCH_NO_HINT = {**MMBENCH_RECORD, "hint": float("nan")}

# Expected user messages: (macro, box, micro box turn, micro, score), literal.
EXPECTED = {
    "seed": (
        SEED_RECORD,
        "<image>\nHow many cats are there?\nA. One\nB. Two\nC. Three\nD. Four\n"
        "Answer with the option's letter from the given choices directly.",
        "<image>\nPlease provide the bounding box coordinate of the region this question asks: How many cats are there?",
        "<image>\nPlease provide the bounding box coordinate of the region this question asks: How many cats are there?",
        "<image>\nPlease combine the information from these two images and answer this question: How many cats are there?"
        "\nA. One\nB. Two\nC. Three\nD. Four\nAnswer with the option's letter from the given choices directly.",
        "<image>\nPlease combine the information from these two images and answer this question: How many cats are there?"
        "\nAnswer the question using a single word or phrase",
    ),
    "gqa": (
        GQA_RECORD,
        "<image>\nIs the sky blue or gray?\nA. blue\nB. gray\nC. white\nD. black\n"
        "Answer with the option's letter from the given choices directly.",
        "<image>\nPlease provide the bounding box coordinate of the region this question asks: Is the sky blue or gray?",
        "<image>\nPlease provide the bounding box coordinate of the region this question asks: Is the sky blue or gray?",
        "<image>\nPlease combine the information from these two images and answer this question: Is the sky blue or gray?"
        "\nA. blue\nB. gray\nC. white\nD. black\nAnswer with the option's letter from the given choices directly.",
        "<image>\nIs the sky blue or gray?\nAnswer the question using a single word or phrase.",
    ),
    "textvqa": (
        TEXTVQA_RECORD,
        "<image>\nwhat is the brand of this camera?\nReference OCR token: dakota, digital, Single-Use, Camera\n"
        "Answer the question using a single word or phrase.",
        "<image>\nPlease provide the bounding box coordinate of the region this question asks: "
        "what is the brand of this camera?",
        "<image>\nPlease provide the bounding box coordinate of the region this question asks: "
        "what is the brand of this camera?",
        "<image>\nPlease combine the information from these two images and answer this question: "
        "what is the brand of this camera?\nReference OCR token: dakota, digital, Single-Use, Camera\n"
        "Answer the question using a single word or phrase.",
        "<image>\nPlease combine the information from these two images and answer this question:"
        "what is the brand of this camera?\nAnswer the question using a single word or phrase",
    ),
    "vqa": (
        VQA_RECORD,
        "<image>\nWhat is unusual about this image?\nAnswer the question using a single word or phrase.",
        "<image>\nPlease provide the bounding box coordinate of the region this question asks: "
        "What is unusual about this image?",
        "<image>\nPlease provide the bounding box coordinate of the region this question asks: "
        "What is unusual about this image?",
        "<image>\nPlease combine the information from these two images and answer this question: "
        "What is unusual about this image?\nAnswer the question using a single word or phrase.",
        "<image>\nPlease combine the information from these two images and answer this question: "
        "What is unusual about this image?\nAnswer the question using a single word or phrase.",
    ),
    "mmbench": (
        MMBENCH_RECORD,
        "<image>\nThe picture shows a farm.\nWhich animal is on the left?\nA. cat\nB. dog\nC. cow\n"
        "Answer with the option's letter from the given choices directly.",
        "<image>\nThe picture shows a farm.\nWhich animal is on the left?\n"
        "Please provide the bounding box coordinate of the region this question asks.",
        "<image>\nThe picture shows a farm.\n"
        "Please provide the bounding box coordinate of the region this question asks: Which animal is on the left?",
        "<image>\nPlease combine the information from these two images and answer this question: "
        "The picture shows a farm.\nWhich animal is on the left?\nA. cat\nB. dog\nC. cow\n"
        "Answer with the option's letter from the given choices directly.",
        "<image>\nPlease combine the information from these two images and answer this question: "
        "The picture shows a farm.\nWhich animal is on the left? Answer the question using a single word or phrase.",
    ),
    "mmbench_no_hint": (
        MMBENCH_NO_HINT,
        "<image>\nWhich animal is on the left?\nA. cat\nB. dog\nC. cow\n"
        "Answer with the option's letter from the given choices directly.",
        "<image>\nWhich animal is on the left?\n"
        "Please provide the bounding box coordinate of the region this question asks.",
        # The original printed "<image>\nnan\nPlease provide ..." here.
        "<image>\nPlease provide the bounding box coordinate of the region this question asks: "
        "Which animal is on the left?",
        "<image>\nPlease combine the information from these two images and answer this question: "
        "Which animal is on the left?\nA. cat\nB. dog\nC. cow\n"
        "Answer with the option's letter from the given choices directly.",
        "<image>\nPlease combine the information from these two images and answer this question: "
        "Which animal is on the left? Answer the question using a single word or phrase.",
    ),
}


def _protocol_and_query(case):
    name = "mmbench" if case.startswith("mmbench") else case
    protocol = get_protocol(name)
    return protocol, protocol.from_record(EXPECTED[case][0])


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_prompts_snapshot(case):
    protocol, q = _protocol_and_query(case)
    _, macro, box, micro_box, micro, score = EXPECTED[case]
    assert protocol.macro_prompt(q) == macro
    assert protocol.box_prompt(q) == box
    assert protocol.micro_box_prompt(q) == micro_box
    assert protocol.micro_prompt(q) == micro
    assert protocol.score_prompt(q) == score
    assert protocol.micro_messages(q, BOX) == ((0, micro_box), (1, BOX), (0, micro))
    assert "nan" not in macro + box + micro_box + micro + score


def test_seed_micro_conversation_snapshot():
    protocol = get_protocol("seed")
    q = protocol.from_record(SEED_RECORD)
    conv = conv_templates["vicuna_v1"].copy()
    for role, text in protocol.micro_messages(q, BOX):
        conv.append_message(conv.roles[role], text)
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == (
        SYSTEM
        + " USER: <image>\nPlease provide the bounding box coordinate of the region this question asks: "
        "How many cats are there? ASSISTANT: [0.1, 0.2, 0.3, 0.4]</s>USER: <image>\nPlease combine the "
        "information from these two images and answer this question: How many cats are there?\nA. One\nB. Two\n"
        "C. Three\nD. Four\nAnswer with the option's letter from the given choices directly. ASSISTANT:"
    )


def test_score_messages_open_turn_only_for_mmbench():
    for name in PROTOCOL_NAMES:
        protocol = get_protocol(name)
        record = MMBENCH_RECORD if name == "mmbench" else EXPECTED[name][0]
        q = protocol.from_record(record)
        messages = protocol.score_messages(q, BOX)
        assert messages[:3] == ((0, protocol.micro_box_prompt(q)), (1, BOX), (0, protocol.score_prompt(q)))
        assert messages[3:] == (((1, None),) if name == "mmbench" else ())


# -- records ----------------------------------------------------------------------------------------


def test_seed_record_fields():
    q = get_protocol("seed").from_record(SEED_RECORD)
    assert q.question_id == "101"
    assert q.question == "How many cats are there?"
    assert q.options == ("A. One", "B. Two", "C. Three", "D. Four")
    assert q.option_texts == ("One", "Two", "Three", "Four")
    assert q.letters == ("A", "B", "C", "D")
    assert q.instruction == "Answer with the option's letter from the given choices directly."
    assert q.prompt == SEED_RECORD["text"]
    assert q.image == "SEED-Bench-image/0001.png" and not q.image_base64
    assert q.hint is None


def test_seed_record_without_instruction_keeps_its_last_option():
    # The original's lines[1:-1] would have dropped "D. Four".
    q = get_protocol("seed").from_record(
        {**SEED_RECORD, "text": "How many?\nA. One\nB. Two\nC. Three\nD. Four"}
    )
    assert q.option_texts == ("One", "Two", "Three", "Four")
    assert q.instruction is None


def test_gqa_record_fields_and_final_text():
    protocol = get_protocol("gqa")
    q = protocol.from_record(GQA_RECORD)
    assert q.question == "Is the sky blue or gray?"
    assert q.prompt == "Is the sky blue or gray?"
    assert q.option_texts == ("blue", "gray", "white", "black")
    assert protocol.final_text("B", q) == "gray"
    assert protocol.final_text("purple", q) == "purple"
    # A LLaVA-style "text" key that already ends with the instruction reads the same.
    q2 = protocol.from_record({"question_id": "1", "image": "a.jpg", "text": q.text})
    assert (q2.question, q2.options, q2.text) == (q.question, q.options, q.text)


def test_mmbench_record_fields():
    q = get_protocol("mmbench").from_record(MMBENCH_RECORD)
    assert q.question_id == 241
    assert q.question == "Which animal is on the left?"
    assert q.hint == "The picture shows a farm."
    assert q.options == ("A. cat", "B. dog", "C. cow")  # stops at the empty D
    assert q.prompt == "Which animal is on the left?"
    assert q.image_base64 and q.image == "aGVsbG8="
    assert q.extra["answer"] == "B" and q.extra["category"] == "spatial"
    assert q.extra["round_id"] == 0
    assert q.extra["options"] == ["cat", "dog", "cow"] and q.extra["option_char"] == ["A", "B", "C"]


@pytest.mark.parametrize("hint", [None, float("nan"), "nan", "NaN", "none"])
def test_mmbench_empty_hints_are_dropped(hint):
    q = get_protocol("mmbench").from_record({**MMBENCH_RECORD, "hint": hint})
    assert q.hint is None


def test_mmbench_whitespace_cells_are_kept_as_the_release_keeps_them():
    """LLaVA's is_none keeps " " and "": a hint line of its own, and an option that counts (docs/protocol.md)."""
    q = get_protocol("mmbench").from_record({**MMBENCH_RECORD, "hint": " ", "D": " "})
    assert q.hint == " "
    assert q.options[-1] == "D.  " and q.letters[-1] == "D"


def test_mmbench_flags():
    q = get_protocol("mmbench", single_pred_prompt=False).from_record(MMBENCH_RECORD)
    assert q.instruction is None
    assert q.text == "The picture shows a farm.\nWhich animal is on the left?\nA. cat\nB. dog\nC. cow"
    q = get_protocol("mmbench", lang="cn").from_record(MMBENCH_RECORD)
    assert q.text.endswith("\nC. cow\n请直接回答选项字母。")
    with pytest.raises(ValueError):
        get_protocol("mmbench", lang="fr")


def test_mmbench_numeric_options_become_text():
    q = get_protocol("mmbench").from_record({**MMBENCH_RECORD, "A": 3, "B": 4.5, "C": "7"})
    assert q.options == ("A. 3", "B. 4.5", "C. 7")


def test_textvqa_and_vqa_records():
    q = get_protocol("textvqa").from_record(TEXTVQA_RECORD)
    assert q.question == "what is the brand of this camera?"
    assert q.options == () and q.letters == ()
    v = get_protocol("vqa").from_record(
        {"question_id": 1, "image": "a.jpg", "text": "Describe the image.\nBe brief."}
    )
    assert v.question == "Describe the image.\nBe brief."  # a multi-line question stays whole
    assert v.instruction is None


@pytest.mark.parametrize(
    "name, record",
    [
        ("seed", {"question_id": 1, "image": "a.jpg"}),  # no text
        (
            "seed",
            {"question_id": 1, "text": "Q?\nA. x\nC. y\nAnswer with the option's letter."},
        ),  # letters skip
        (
            "seed",
            {
                "question_id": 1,
                "text": "Q?\nAnswer with the option's letter from the given choices directly.",
            },
        ),
        ("seed", {"question_id": 1, "text": "<image>\nQ?\nA. x\nB. y"}),
        ("gqa", {"question_id": 1, "image": "a.jpg"}),
        ("mmbench", {"question": "Q?", "A": "x"}),  # no index
        ("mmbench", {"index": 1, "question": "Q?", "A": float("nan")}),  # no options
        ("vqa", {"question_id": 1, "text": "\nAnswer the question using a single word or phrase."}),
    ],
)
def test_bad_records_raise_record_error(name, record):
    with pytest.raises(RecordError):
        get_protocol(name).from_record(record)


def test_focus_query_is_frozen_and_hashable():
    q = get_protocol("mmbench").from_record(MMBENCH_RECORD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.question = "x"
    assert hash(q) == hash(get_protocol("mmbench").from_record(MMBENCH_RECORD))


def test_registry():
    assert BENCHMARK_NAMES[:5] == PROTOCOL_NAMES  # the release's, first; a new benchmark module adds its name
    for name in BENCHMARK_NAMES:
        assert get_protocol(name).name == name
    with pytest.raises(ValueError, match="unknown benchmark"):
        get_protocol("pope")


# -- mmbench rotations ------------------------------------------------------------------------------


def test_mmbench_rotations_like_llava_all_rounds():
    rows = mmbench_rotations(MMBENCH_RECORD)
    assert [r["index"] for r in rows] == [241, 241, 241]  # LLaVA keeps the index; round_id tells rounds apart
    assert [r["round_id"] for r in rows] == [0, 1, 2]
    assert [(r["A"], r["B"], r["C"]) for r in rows] == [
        ("cat", "dog", "cow"),
        ("dog", "cow", "cat"),
        ("cow", "cat", "dog"),
    ]
    assert [r["answer"] for r in rows] == ["B", "A", "C"]  # "dog" wherever it went
    assert [r["option_char"] for r in rows] == [["A", "B", "C"], ["B", "C", "A"], ["C", "A", "B"]]
    assert all(math.isnan(r["D"]) for r in rows)
    q = get_protocol("mmbench").from_record(rows[1])
    assert q.options == ("A. dog", "B. cow", "C. cat")
    assert q.extra["round_id"] == 1 and q.extra["answer"] == "A"
    assert MMBENCH_RECORD["A"] == "cat"  # the input row is not modified


# -- parsing answers --------------------------------------------------------------------------------

SEED_Q = get_protocol("seed").from_record(
    {
        "question_id": 1,
        "text": "What colour is the car?\nA. red\nB. green\nC. blue\nD. yellow\nAnswer directly.",
    }
)
MMB_Q = get_protocol("mmbench").from_record(MMBENCH_RECORD)  # cat / dog / cow, no D


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("A", "A"),
        ("a", "A"),  # the original kept "a", then crashed on options[ord("a") - ord("A")]
        (" B\n", "B"),
        ("A.", "A"),
        ("(B)", "B"),  # the original: "(" is no letter, "(b)" matches no option -> invalid
        ("b)", "B"),
        ("C:", "C"),
        ("C. blue", "C"),
        ("(d) yellow", "D"),
        ("blue", "C"),  # the original cut it to "b" (green)
        ("Blue", "C"),
        ("blue.", "C"),  # the original left "." on macro answers: "blue." matched no option
        ("Green", "B"),
        ("the answer is D. yellow", "D"),  # the original's substring rule, on the option line "D. yellow"
        ("yel", "D"),
        ("yellow car", "yellow car"),  # neither contains the line "D. yellow": invalid, as in the original
        ("E", "E"),  # no such option: invalid
        ("purple", "purple"),
        ("", ""),
        ("...", ""),
    ],
)
def test_parse_answer_seed(raw, expected):
    assert get_protocol("seed").parse_answer(raw, SEED_Q) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("B", "B"),
        ("dog", "B"),  # the original: "d" -> valid letter D -> IndexError on a 3-option question
        ("Dog", "B"),
        ("D", "D"),  # not an option of this question: invalid (the original accepted any of A-D)
        ("the cow", "C"),  # substring rule on option texts, as the original did for MMBench
        ("cat.", "A"),
    ],
)
def test_parse_answer_mmbench(raw, expected):
    protocol = get_protocol("mmbench")
    assert protocol.parse_answer(raw, MMB_Q) == expected


def test_is_valid():
    seed = get_protocol("seed")
    assert [seed.is_valid(a, SEED_Q) for a in ("A", "D", "a", "E", "", "blue")] == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    mmb = get_protocol("mmbench")
    assert mmb.is_valid("C", MMB_Q) and not mmb.is_valid("D", MMB_Q)
    tv = get_protocol("textvqa")
    q = tv.from_record(TEXTVQA_RECORD)
    assert tv.is_valid("dakota", q) and not tv.is_valid("", q) and not tv.is_valid("  ", q)


def test_parse_answer_free_form_strips_like_the_originals_micro_answer():
    tv = get_protocol("textvqa")
    q = tv.from_record(TEXTVQA_RECORD)
    assert tv.parse_answer("  Dakota.\n", q) == "Dakota"
    assert tv.parse_answer("3.5", q) == "3.5"
    assert tv.parse_answer("...", q) == ""


# -- the choice -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "macro, micro, reason, answer, candidates",
    [
        ("A", "A", AGREE, "A", None),
        ("A", "C", BOTH_VALID, None, ("red", "blue")),
        ("A", "purple", MICRO_INVALID, "A", None),
        ("purple", "C", MACRO_INVALID, "C", None),
        ("purple", "pink", BOTH_INVALID, "purple", None),
    ],
)
def test_decide_multiple_choice_table(macro, micro, reason, answer, candidates):
    decision = get_protocol("seed").decide(SEED_Q, macro, micro)
    assert decision.reason == reason
    assert decision.answer == answer
    assert decision.candidates == candidates
    assert decision.needs_scoring == (candidates is not None)
    if candidates:
        assert decision.candidate_answers == (macro, micro)


def test_decide_mmbench_scores_option_texts():
    decision = get_protocol("mmbench").decide(MMB_Q, "A", "B")
    assert decision.candidates == ("cat", "dog") and decision.candidate_answers == ("A", "B")


def test_decide_no_micro_falls_back_to_macro():
    seed = get_protocol("seed")
    decision = seed.decide(SEED_Q, "A", None, box_error="pixel_units")
    assert (decision.answer, decision.reason) == ("A", f"{NO_MICRO}: pixel_units")
    assert seed.decide(SEED_Q, "purple", None).reason == NO_MICRO
    for selection in ("original", "candidate", "micro"):
        assert seed.decide(SEED_Q, "A", None, selection=selection).answer == "A"


def test_decide_selections():
    seed = get_protocol("seed")
    assert seed.decide(SEED_Q, "A", "C", selection="macro") == Decision(MACRO_ONLY, answer="A")
    assert seed.decide(SEED_Q, "A", "C", selection="micro") == Decision(MICRO_ONLY, answer="C")
    assert seed.decide(SEED_Q, "A", "purple", selection="micro") == Decision(MICRO_ONLY, answer="purple")
    assert seed.decide(SEED_Q, "A", "C", selection="candidate") == seed.decide(SEED_Q, "A", "C")
    with pytest.raises(ValueError, match="unknown selection"):
        seed.decide(SEED_Q, "A", "C", selection="oracle")


def test_decide_textvqa_scores_the_two_answers_unless_equal():
    tv = get_protocol("textvqa")
    q = tv.from_record(TEXTVQA_RECORD)
    decision = tv.decide(q, "dakota", "Dakota Digital")
    assert decision.reason == BOTH_VALID
    assert decision.candidates == ("dakota", "Dakota Digital")
    assert decision.candidate_answers == ("dakota", "Dakota Digital")
    # The original scored equal answers too; equal losses gave the macro answer, the same text.
    assert tv.decide(q, "dakota", "dakota") == Decision(AGREE, answer="dakota")
    assert tv.decide(q, "", "dakota") == Decision(MACRO_INVALID, answer="dakota")


def test_textvqa_box_failure_never_reuses_the_previous_questions_answer():
    """The original's TextVQA loop always scored [base_answer, cot_answer]; when the box failed,
    cot_answer still held the previous question's micro answer (NameError on the first question)."""
    tv = get_protocol("textvqa")
    first = tv.from_record(TEXTVQA_RECORD)
    second = tv.from_record({**TEXTVQA_RECORD, "question_id": 34603, "text": "what year is it?"})
    decision1 = tv.decide(first, tv.parse_answer("kodak", first), tv.parse_answer("dakota", first))
    assert decision1.needs_scoring
    decision2 = tv.decide(second, tv.parse_answer("2014", second), None, box_error="no_box")
    assert not decision2.needs_scoring
    assert pick(decision2) == ("2014", f"{NO_MICRO}: no_box")
    assert "dakota" not in repr(decision2)


def test_pick():
    decision = get_protocol("seed").decide(SEED_Q, "A", "C")
    assert pick(decision, [1.5, 0.5]) == ("C", SCORED_MICRO)
    assert pick(decision, [0.5, 1.5]) == ("A", SCORED_MACRO)
    assert pick(decision, [0.75, 0.75]) == ("A", TIE_MACRO)
    assert get_protocol("seed").pick(decision, (2.0, 1.0)) == ("C", SCORED_MICRO)
    with pytest.raises(ValueError, match="NaN"):
        pick(decision, [float("nan"), 1.0])
    with pytest.raises(ValueError, match="need 2"):
        pick(decision, [1.0])
    with pytest.raises(ValueError, match="need 2"):
        pick(decision)
    assert pick(Decision(AGREE, answer="B")) == ("B", AGREE)


def test_focus_query_letters_follow_options():
    q = FocusQuery(benchmark="x", question_id=1, question="q", text="q", options=("A. a", "B. b"))
    assert q.letters == ("A", "B")


@pytest.mark.parametrize("name, field", [("seed", "text"), ("gqa", "question"), ("textvqa", "text"), ("vqa", "text")])
@pytest.mark.parametrize("value", [None, 3, ["a"]])
def test_a_question_text_that_is_not_a_string_is_a_record_error(name, field, value):
    """Issue 14, item 4: null or a number used to raise TypeError and kill the run at that row."""
    from dualfocus.focus.protocols import RecordError

    with pytest.raises(RecordError, match=rf"{name} record 'q1': '{field}' is {type(value).__name__}"):
        get_protocol(name).from_record({"question_id": "q1", field: value, "image": "x.png"})
