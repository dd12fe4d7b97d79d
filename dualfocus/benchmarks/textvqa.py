"""TextVQA: LLaVA's ``llava_textvqa_val_v051_ocr.jsonl`` (`question_id` = the image id, `image`
under ``textvqa/train_images``, `text` = question, OCR tokens, answer-format line).

The question id repeats for questions about the same image; the runner therefore counts answers
per id rather than assuming ids are unique. Gold answers, for the run summary: a row's `answers`
list, or ``TextVQA_0.5.1_val.json`` given as the annotation file (matched as LLaVA's
eval_textvqa matches: image id and lower-cased question).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dualfocus.benchmarks import Benchmark, Gold
from dualfocus.focus.protocols import FocusQuery


class TextVQABenchmark(Benchmark):
    name = "textvqa"

    def load_annotations(self, path: str) -> dict:
        """TextVQA_0.5.1_val.json -> (image id, lower-cased question) -> the 10 human answers."""
        from dualfocus.eval.eval_textvqa import load_annotations

        by_image_question, _ = load_annotations(path)
        return {key: entry["answers"] for key, entry in by_image_question.items()}

    def gold(self, row: Mapping, query: FocusQuery, annotations: Any = None) -> Gold | None:
        if annotations is not None:
            answers = annotations.get((str(query.question_id), query.question.lower()))
            if answers:
                return list(answers)
        return super().gold(row, query)
