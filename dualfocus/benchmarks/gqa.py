"""GQA as multiple choice: DualFocus's ``llava_gqa_testdev_balanced_mcq.jsonl``.

Rows hold `question_id`, `image` (under ``gqa/data/images``) and `question` = "question\\nA. ...";
the answer record's `text` is the chosen option's text (as the original writes it for GQA's
scorer). Gold answers, for the run summary: a row's `answer` (a letter or the option text), or
GQA's ``testdev_balanced_questions.json`` given as the annotation file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dualfocus.benchmarks import Benchmark, Gold
from dualfocus.focus.protocols import FocusQuery


class GQABenchmark(Benchmark):
    name = "gqa"

    def fallback_prompt(self, row: Mapping) -> str:
        text = row.get("question", row.get("text"))
        return text.split("\n")[0] if isinstance(text, str) else ""

    def load_annotations(self, path: str) -> dict[str, str]:
        """testdev_balanced_questions.json -> question id -> answer text."""
        with open(path, encoding="utf-8") as f:
            return {str(qid): q["answer"] for qid, q in json.load(f).items()}

    def gold(self, row: Mapping, query: FocusQuery, annotations: Any = None) -> Gold | None:
        if annotations is not None and str(query.question_id) in annotations:
            return self._as_gold(annotations[str(query.question_id)], query)
        return super().gold(row, query)
