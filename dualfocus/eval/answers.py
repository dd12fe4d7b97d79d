"""The answer file: one JSON record per line, appended and flushed, under an exclusive lock.

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

from dualfocus.benchmarks import jsonable
from dualfocus.eval.files import (
    FileLock,
    disk_full,
    dumps_line,
    is_disk_full,
    remove_stale_temps,
    write_lines_atomic,
)
from dualfocus.eval.scoring_common import read_jsonl

log = logging.getLogger(__name__)


def answer_key(record: Mapping) -> tuple[str, int]:
    """How answers are counted: (question id as a string, round id); round 0 without one."""
    return str(record["question_id"]), int(record.get("round_id") or 0)


def is_error_record(record: Mapping) -> bool:
    return bool(record.get("error"))


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


def read_answer_file(path: str) -> list[dict]:
    """The records of an answer file; a line that is not an answer record is an error (loudly)."""
    if not os.path.exists(path):
        return []
    records = read_jsonl(path, "corrupt answer line", "move the file away or fix it before resuming")
    for lineno, record in enumerate(records, 1):
        if not isinstance(record, dict) or "question_id" not in record:
            raise ValueError(f"{path}: record {lineno}: not an answer record (no question_id)")
    return records


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
