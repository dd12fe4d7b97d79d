"""An lmms-eval request -> the `FocusQuery` the DualFocus pipeline asks.

Two routes, chosen per task by its ``generation_kwargs``:

- ``dualfocus_protocol: NAME`` (our task configs: seed, mmbench, gqa, textvqa, vqa): the document
  is a record in that benchmark's official format, read by the project's benchmark adapter exactly
  as the runner reads it, so prompts, choice rule and scoring are the release's.
- no protocol (any other lmms-eval task): the formatted context is the question. It is multiple
  choice when it holds a block of at least two option lines lettered A, B, C, ... in order
  ("A. x", "A) x" or "(A) x"); the lines before the block are the question (what the box pass
  asks), the lines after it the answer-format instruction, and the block gives the options the
  choice rule matches answers against (SEED's rules: letters, option text, substring of the line).
  Otherwise it is free form (the generic LLaVA protocol, "vqa").
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dualfocus.benchmarks import get_benchmark, get_protocol
from dualfocus.focus.protocols import IMAGE, FocusQuery, Protocol, RecordError

PROTOCOL_KEY = "dualfocus_protocol"
GENERIC_MC, GENERIC_FREE = "seed", "vqa"  # the protocols a task without its own is asked with
_OPTION = re.compile(r"\s*(?:\(([A-Z])\)|([A-Z])[.)])\s*(.*)")


def option_block(lines: list[str]) -> tuple[int, int] | None:
    """(start, end) of the first run of >= 2 lines lettered A, B, C, ... in order; None if none."""
    for start in range(len(lines)):
        end = start
        while end < len(lines) and _letter(lines[end]) == chr(ord("A") + end - start):
            end += 1
        if end - start >= 2:
            return start, end
    return None


def _letter(line: str) -> str | None:
    match = _OPTION.fullmatch(line)
    return None if match is None else (match.group(1) or match.group(2))


def context_query(context: str, question_id) -> tuple[FocusQuery, Protocol]:
    """A task's formatted context as a DualFocus question (see the module docstring)."""
    if IMAGE in context:  # lmms-eval passes images apart; a literal marker would shift them
        context = context.replace(IMAGE, "").strip()
    lines = context.split("\n")
    block = option_block(lines)
    if block is None:
        protocol = get_protocol(GENERIC_FREE)
        return protocol.from_record({"question_id": question_id, "text": context}), protocol
    start, end = block
    texts = tuple(_OPTION.fullmatch(line).group(3).strip() for line in lines[start:end])
    options = tuple(f"{chr(ord('A') + i)}. {t}" for i, t in enumerate(texts))
    question = "\n".join(lines[:start]).strip() or context
    instruction = "\n".join(lines[end:]).strip() or None
    query = FocusQuery(benchmark="lmms_eval", question_id=question_id, question=question, text=context,
                       options=options, option_texts=texts, instruction=instruction, prompt=context)
    return query, get_protocol(GENERIC_MC)


def document_query(protocol_name: str, doc: Mapping) -> tuple[FocusQuery, Protocol]:
    """A document in a benchmark's official format, read by that benchmark's adapter."""
    bench = get_benchmark(protocol_name)
    return bench.to_query(doc), bench.protocol


def request_query(context: str, gen_kwargs: Mapping, doc: Mapping, question_id) -> tuple[FocusQuery, Protocol]:
    """The query for one request: by the task's named protocol, else from its context."""
    name = gen_kwargs.get(PROTOCOL_KEY)
    if name is None:
        return context_query(context, question_id)
    if not isinstance(doc, Mapping):
        raise RecordError(f"task document {question_id!r} is {type(doc).__name__}, expected a record "
                          f"for the {name!r} protocol")
    return document_query(str(name), doc)
