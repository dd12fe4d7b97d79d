"""Reading a benchmark record into a `FocusQuery`: the checks and pieces the benchmarks' protocols
(`from_record`) share. A record the protocol cannot read raises `RecordError` naming it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from dualfocus.focus.protocols import IMAGE, FocusQuery, Protocol, RecordError

OPTION_LINE = re.compile(r"([A-Z])\. ?(.*)", re.DOTALL)


def record_field(record: Mapping, key: str, benchmark: str):
    try:
        return record[key]
    except KeyError:
        raise RecordError(
            f"{benchmark} record {record.get('question_id', record.get('index'))!r} has no {key!r}"
        ) from None


def text_field(record: Mapping, key: str, benchmark: str) -> str:
    """A field that must hold the question text: a string (null, a number or a list is a bad record)."""
    value = record_field(record, key, benchmark)
    if not isinstance(value, str):
        qid = record.get("question_id", record.get("index"))
        raise RecordError(f"{benchmark} record {qid!r}: {key!r} is {type(value).__name__} {value!r:.40}, "
                          "expected the question text")
    return value


def question_text(record: Mapping, key: str, benchmark: str, id_key: str = "question_id") -> tuple:
    """(question id, the question text under ``key``), checked: a string without "<image>"."""
    qid = record_field(record, id_key, benchmark)
    text = text_field(record, key, benchmark)
    check_no_image_token(text, benchmark, qid)
    return qid, text


def check_no_image_token(text: str, benchmark: str, qid) -> None:
    if IMAGE in text:
        raise RecordError(f"{benchmark} record {qid!r}: the question text already contains {IMAGE!r}")


def split_option_lines(lines: Sequence[str], benchmark: str, qid, pattern: re.Pattern = OPTION_LINE,
                       shape: str = "{}. ...") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Option lines ("A. red"; ``pattern`` captures the letter and the text) -> (lines, texts); the
    letters must run A, B, C, ..."""
    if not lines:
        raise RecordError(f"{benchmark} record {qid!r}: no option lines")
    texts = []
    for i, line in enumerate(lines):
        match = pattern.fullmatch(line)
        if match is None or match.group(1) != chr(ord("A") + i):
            raise RecordError(f"{benchmark} record {qid!r}: option line {i} is {line!r}, "
                              f"expected '{shape.format(chr(65 + i))}'")
        texts.append(match.group(2))
    return tuple(lines), tuple(texts)


def options_and_instruction(lines: Sequence[str], benchmark: str, qid, pattern: re.Pattern = OPTION_LINE,
                            shape: str = "{}. ...") -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """The lines after the question: option lines, then the answer-format instruction when the last
    line is not an option. (LLaVA's SEED reader took lines[1:-1] as options, silently losing the last
    option of a record without the instruction line.)"""
    instruction = None
    if lines and pattern.fullmatch(lines[-1]) is None:
        instruction, lines = lines[-1], lines[:-1]
    return (*split_option_lines(lines, benchmark, qid, pattern, shape), instruction)


def option_lines(options: Sequence[str]) -> str:
    """Typed options as a question file's lines: "A. red\nB. green"."""
    return "\n".join(f"{chr(ord('A') + i)}. {text}" for i, text in enumerate(options))


def require_options(name: str, options: Sequence[str] | None) -> Sequence[str]:
    if not options:
        raise ValueError(f"protocol {name!r} is multiple choice: give --options")
    return options


def free_form_query(protocol: Protocol, record: Mapping, question: str, instruction: str | None) -> FocusQuery:
    """A free-form question whose `text` is asked, and stored as the prompt, as the record holds it."""
    text = record["text"]
    return FocusQuery(benchmark=protocol.name, question_id=record["question_id"], question=question, text=text,
                      instruction=instruction, prompt=text, image=record.get("image"))
