"""The DualFocus method, stated once: queries, prompts, answer parsing, and the choice table.

For every question the pipeline runs

1. macro pass   ``macro_prompt(q)``, one turn, the full image: the plain LLaVA answer;
2. box pass     ``box_prompt(q)``, one turn, the full image: the model writes a box;
3. crop         `dualfocus.boxes` (a bad box -> no micro pass, the macro answer stands);
4. micro pass   ``micro_messages(q, box_text)``: the box turn replayed, then ``micro_prompt(q)``
                with the full image and the crop (one "<image>" in each user turn);
5. choose       ``decide(q, macro, micro)``; when both answers are valid and differ, the two
                candidates are scored (`dualfocus.focus.scoring`) and ``pick(decision, losses)``
                keeps the one with the lower loss.

`Protocol` holds the defaults (SEED's wording, the plainest file of the original); each benchmark
module in `dualfocus.benchmarks` defines its subclass next to its adapter: how a record becomes a
`FocusQuery` and the few wordings it overrides. The wording of every prompt is the original
release's, pinned by ``tests/test_protocols.py``. Where the original has an evident bug we differ;
``docs/protocol.md`` lists each difference and the test that pins it.

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
SELECTION_HELP = ("the final answer once every pass ran: original/candidate, the choice by candidate loss; macro or "
                  "micro, always that side (ablations from one run; --mode macro instead runs the macro pass only)")

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

_LETTER_ONLY = re.compile(r"\(?([A-Za-z])\)?[.:)]?")
_LETTER_THEN_TEXT = re.compile(r"\(?([A-Za-z])(?:\)|[.:])\s+\S", re.DOTALL)


def option_letter(text: str, letters: Sequence[str], option_texts: Sequence[str] = ()) -> str | None:
    """The option a multiple-choice answer names, or None: the one rule every reader of answers uses
    (the protocol's parsing, gold answers, the benchmarks' scorers, lmms-eval).

    A lone letter ("a", "B.", "(c)", "D)", "B:") or a letter then ".", ")" or ":" and text ("B. dog",
    "(b) dog") -> that letter, upper case, when it is one of ``letters``; else the exact text of an
    option (case-insensitive, trailing "." ignored) -> its letter.
    """
    text = text.strip()
    match = _LETTER_ONLY.fullmatch(text) or _LETTER_THEN_TEXT.match(text)
    if match is not None and match.group(1).upper() in letters:
        return match.group(1).upper()
    folded = text.rstrip(".").strip().casefold()
    for letter, option in zip(letters, option_texts):
        if option.strip().rstrip(".").strip().casefold() == folded:
            return letter
    return None


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


class Protocol:
    """The method's prompts and rules. A benchmark's subclass sets the class attributes and `from_record`.

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

    # -- reading records (each benchmark module's subclass, `dualfocus.benchmarks`) ----------------
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
        letter = option_letter(text, q.letters, q.option_texts)
        if letter is not None:
            return letter
        if len(text) > 1:
            targets = q.options if self.match_option_lines else q.option_texts
            lowered = text.lower()
            for letter, target in zip(q.letters, targets):
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
