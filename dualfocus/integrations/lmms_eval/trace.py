"""The DualFocus trace of every answer, one JSON line per request, beside lmms-eval's output.

lmms-eval keeps only the answer text per sample, so the trace (macro answer, box text, box, crop,
micro answer, losses, choice, fallback, error) goes to a side file keyed by task, split and doc id.
The file is replaced when a model instance first writes to it (one run, one file); with several
ranks each writes its own, ``NAME.rank<k>.jsonl``.
"""

from __future__ import annotations

import json
import os

from dualfocus.benchmarks import jsonable


def rank_path(path: str, rank: int, world_size: int) -> str:
    """``path`` for one process: unchanged on one rank, ``stem.rank<k>.ext`` on several."""
    if world_size <= 1:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}.rank{rank}{ext or '.jsonl'}"


class TraceWriter:
    """Appends trace records to `path`, truncating it on the first write; every line is flushed."""

    def __init__(self, path: str):
        self.path = path
        self._started = False

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a" if self._started else "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(jsonable(record), ensure_ascii=False) + "\n")
        self._started = True


def trace_record(task: str, split: str, doc_id: int, protocol: str | None, query, result=None,
                 error: str | None = None) -> dict:
    """One answer's line: where it comes from, what was asked, and the pipeline's trace."""
    record = {"task": task, "split": split, "doc_id": doc_id, "protocol": protocol,
              "question": getattr(query, "text", None)}
    if result is not None:
        record.update(text=result.text, metadata=result.metadata())
    else:
        record.update(text="", error=error)
    return record
