"""A generic LLaVA question file (`question_id`, `image`, `text`): free-form answers.

This is what LLaVA's ``model_vqa_loader`` reads for any benchmark; DualFocus asks it with the
`vqa` protocol (TextVQA's wording, no OCR assumptions). A row's `answers` list or `answer`, when
present, is the gold answer for the run summary.
"""

from __future__ import annotations

from dualfocus.benchmarks import Benchmark


class VQABenchmark(Benchmark):
    name = "vqa"
