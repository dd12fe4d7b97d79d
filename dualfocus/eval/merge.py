"""Merge shard answer files into one, checking that every question is answered exactly once.

    python -m dualfocus.eval.merge --inputs 'answers/ckpt/8_*.jsonl' --output answers/ckpt/merge.jsonl \
        [--question-file questions.jsonl | mmbench.tsv | seed.json]

- A shard's last line that is not valid JSON (a run killed mid-write) is dropped and reported; an
  invalid line anywhere else is corruption and fails.
- Fails (exit status 1, listing the ids) when a question id is answered more often than the
  question file asks it (once, without a question file), when a question file id has no answer,
  or when an answer's id is not in the question file.
- Ids compare as strings. A question file may repeat an id (LLaVA's TextVQA file uses the image id
  as question id), and then that many answers are expected. A record with a `round_id` (LLaVA's
  MMBench --all-rounds) is counted per (id, round); round 0 stands for the question.
- The output is written to a temporary file beside it and moved into place (os.replace).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable

from dualfocus.eval.scoring_common import qid_key


class MergeError(Exception):
    """The shards do not add up to the question set; the message lists the offending ids."""


def read_answers(path: str, report=print) -> list[dict]:
    """Answer records of one shard; a half-written last line is dropped and reported."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    records = []
    for k, (lineno, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "question_id" not in record:
                raise ValueError("not an answer record (no question_id)")
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            if k == len(numbered) - 1:
                report(f"{path}:{lineno}: dropped a half-written last line ({len(line)} chars: {line[:60]!r}...)")
                break
            raise MergeError(f"{path}:{lineno}: corrupt answer line in the middle of the shard: {e}") from e
        records.append(record)
    return records


def _answer_key(record: dict) -> tuple[str, int]:
    return qid_key(record["question_id"]), int(record.get("round_id") or 0)


def _list_ids(ids: Iterable[str], limit: int = 50) -> str:
    ids = sorted(ids, key=lambda s: (len(s), s))
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def merge_answers(paths: list[str], expected_ids: Iterable | None = None, report=print) -> list[dict]:
    """Concatenate shards in the given order; raise MergeError on duplicate, missing or unexpected ids.

    `expected_ids`: the question ids in the question file, repeats allowed (each repeat expects
    one more answer). None checks duplicates only."""
    records = [r for path in paths for r in read_answers(path, report=report)]
    counts = Counter(_answer_key(r) for r in records)
    allowed = Counter(qid_key(q) for q in expected_ids) if expected_ids is not None else None

    problems = []
    duplicates = {
        f"{qid}" + (f" (round {rnd})" if rnd else "") + f" x{n}"
        for (qid, rnd), n in counts.items()
        if n > (allowed.get(qid, 1) if allowed is not None else 1)
    }
    if duplicates:
        problems.append(f"{len(duplicates)} duplicated question id(s): {_list_ids(duplicates)}")
    if allowed is not None:
        answered = Counter({qid: n for (qid, rnd), n in counts.items() if rnd == 0})
        missing = {qid for qid, n in allowed.items() if answered.get(qid, 0) < n}
        unexpected = {qid for qid, _ in counts if qid not in allowed}
        if missing:
            problems.append(f"{len(missing)} question id(s) without an answer: {_list_ids(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} answer id(s) not in the question file: {_list_ids(unexpected)}")
    if problems:
        raise MergeError("cannot merge " + ", ".join(paths) + ":\n  " + "\n  ".join(problems))
    return records


def read_question_ids(path: str) -> list:
    """Question ids from a question file: jsonl (`question_id`), an MMBench TSV (`index`), or a
    json list of questions / a SEED-style {'questions': [...]} document."""
    if path.endswith(".tsv"):
        import pandas as pd

        return pd.read_table(path, usecols=["index"])["index"].tolist()
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        questions = data["questions"] if isinstance(data, dict) else data
        return [q["question_id"] for q in questions]
    from dualfocus.eval.benchmarks import read_question_lines

    return [_question_id(path, k, row) for k, row in enumerate(read_question_lines(path), 1)]


def _question_id(path: str, k: int, row: dict):
    if "question_id" not in row:
        raise MergeError(f"{path}: question {k} has no 'question_id' (its keys: {', '.join(sorted(row)) or 'none'}); "
                         "give the question file the runner answered")
    return row["question_id"]


def write_jsonl_atomic(path: str, records: Iterable[dict]) -> None:
    """Write records as jsonl to a temporary file in the same folder, then os.replace it into place."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".jsonl", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def expand_inputs(patterns: list[str]) -> list[str]:
    """Paths as given, globs expanded (sorted); a pattern that matches nothing is an error."""
    paths = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matched = sorted(glob.glob(pattern))
            if not matched:
                raise MergeError(f"no shard file matches {pattern!r}")
            paths += matched
        elif os.path.exists(pattern):
            paths.append(pattern)
        else:
            raise MergeError(f"no such shard file: {pattern}")
    return list(dict.fromkeys(paths))  # a file named twice is read once


def main(argv: list[str] | None = None) -> int:
    """Merge shard answer files into one jsonl, failing on duplicated or missing question ids."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--inputs", nargs="+", required=True, help="shard files or glob patterns")
    parser.add_argument("--output", required=True, help="merged jsonl to write")
    parser.add_argument("--question-file", default=None, help="jsonl / MMBench TSV / json question file to check against")
    args = parser.parse_args(argv)
    try:
        paths = [p for p in expand_inputs(args.inputs) if os.path.abspath(p) != os.path.abspath(args.output)]
        expected = read_question_ids(args.question_file) if args.question_file else None
        records = merge_answers(paths, expected)
    except MergeError as e:
        print(f"merge failed: {e}", file=sys.stderr)
        return 1
    write_jsonl_atomic(args.output, records)
    errors = sum(bool(r.get("error")) for r in records)
    print(f"merged {len(records)} answer(s) from {len(paths)} shard(s) into {args.output}"
          + (f" ({errors} error record(s))" if errors else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
