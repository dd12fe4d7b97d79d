"""SEED-Bench (image): LLaVA's ``llava-seed-bench.jsonl`` (`question_id`, `image`, `text`).

Images are paths under the image folder (``SEED-Bench-image/<id>.jpg``; LLaVA's video questions
point at extracted frames, ``SEED-Bench-video-image/...``). Gold answers, for the run summary: a
row's `answer` letter, or ``SEED-Bench.json`` given as the annotation file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dualfocus.benchmarks import Benchmark, Gold
from dualfocus.focus.protocols import FocusQuery


class SeedBenchmark(Benchmark):
    name = "seed"

    def load_annotations(self, path: str) -> dict[str, str]:
        """SEED-Bench.json -> question_id (as a string) -> answer letter."""
        from dualfocus.eval.convert_seed_for_submission import load_annotation

        questions, _ = load_annotation(path)
        return {str(q["question_id"]): q["answer"] for q in questions}

    def gold(self, row: Mapping, query: FocusQuery, annotations: Any = None) -> Gold | None:
        if annotations is not None and str(query.question_id) in annotations:
            return self._as_gold(annotations[str(query.question_id)], query)
        return super().gold(row, query)
