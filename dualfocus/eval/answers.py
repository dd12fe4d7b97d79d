"""The answer file, one owner: its records, their keys, reading, writing.

One JSON record per line, appended and flushed, under an exclusive lock.

**A half-written last line** (the one policy, for every reader): a line is whole once its newline
is written. The bytes after the file's last newline are a half-written last line (a run killed
mid-write), never a record, even when they parse as JSON. `read_answers` returns them apart
(`AnswerFile.partial`); what to do with them is the caller's: the runner's `AnswerWriter` cuts
them before appending (`repair_last_line`), `merge` drops and reports them when a question file
tells what is missing (else it fails), and `read_answer_file` (a finished file) fails. A whole
line that is not a JSON answer record (an object with a `question_id`) is corruption, anywhere.

- `answer_record` builds a record: LLaVA's fields, the benchmark's, the DualFocus trace (or the
  error) in `metadata`; `answer_key` is how records are counted;
- `AnswerWriter` opens it for a run: takes the lock (a second runner on the same file fails naming
  the holder), cuts a half-written last line (a run killed mid-write), and, unless error records
  are to be kept, rewrites the file atomically without them so that their questions are asked
  again and never count twice;
- `match_records` says which record answers which question: per (question id, round id), a record
  whose prompt is the question's prompt first, then the rest in file order (TextVQA repeats ids:
  one id per image, so the count alone cannot say which question an appended retry answers).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dualfocus.benchmarks import Benchmark, jsonable
from dualfocus.benchmarks.scoring import is_error as is_error_record
from dualfocus.files import (
    FileLock,
    disk_full,
    dumps_line,
    is_disk_full,
    read_json_lines,
    remove_stale_temps,
    write_lines_atomic,
)

log = logging.getLogger(__name__)


class AnswerFileError(ValueError):
    """An answer file that cannot be read as answer records; the message names the line."""


def answer_key(record: Mapping) -> tuple[str, int]:
    """How answers are counted: (question id as a string, round id); round 0 without one."""
    return question_key(record["question_id"], record.get("round_id"))


def question_key(question_id, round_id=None) -> tuple[str, int]:
    """Ids compare as strings (SEED's json holds "101669", LLaVA's answers may hold 101669)."""
    return str(question_id), int(round_id or 0)


def answer_record(benchmark: Benchmark, row: Mapping, query, *, model_id: str, trace: Mapping, text: str = "",
                  error: str | None = None) -> dict:
    """LLaVA's answer record plus the benchmark's fields; `trace` (and the record's extra fields) in
    `metadata`. `query` is None when the row could not be read; an `error` record has empty text."""
    import shortuuid

    return {
        "question_id": benchmark.question_id(row),
        "prompt": query.prompt if query is not None else benchmark.fallback_prompt(row),
        "text": text,
        **({"error": error} if error is not None else {}),
        "answer_id": shortuuid.uuid(),
        "model_id": model_id,
        **benchmark.answer_fields(row, query),
        "metadata": with_extra(trace, query.extra if query is not None else {}),
    }


def with_extra(trace: Mapping, extra: Mapping) -> dict:
    """The trace plus the record's extra fields; an extra field named like a trace field gets a
    ``record_`` prefix (MMBench's gold ``answer`` -> ``record_answer``: the trace's ``answer`` stays)."""
    out = dict(trace)
    for key, value in extra.items():
        out[f"record_{key}" if key in trace else key] = value
    return out


class AnswerWriter:
    """An answer jsonl opened for appending, one flushed line per record, locked while open.

    `existing`: the records kept from earlier runs; `dropped`: the error records removed to be
    retried (none when `retry_failed` is False: then error records count as answered).
    """

    def __init__(self, path: str, retry_failed: bool = True):
        self.path = os.path.expanduser(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._lock = FileLock(self.path)
        try:
            remove_stale_temps(self.path)  # a rewrite cut short by a kill; the answers file is whole
            self.repaired = repair_last_line(self.path)
            self.existing = read_answer_file(self.path)
            self.dropped = [r for r in self.existing if is_error_record(r)] if retry_failed else []
            if self.dropped:
                self.existing = [r for r in self.existing if not is_error_record(r)]
                write_lines_atomic(self.path, self.existing)
            self._file = open(self.path, "a", encoding="utf-8")  # created even when nothing is written
        except BaseException:
            self._lock.release()
            raise

    def write(self, record: Mapping) -> None:
        try:
            self._file.write(dumps_line(jsonable(record)))  # NaN -> null: strict JSON
            self._file.flush()
        except OSError as e:
            raise (disk_full(self.path, e) if is_disk_full(e) else e) from e

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as e:  # the last flush can hit a full disk too
            if not is_disk_full(e):
                raise
        finally:
            self._lock.release()

    def __enter__(self) -> AnswerWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def repair_last_line(path: str) -> int:
    """Cut a file that does not end with a newline back to its last newline; returns bytes removed."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep = _last_line_start(f, size)
        f.truncate(keep)
    log.warning("%s: removed a half-written last line (%d bytes)", path, size - keep)
    return size - keep


def _last_line_start(f, size: int, block: int = 1 << 16) -> int:
    """The offset just after the last newline (0 if none), reading backwards in blocks."""
    end = size
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        cut = f.read(end - start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


@dataclass
class AnswerFile:
    """An answer file as read: its records, and the half-written last line apart ('' when none)."""

    path: str
    records: list[dict]
    partial: str = ""
    partial_lineno: int = 0


def read_answers(path: str) -> AnswerFile:
    """The records of an answer file and its half-written last line, apart (see the module's policy)."""
    with open(path, encoding="utf-8", newline="") as f:
        whole, newline, partial = f.read().rpartition("\n")
    lines = whole.split("\n") if newline else []
    records = [_answer_record(path, n, value) for n, value in read_json_lines(lines, lambda n, e: AnswerFileError(
        f"{path}:{n}: corrupt answer line ({e.msg}); move the file away or fix it before resuming"))]
    return AnswerFile(path, records, partial, len(lines) + 1 if partial else 0)


def _answer_record(path: str, lineno: int, record) -> dict:
    if not isinstance(record, dict) or "question_id" not in record:
        raise AnswerFileError(f"{path}:{lineno}: not an answer record (no question_id)")
    return record


def read_answer_file(path: str) -> list[dict]:
    """The records of a finished answer file ([] when there is none); a half-written last line fails."""
    if not os.path.exists(path):
        return []
    answers = read_answers(path)
    if answers.partial:
        raise AnswerFileError(f"{path}:{answers.partial_lineno}: half-written last line (a killed run); rerun "
                              "the same command to finish the file (it cuts that line first)")
    return answers.records


def match_records(questions: Sequence[tuple[tuple[str, int], str]], records: Sequence[Mapping]) -> list:
    """For each (key, prompt) question, the record that answers it, or None; each record used once.

    Within a key, a record with the question's prompt wins; the rest pair up in order."""
    pools: dict[tuple[str, int], list[Mapping]] = {}
    for record in records:
        pools.setdefault(answer_key(record), []).append(record)
    matched: list = [None] * len(questions)
    for i, (key, prompt) in enumerate(questions):
        pool = pools.get(key)
        same = [r for r in pool if r.get("prompt") == prompt] if pool else []
        if same:
            matched[i] = same[0]
            pool.remove(same[0])
    for i, (key, _) in enumerate(questions):
        pool = pools.get(key)
        if matched[i] is None and pool:
            matched[i] = pool.pop(0)
    return matched
