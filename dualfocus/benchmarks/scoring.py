"""Helpers every scoring command shares: read answer records, print a per-category table,
write the numbers to JSON atomically."""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from dualfocus.files import EvalRunError, read_json_lines, write_atomic


@dataclass
class CategoryScore:
    """One row of a per-category table: `score` is a sum of per-question scores in [0, 1]."""

    name: str
    count: int = 0
    score: float = 0.0

    @property
    def accuracy(self) -> float:
        """Percent; 0.0 for an empty category (printed, never divided by zero)."""
        return 100.0 * self.score / self.count if self.count else 0.0

    def add(self, score: float) -> None:
        self.count += 1
        self.score += score

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy": self.accuracy}

    @classmethod
    def from_dict(cls, row: Mapping) -> CategoryScore:
        return cls(row["name"], row["count"], row["score"])


def tally(pairs: Iterable[tuple[str, float]]) -> list[CategoryScore]:
    """(category, score) pairs -> one CategoryScore per category, in first-seen order."""
    rows: dict[str, CategoryScore] = {}
    for name, score in pairs:
        rows.setdefault(name, CategoryScore(name)).add(score)
    return list(rows.values())


def format_table(title: str, rows: Iterable[CategoryScore], columns: Mapping[str, list[str]] | None = None) -> str:
    """A fixed-width table: name, count, accuracy, plus optional extra text columns keyed by row name."""
    rows = list(rows)
    extra = dict(columns or {})
    header = ["category", "n", "acc(%)", *extra]
    body = [
        [r.name, str(r.count), f"{r.accuracy:.2f}", *(extra[c][i] for c in extra)]
        for i, r in enumerate(rows)
    ]
    widths = [max(len(h), *(len(line[j]) for line in body)) if body else len(h) for j, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if j == 0 else f"{{:>{w}}}" for j, w in enumerate(widths))
    lines = [title, fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*line) for line in body]
    return "\n".join(lines)


def is_error(record: Mapping) -> bool:
    """An error record (the runner failed on that question) is scored as wrong."""
    return bool(record.get("error"))


def answer_text(record: Mapping) -> str:
    """The final answer of a record; '' for an error record or a missing/None text."""
    if is_error(record):
        return ""
    text = record.get("text")
    return text if isinstance(text, str) else ""


def qid_key(question_id) -> str:
    """Question ids compare as strings: SEED's json holds "101669", LLaVA's answers may hold 101669."""
    return str(question_id)


def read_jsonl(path: str, problem: str = "not a JSON line",
               hint: str = "merge shards with `python -m dualfocus.eval.merge` first") -> list:
    """Strict jsonl reader (use dualfocus.eval.merge.read_answers for raw shards): a line that is not
    JSON is a ValueError naming the line, the ``problem`` and what to do (``hint``)."""
    with open(path, encoding="utf-8") as f:
        return [value for _, value in read_json_lines(f, lambda n, e: ValueError(f"{path}:{n}: {problem} ({e.msg}); {hint}"))]


def scorer_parser(description: str, required: Mapping[str, str], optional: Mapping[str, str] = {},  # noqa: B006
                  output_json: str = "<result file stem>_score.json") -> argparse.ArgumentParser:
    """A scorer CLI's parser: flag -> help for its required and optional flags, then --output-json."""
    parser = argparse.ArgumentParser(description=description)
    for flag, text in required.items():
        parser.add_argument(flag, required=True, help=text)
    for flag, text in optional.items():
        parser.add_argument(flag, default=None, help=text)
    parser.add_argument("--output-json", default=None, help=f"default: {output_json}")
    return parser


def default_output_json(result_path: str, suffix: str = "_score.json") -> str:
    """Scores go beside the result file: answers/merge.jsonl -> answers/merge_score.json."""
    return os.path.splitext(result_path)[0] + suffix


def write_json_atomic(path: str, payload) -> None:
    """Write JSON all or nothing (a temporary file beside it, fsynced, moved into place); the mode
    follows the umask; a full disk raises `DiskFullError` with one clear message."""
    write_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


class ScoreInputError(Exception):
    """The result file cannot be scored as it is (an answer twice, ...); the message says why."""


def check_unique(records: Iterable[Mapping], key, what: str = "question") -> None:
    """Fail when two records share `key(record)`: a file scored directly (not through the checked
    merge) must not let the last of two answers silently win."""
    counts = Counter(key(r) for r in records)
    repeated = [k for k, n in counts.items() if n > 1]
    if repeated:
        shown = ", ".join(f"{k!r} x{counts[k]}" for k in repeated[:20])
        raise ScoreInputError(f"{len(repeated)} {what}(s) answered more than once: {shown}"
                              f"{' ...' if len(repeated) > 20 else ''}; merge the shards with "
                              "`python -m dualfocus.eval.merge --question-file ...` (it checks each is answered once)")


def cli_errors(prog: str):
    """Decorate a scorer's `main`: a result file it cannot score or a full disk -> one line, exit 1."""
    import functools

    def decorate(main):
        @functools.wraps(main)
        def wrapped(argv=None):
            try:
                return main(argv)
            except (ScoreInputError, EvalRunError) as e:
                raise SystemExit(f"{prog}: error: {e}") from None

        return wrapped

    return decorate
