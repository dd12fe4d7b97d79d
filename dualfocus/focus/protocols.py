"""The DualFocus protocol, stated once per benchmark: prompts, answer parsing, and the choice.

For every question the pipeline runs

1. macro pass   ``macro_prompt(q)``, one turn, the full image: the plain LLaVA answer;
2. box pass     ``box_prompt(q)``, one turn, the full image: the model writes a box;
3. crop         `dualfocus.boxes` (a bad box -> no micro pass, the macro answer stands);
4. micro pass   ``micro_messages(q, box_text)``: the box turn replayed, then ``micro_prompt(q)``
                with the full image and the crop (one "<image>" in each user turn);
5. choose       ``decide(q, macro, micro)``; when both answers are valid and differ, the two
                candidates are scored (`dualfocus.focus.scoring`) and ``pick(decision, losses)``
                keeps the one with the lower loss.

The wording of every prompt is the original release's (``dualfocus/eval/model_vqa_{seed,mmbench,
gqa,textvqa}.py``), pinned by ``tests/test_protocols.py``. Where the original has an evident bug
we differ; ``docs/protocol.md`` lists each difference and the test that pins it.

Messages are ``(role, text)`` pairs with role `USER` (0) or `ASSISTANT` (1), an index into a
template's ``roles``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

USER, ASSISTANT = 0, 1
SELECTIONS = ("original", "candidate", "macro", "micro")

OPTION_INSTRUCTION = "Answer with the option's letter from the given choices directly."
OPTION_INSTRUCTION_CN = "请直接回答选项字母。"
SHORT_ANSWER = "Answer the question using a single word or phrase"  # the original adds "." in some files
BOX_REQUEST = "Please provide the bounding box coordinate of the region this question asks"
COMBINE = "Please combine the information from these two images and answer this question:"
IMAGE = "<image>"

# Answer-format lines LLaVA's question files end with; the vqa protocol keeps them out of the box request.
KNOWN_INSTRUCTIONS = (
    OPTION_INSTRUCTION,
    SHORT_ANSWER + ".",
    "Answer the question using a single word or phrase",
    "Answer the question using a single word.",
    "When the provided information is insufficient, respond with 'Unanswerable'.",
)

# Decision reasons.
MACRO_ONLY = "macro_only"  # selection="macro"
MICRO_ONLY = "micro_only"  # selection="micro"
NO_MICRO = "no_micro"  # no micro answer (the box could not be used): the macro answer stands
AGREE = "agree"  # both valid and equal: nothing to score
MICRO_INVALID = "micro_invalid"
MACRO_INVALID = "macro_invalid"
BOTH_INVALID = "both_invalid"
BOTH_VALID = "both_valid"  # -> score the two candidates
SCORED_MACRO = "scored_macro"
SCORED_MICRO = "scored_micro"
TIE_MACRO = "tie_macro"  # equal losses: the macro answer, as the original's argmin

_OPTION_LINE = re.compile(r"([A-Z])\. ?(.*)", re.DOTALL)
_LETTER_ONLY = re.compile(r"\(?([A-Za-z])\)?[.:)]?")
_LETTER_THEN_TEXT = re.compile(r"\(?([A-Za-z])(?:\)|[.:])\s+\S", re.DOTALL)


class RecordError(ValueError):
    """A question record the protocol cannot read (missing field, malformed option line, ...)."""


@dataclass(frozen=True)
class FocusQuery:
    """What the pipeline needs to ask one question, read from a benchmark record.

    ``text`` is the question as the macro pass asks it (after "<image>\\n"); ``question`` is the
    bare question (no hint, options or instruction); ``options`` are the option lines as the
    prompts show them ("A. red"), ``option_texts`` the texts alone ("red"); ``hint`` is MMBench's
    context (None when absent: "nan" hints are dropped); ``instruction`` the answer-format line;
    ``prompt`` what LLaVA's answer record stores as "prompt"; ``image`` a path relative to the
    image folder, or base64 data when ``image_base64``; ``extra`` the record's other fields that
    an answer record or a scorer needs (MMBench: answer, category, round_id, options, option_char).
    """

    benchmark: str
    question_id: Any
    question: str
    text: str
    options: tuple[str, ...] = ()
    option_texts: tuple[str, ...] = ()
    hint: str | None = None
    instruction: str | None = None
    prompt: str = ""
    image: str | None = None
    image_base64: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def letters(self) -> tuple[str, ...]:
        """The option letters, "A", "B", ... (empty for free-form questions)."""
        return tuple(chr(ord("A") + i) for i in range(len(self.options)))


@dataclass(frozen=True)
class Decision:
    """The choice between the macro and micro answers, before any scoring.

    Either ``answer`` is set (decided), or ``candidates`` holds the two texts to score, macro's
    first, and ``candidate_answers`` the answer each stands for; `pick` finishes the choice.
    """

    reason: str
    answer: str | None = None
    candidates: tuple[str, str] | None = None
    candidate_answers: tuple[str, str] | None = None

    @property
    def needs_scoring(self) -> bool:
        return self.answer is None


def pick(decision: Decision, losses: Sequence[float] | None = None) -> tuple[str, str]:
    """``(answer, reason)``: the decided answer, or the candidate with the lower loss.

    ``losses`` are the mean per-token losses of ``decision.candidates``, in that order. Equal
    losses keep the macro answer (the original's ``argmin`` returns the first). A NaN loss is an
    error, not a choice.
    """
    if not decision.needs_scoring:
        return decision.answer, decision.reason
    if losses is None or len(losses) != 2:
        raise ValueError(f"need 2 candidate losses, got {losses!r}")
    macro_loss, micro_loss = (float(x) for x in losses)
    if math.isnan(macro_loss) or math.isnan(micro_loss):
        raise ValueError(f"candidate loss is NaN: {losses!r}")
    macro, micro = decision.candidate_answers
    if micro_loss < macro_loss:
        return micro, SCORED_MICRO
    if macro_loss < micro_loss:
        return macro, SCORED_MACRO
    return macro, TIE_MACRO


def is_empty_cell(value) -> bool:
    """An empty MMBench cell, exactly as LLaVA's ``is_none``: None, NaN, or "nan"/"none" in any case.

    A cell of spaces (or "") is content to the release: a hint line of its own, or an option
    ("D.  ") that counts. We keep that (docs/protocol.md, "MMBench cells"); pandas reads an empty
    TSV cell as NaN, so only hand-made files hold such cells.
    """
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.lower() in ("nan", "none")


def _field(record: Mapping, key: str, benchmark: str):
    try:
        return record[key]
    except KeyError:
        raise RecordError(
            f"{benchmark} record {record.get('question_id', record.get('index'))!r} has no {key!r}"
        ) from None


def _text_field(record: Mapping, key: str, benchmark: str) -> str:
    """A field that must hold the question text: a string (null, a number or a list is a bad record)."""
    value = _field(record, key, benchmark)
    if not isinstance(value, str):
        qid = record.get("question_id", record.get("index"))
        raise RecordError(f"{benchmark} record {qid!r}: {key!r} is {type(value).__name__} {value!r:.40}, "
                          "expected the question text")
    return value


def _check_no_image_token(text: str, benchmark: str, qid) -> None:
    if IMAGE in text:
        raise RecordError(f"{benchmark} record {qid!r}: the question text already contains {IMAGE!r}")


def _split_option_lines(lines: Sequence[str], benchmark: str, qid) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Option lines "A. red" -> (lines, texts); letters must run A, B, C, ..."""
    if not lines:
        raise RecordError(f"{benchmark} record {qid!r}: no option lines")
    texts = []
    for i, line in enumerate(lines):
        match = _OPTION_LINE.fullmatch(line)
        if match is None or match.group(1) != chr(ord("A") + i):
            raise RecordError(
                f"{benchmark} record {qid!r}: option line {i} is {line!r}, expected '{chr(65 + i)}. ...'"
            )
        texts.append(match.group(2))
    return tuple(lines), tuple(texts)


class Protocol:
    """One benchmark's prompts and rules. Subclasses set the class attributes and `from_record`.

    The defaults are SEED's (the plainest file of the original); each subclass overrides only what
    its original file does differently.
    """

    name: str = ""
    multiple_choice: bool = True
    # The original's substring fallback compared the answer with the option *lines* ("A. red") for
    # SEED and GQA, and with the option *texts* ("red") for MMBench.
    match_option_lines: bool = True
    # MMBench's original appended an empty assistant turn before cutting the scoring prompt, so
    # that prompt ends with "ASSISTANT:"; the others end with the separator after the question.
    score_turn_open: bool = False

    # -- reading records -------------------------------------------------------------------------
    def from_record(self, record: Mapping) -> FocusQuery:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- prompts (user message texts) ------------------------------------------------------------
    def macro_prompt(self, q: FocusQuery) -> str:
        return f"{IMAGE}\n{q.text}"

    def box_prompt(self, q: FocusQuery) -> str:
        """The user turn that asks for the box (the box pass)."""
        return f"{IMAGE}\n{BOX_REQUEST}: {q.question}"

    def micro_box_prompt(self, q: FocusQuery) -> str:
        """The box-request turn as the micro conversation replays it (MMBench: not `box_prompt`)."""
        return self.box_prompt(q)

    def micro_prompt(self, q: FocusQuery) -> str:
        return f"{IMAGE}\n{COMBINE} {q.text}"

    def score_prompt(self, q: FocusQuery) -> str:
        """The last user turn of the original's candidate-scoring conversation."""
        return f"{IMAGE}\n{COMBINE} {q.question}\n{SHORT_ANSWER}"

    def micro_messages(self, q: FocusQuery, box_text: str) -> tuple[tuple[int, str], ...]:
        """The micro conversation up to the open answer: box request, box, micro question."""
        return ((USER, self.micro_box_prompt(q)), (ASSISTANT, box_text), (USER, self.micro_prompt(q)))

    def score_messages(self, q: FocusQuery, box_text: str) -> tuple[tuple[int, str | None], ...]:
        """The conversation the original formats before cutting out its scoring prompt."""
        messages = ((USER, self.micro_box_prompt(q)), (ASSISTANT, box_text), (USER, self.score_prompt(q)))
        return messages + ((ASSISTANT, None),) if self.score_turn_open else messages

    # -- answers ---------------------------------------------------------------------------------
    def parse_answer(self, raw_text: str, q: FocusQuery) -> str:
        """The model's text -> the answer: an option letter when one can be read, else the text.

        Both passes are cleaned alike: whitespace, then leading/trailing "." stripped (the
        original stripped "." from the micro answer only). Multiple choice, in order:
        a lone letter of this question ("a", "B.", "(c)", "D)") -> that letter, upper case;
        a letter of this question then ".", ")" or ":" and text ("B. dog", "(b) dog") -> the letter;
        the exact text of an option (case-insensitive) -> its letter;
        the original's fallback for answers longer than one character: the first option whose
        line (SEED, GQA) or text (MMBench) contains the answer or is contained in it -> its letter;
        otherwise the cleaned text, which `is_valid` rejects.
        Unlike the original, a word is never cut to its first letter ("blue" is not "b").
        """
        text = raw_text.strip().strip("\n").strip(".").strip()
        if not self.multiple_choice or not text:
            return text
        letters = q.letters
        match = _LETTER_ONLY.fullmatch(text) or _LETTER_THEN_TEXT.match(text)
        if match is not None and match.group(1).upper() in letters:
            return match.group(1).upper()
        folded = text.casefold()
        for letter, option in zip(letters, q.option_texts):
            if option.strip().rstrip(".").strip().casefold() == folded:
                return letter
        if len(text) > 1:
            targets = q.options if self.match_option_lines else q.option_texts
            lowered = text.lower()
            for letter, target in zip(letters, targets):
                target = target.lower()
                if target and (lowered in target or target in lowered):
                    return letter
        return text

    def is_valid(self, answer: str, q: FocusQuery) -> bool:
        """Multiple choice: one of this question's letters. Free form: not empty."""
        if self.multiple_choice:
            return answer in q.letters
        return bool(answer.strip())

    def candidate_text(self, answer: str, q: FocusQuery) -> str:
        """The text scored for an answer: the option's text for a letter, the answer itself otherwise."""
        if self.multiple_choice:
            return q.option_texts[q.letters.index(answer)]
        return answer

    def final_text(self, answer: str, q: FocusQuery) -> str:
        """What the answer record stores as "text" (GQA: the option text for a letter)."""
        return answer

    # -- the choice ------------------------------------------------------------------------------
    def decide(
        self,
        q: FocusQuery,
        macro_answer: str,
        micro_answer: str | None,
        selection: str = "original",
        box_error: str | None = None,
    ) -> Decision:
        """Choose between the parsed macro and micro answers, or name the two candidates to score.

        ``micro_answer`` is None when there was no micro pass (``box_error`` says why). Selections:
        "original" and "candidate" (same table; they differ only in what `scoring` labels),
        "macro" (always the macro answer: plain LLaVA), "micro" (the micro answer whenever there
        is one, valid or not; else the macro answer). The table:

        ==============  ==============  =====================================
        macro valid     micro valid     result
        ==============  ==============  =====================================
        yes             yes, equal      that answer (``agree``; nothing to score)
        yes             yes, different  score both (``both_valid``)
        yes             no              macro (``micro_invalid``)
        no              yes             micro (``macro_invalid``)
        no              no              macro (``both_invalid``)
        (no micro pass)                 macro (``no_micro[: box error]``)
        ==============  ==============  =====================================
        """
        if selection not in SELECTIONS:
            raise ValueError(f"unknown selection {selection!r}; choose one of {SELECTIONS}")
        if selection == "macro":
            return Decision(MACRO_ONLY, answer=macro_answer)
        if micro_answer is None:
            return Decision(f"{NO_MICRO}: {box_error}" if box_error else NO_MICRO, answer=macro_answer)
        if selection == "micro":
            return Decision(MICRO_ONLY, answer=micro_answer)
        macro_ok, micro_ok = self.is_valid(macro_answer, q), self.is_valid(micro_answer, q)
        if macro_ok and micro_ok:
            if macro_answer == micro_answer:
                return Decision(AGREE, answer=macro_answer)
            return Decision(
                BOTH_VALID,
                candidates=(self.candidate_text(macro_answer, q), self.candidate_text(micro_answer, q)),
                candidate_answers=(macro_answer, micro_answer),
            )
        if macro_ok:
            return Decision(MICRO_INVALID, answer=macro_answer)
        if micro_ok:
            return Decision(MACRO_INVALID, answer=micro_answer)
        return Decision(BOTH_INVALID, answer=macro_answer)

    def pick(self, decision: Decision, losses: Sequence[float] | None = None) -> tuple[str, str]:
        return pick(decision, losses)


class SeedProtocol(Protocol):
    """SEED-Bench (image): LLaVA's ``llava-seed-bench-image.jsonl`` lines.

    ``text`` = "question\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\nAnswer with the option's letter ...".
    """

    name = "seed"

    def from_record(self, record: Mapping) -> FocusQuery:
        qid = _field(record, "question_id", self.name)
        text = _text_field(record, "text", self.name)
        _check_no_image_token(text, self.name, qid)
        lines = text.split("\n")
        rest = lines[1:]
        # The original took lines[1:-1] as options, silently losing the last option of a record
        # without the instruction line; we only drop a last line that is not an option.
        instruction = None
        if rest and _OPTION_LINE.fullmatch(rest[-1]) is None:
            instruction = rest[-1]
            rest = rest[:-1]
        options, option_texts = _split_option_lines(rest, self.name, qid)
        return FocusQuery(
            benchmark=self.name,
            question_id=qid,
            question=lines[0],
            text=text,
            options=options,
            option_texts=option_texts,
            instruction=instruction,
            prompt=text,
            image=record.get("image"),
        )


class GQAProtocol(Protocol):
    """GQA as multiple choice, DualFocus's version (``llava_gqa_testdev_balanced_mcq.jsonl``).

    Records hold ``question`` = "question\\nA. ...\\nB. ..." (the original reads that key; a
    LLaVA-style ``text`` key is accepted too). The instruction line is appended by the protocol.
    The answer record's "text" is the chosen option's text, as the original writes it.
    """

    name = "gqa"

    def from_record(self, record: Mapping) -> FocusQuery:
        qid = _field(record, "question_id", self.name)
        raw = _text_field(record, "question" if "question" in record else "text", self.name)
        _check_no_image_token(raw, self.name, qid)
        lines = raw.split("\n")
        if lines[-1] == OPTION_INSTRUCTION:  # a LLaVA-style text that already carries it
            lines = lines[:-1]
        options, option_texts = _split_option_lines(lines[1:], self.name, qid)
        body = "\n".join(lines)
        return FocusQuery(
            benchmark=self.name,
            question_id=qid,
            question=lines[0],
            text=f"{body}\n{OPTION_INSTRUCTION}",
            options=options,
            option_texts=option_texts,
            instruction=OPTION_INSTRUCTION,
            prompt=lines[0],
            image=record.get("image"),
        )

    def score_prompt(self, q: FocusQuery) -> str:
        return f"{IMAGE}\n{q.question}\n{SHORT_ANSWER}."

    def final_text(self, answer: str, q: FocusQuery) -> str:
        return self.candidate_text(answer, q) if self.is_valid(answer, q) else answer


class TextVQAProtocol(Protocol):
    """TextVQA: LLaVA's ``llava_textvqa_val_v051_ocr.jsonl`` lines.

    ``text`` = "question\\nReference OCR token: ...\\nAnswer the question using a single word or
    phrase."; the box request asks the first line only. Free form: both answers are scored.
    """

    name = "textvqa"
    multiple_choice = False

    def from_record(self, record: Mapping) -> FocusQuery:
        qid = _field(record, "question_id", self.name)
        text = _text_field(record, "text", self.name)
        _check_no_image_token(text, self.name, qid)
        lines = text.split("\n")
        instruction = lines[-1] if len(lines) > 1 and lines[-1] in KNOWN_INSTRUCTIONS else None
        return FocusQuery(
            benchmark=self.name,
            question_id=qid,
            question=lines[0],
            text=text,
            instruction=instruction,
            prompt=text,
            image=record.get("image"),
        )

    def score_prompt(self, q: FocusQuery) -> str:
        # No space after the colon: the original's TextVQA wording, kept for fidelity.
        return f"{IMAGE}\n{COMBINE}{q.question}\n{SHORT_ANSWER}"


class VQAProtocol(TextVQAProtocol):
    """A generic LLaVA question file (``question_id``, ``image``, ``text``): free-form answers.

    TextVQA's wording, without OCR assumptions: the question is the whole text less a trailing
    answer-format line (LLaVA's files end with one, e.g. "Answer the question using a single word
    or phrase."), so a multi-line question reaches the box request whole. Candidates are scored
    under the micro question exactly as asked (no added short-answer wording: a generic question
    may want a long answer).
    """

    name = "vqa"

    def from_record(self, record: Mapping) -> FocusQuery:
        qid = _field(record, "question_id", self.name)
        text = _text_field(record, "text", self.name)
        _check_no_image_token(text, self.name, qid)
        lines = text.split("\n")
        instruction = None
        if len(lines) > 1 and lines[-1].strip() in KNOWN_INSTRUCTIONS:
            instruction = lines[-1]
            lines = lines[:-1]
        question = "\n".join(lines).strip()
        if not question:
            raise RecordError(f"{self.name} record {qid!r}: empty question")
        return FocusQuery(
            benchmark=self.name,
            question_id=qid,
            question=question,
            text=text,
            instruction=instruction,
            prompt=text,
            image=record.get("image"),
        )

    def score_prompt(self, q: FocusQuery) -> str:
        return self.micro_prompt(q)


class MMBenchProtocol(Protocol):
    """MMBench: TSV rows (``index``, ``question``, ``hint``, ``A``..``D``, base64 ``image``, ...).

    The hint goes first ("hint\\nquestion"); options follow as "A. text" lines; the instruction
    "Answer with the option's letter from the given choices directly." is appended. The original
    appended it whether or not ``--single-pred-prompt`` was given (its scripts always give it);
    ``single_pred_prompt=False`` leaves it out, ``lang="cn"`` uses LLaVA's Chinese line.
    Options stop at the first empty cell (2- and 3-option questions). "nan" hints are dropped.
    """

    name = "mmbench"
    match_option_lines = False
    score_turn_open = True

    def __init__(self, single_pred_prompt: bool = True, lang: str = "en"):
        if lang not in ("en", "cn"):
            raise ValueError(f"lang must be 'en' or 'cn', got {lang!r}")
        self.single_pred_prompt = single_pred_prompt
        self.lang = lang

    def from_record(self, record: Mapping) -> FocusQuery:
        qid = _field(record, "index", self.name)
        question = str(_field(record, "question", self.name))
        _check_no_image_token(question, self.name, qid)
        hint = record.get("hint")
        hint = None if is_empty_cell(hint) else str(hint)
        option_texts = []
        for letter in ("A", "B", "C", "D"):
            value = record.get(letter)
            if is_empty_cell(value):
                break
            option_texts.append(str(value))  # pandas may read an all-number option column as numbers
        if not option_texts:
            raise RecordError(f"{self.name} record {qid!r}: no options (column A is empty)")
        letters = tuple(chr(ord("A") + i) for i in range(len(option_texts)))
        options = tuple(f"{letter}. {text}" for letter, text in zip(letters, option_texts))
        context_question = f"{hint}\n{question}" if hint is not None else question
        text = "\n".join((context_question, *options))
        instruction = None
        if self.single_pred_prompt:
            instruction = OPTION_INSTRUCTION if self.lang == "en" else OPTION_INSTRUCTION_CN
            text = f"{text}\n{instruction}"
        extra = {
            k: record[k] for k in ("answer", "category", "l2-category", "split", "source") if k in record
        }
        extra["round_id"] = record.get("round_id", 0)
        extra["options"] = list(option_texts)
        extra["option_char"] = list(record.get("option_char", letters))
        return FocusQuery(
            benchmark=self.name,
            question_id=qid,
            question=question,
            text=text,
            options=options,
            option_texts=tuple(option_texts),
            hint=hint,
            instruction=instruction,
            prompt=question,
            image=record.get("image"),
            image_base64=True,
            extra=extra,
        )

    def _context_question(self, q: FocusQuery) -> str:
        return f"{q.hint}\n{q.question}" if q.hint is not None else q.question

    def box_prompt(self, q: FocusQuery) -> str:
        return f"{IMAGE}\n{self._context_question(q)}\n{BOX_REQUEST}."

    def micro_box_prompt(self, q: FocusQuery) -> str:
        # The original rebuilt this turn as "<image>\n{hint}\n..." with the raw hint, printing "nan"
        # for questions without one; we drop the hint line then.
        if q.hint is None:
            return super().box_prompt(q)
        return f"{IMAGE}\n{q.hint}\n{BOX_REQUEST}: {q.question}"

    def score_prompt(self, q: FocusQuery) -> str:
        return f"{IMAGE}\n{COMBINE} {self._context_question(q)} {SHORT_ANSWER}."


def mmbench_rotations(row: Mapping) -> list[dict]:
    """LLaVA's ``--all-rounds``: one row per rotation of the options, as ``model_vqa_mmbench`` asks them.

    Round k shows the options rotated left by k under the same letters (round 1 of A=cat, B=dog,
    C=cow asks A=dog, B=cow, C=cat). As in LLaVA, ``index`` is unchanged and ``round_id`` = k
    tells the rounds apart (LLaVA does not offset the index; MMBench's own circular TSVs carry
    their rotations as separate rows at index + k * 1_000_000). ``option_char`` is LLaVA's rotated
    letter list, and ``answer``, when present, is moved to the letter its option now has.
    """
    letters = []
    for letter in ("A", "B", "C", "D"):
        if is_empty_cell(row.get(letter)):
            break
        letters.append(letter)
    texts = [row[letter] for letter in letters]
    n = len(letters)
    rows = []
    for k in range(max(n, 1)):
        new = dict(row)
        for i, letter in enumerate(letters):
            new[letter] = texts[(i + k) % n]
        new["round_id"] = k
        new["option_char"] = letters[k:] + letters[:k]
        answer = row.get("answer")
        if isinstance(answer, str) and answer in letters:
            new["answer"] = letters[(letters.index(answer) - k) % n]
        rows.append(new)
    return rows


_PROTOCOLS = {
    "seed": SeedProtocol,
    "mmbench": MMBenchProtocol,
    "gqa": GQAProtocol,
    "textvqa": TextVQAProtocol,
    "vqa": VQAProtocol,
}
PROTOCOL_NAMES = tuple(_PROTOCOLS)


def get_protocol(name: str, **options) -> Protocol:
    """The protocol for a benchmark: "seed", "mmbench", "gqa", "textvqa" or "vqa".

    ``options`` go to the protocol (MMBench: ``single_pred_prompt``, ``lang``).
    """
    try:
        cls = _PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {PROTOCOL_NAMES}") from None
    return cls(**options)
