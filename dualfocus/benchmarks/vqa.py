"""A generic LLaVA question file (`question_id`, `image`, `text`): free-form answers.

This is what LLaVA's ``model_vqa_loader`` reads for any benchmark; DualFocus asks it with TextVQA's
wording, without OCR assumptions. A row's `answers` list or `answer`, when present, is the gold
answer for the run summary. No launch script or official scorer: the run summary scores it.
"""

from __future__ import annotations

from collections.abc import Mapping

from dualfocus.benchmarks import records
from dualfocus.benchmarks.base import Benchmark, register
from dualfocus.benchmarks.textvqa import TextVQAProtocol
from dualfocus.focus.protocols import KNOWN_INSTRUCTIONS, FocusQuery, RecordError


class VQAProtocol(TextVQAProtocol):
    """The question is the whole text less a trailing answer-format line (LLaVA's files end with one,
    e.g. "Answer the question using a single word or phrase."), so a multi-line question reaches the
    box request whole. Candidates are scored under the micro question exactly as asked (no added
    short-answer wording: a generic question may want a long answer).
    """

    name = "vqa"

    def from_record(self, record: Mapping) -> FocusQuery:
        qid, text = records.question_text(record, "text", self.name)
        lines = text.split("\n")
        instruction = None
        if len(lines) > 1 and lines[-1].strip() in KNOWN_INSTRUCTIONS:
            instruction = lines[-1]
            lines = lines[:-1]
        question = "\n".join(lines).strip()
        if not question:
            raise RecordError(f"{self.name} record {qid!r}: empty question")
        return records.free_form_query(self, record, question, instruction)

    def score_prompt(self, q: FocusQuery) -> str:
        return self.micro_prompt(q)


@register
class VQABenchmark(Benchmark):
    name = "vqa"
    protocol_class = VQAProtocol
