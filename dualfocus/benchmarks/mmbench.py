"""MMBench: a TSV (`index`, `question`, `hint`, `A`..`D`, base64 `image`, `answer` on dev, ...).

Read with pandas as LLaVA reads it. ``all_rounds`` asks every question once per rotation of its
options (LLaVA's ``--all-rounds``: `index` unchanged, `round_id` = k); answers are then keyed by
(index, round_id). Answer records carry LLaVA's extra fields `round_id`, `options`, `option_char`
at the top level (the scorer and the merge read `round_id` there).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dualfocus.benchmarks import Benchmark, jsonable, option_texts
from dualfocus.focus.protocols import FocusQuery, mmbench_rotations


class MMBenchBenchmark(Benchmark):
    name = "mmbench"

    def __init__(self, all_rounds: bool = False, single_pred_prompt: bool = True, lang: str = "en"):
        super().__init__(single_pred_prompt=single_pred_prompt, lang=lang)
        self.all_rounds = all_rounds

    def read_questions(self, path: str) -> list[dict]:
        import pandas as pd

        frame = pd.read_table(os.path.expanduser(path))
        missing = {"index", "question", "A", "image"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: not an MMBench TSV, missing column(s) {sorted(missing)}")
        return [jsonable(row) for row in frame.to_dict(orient="records")]

    def expand(self, rows: list[dict]) -> list[dict]:
        if not self.all_rounds:
            return rows
        return [rotated for row in rows for rotated in mmbench_rotations(row)]

    def question_id(self, row: Mapping):
        return row.get("index")

    def round_id(self, row: Mapping) -> int:
        return int(row.get("round_id") or 0)

    def fallback_prompt(self, row: Mapping) -> str:
        return str(row.get("question", ""))

    def answer_fields(self, row: Mapping, query: FocusQuery | None) -> dict:
        options = list(query.option_texts) if query is not None else option_texts(row)
        letters = [chr(ord("A") + i) for i in range(len(options))]
        return {"round_id": self.round_id(row), "options": options,
                "option_char": list(row.get("option_char") or letters)}
