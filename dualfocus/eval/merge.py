"""Merge shard answer files into one, checking that every question is answered exactly once.

    python -m dualfocus.eval.merge --inputs 'answers/ckpt/8_*.jsonl' --output answers/ckpt/merge.jsonl \
        [--question-file questions.jsonl | mmbench.tsv | seed.json]

- A shard's half-written last line (the bytes after its last newline: a run killed mid-write; the
  policy of `dualfocus.eval.answers`) is dropped and reported when a question file checks what is
  missing; without one it fails (the lost answer would go unnoticed). An invalid line anywhere else
  is corruption and fails.
- Fails (exit status 1, listing the ids) when a question id is answered more often than the
  question file asks it (once, without a question file), when a question file id has no answer,
  or when an answer's id is not in the question file; without a question file, when shards named
  N_i.jsonl do not include every i < N.
- Ids compare as strings. A question file may repeat an id (LLaVA's TextVQA file uses the image id
  as question id), and then that many answers are expected. A record with a `round_id` (LLaVA's
  MMBench --all-rounds) is counted per (id, round); round 0 stands for the question. Against an
  MMBench TSV, answers with a round above 0 mean every rotation of every question was asked: each
  is then expected once.
- The output is written atomically (see `dualfocus.files`).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable

from dualfocus.eval import answers
from dualfocus.eval.answers import answer_key, question_key
from dualfocus.files import EvalRunError, write_lines_atomic


class MergeError(Exception):
    """The shards do not add up to the question set; the message lists the offending ids."""


def read_answers(path: str, report=print, cut_ok: bool = True) -> list[dict]:
    """Answer records of one shard, read by `dualfocus.eval.answers.read_answers` (its policy: the
    bytes after the last newline are a half-written line, never a record); that line is dropped and
    reported (`cut_ok`), or fails. A corrupt line anywhere else fails."""
    try:
        shard = answers.read_answers(path)
    except answers.AnswerFileError as e:
        raise MergeError(f"{e} (in the middle of the shard)") from e
    if shard.partial and not cut_ok:
        raise MergeError(f"{path}:{shard.partial_lineno}: half-written last line (a killed run): rerun that shard "
                         "to finish it, or merge with --question-file to check what is missing")
    if shard.partial:
        report(f"{path}:{shard.partial_lineno}: dropped a half-written last line ({len(shard.partial)} chars: "
               f"{shard.partial[:60]!r}...)")
    return shard.records


def _list_ids(ids: Iterable[str], limit: int = 50) -> str:
    ids = sorted(ids, key=lambda s: (len(s), s))
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def merge_answers(paths: list[str], expected_ids: Iterable | None = None, report=print,
                  expected: Counter | None = None) -> list[dict]:
    """Concatenate shards in the given order; raise MergeError on duplicate, missing or unexpected ids.

    `expected_ids`: the question ids in the question file, repeats allowed (each repeat expects
    one more answer); or `expected`: (id, round) -> how many answers (`expected_keys`). Neither:
    duplicates only, and a half-written last line fails."""
    if expected is None and expected_ids is not None:
        expected = Counter(question_key(q) for q in expected_ids)
    records = [r for path in paths for r in read_answers(path, report=report, cut_ok=expected is not None)]
    problems = merge_problems(Counter(answer_key(r) for r in records), expected)
    if problems:
        raise MergeError("cannot merge " + ", ".join(paths) + ":\n  " + "\n  ".join(problems))
    return records


def _show(key: tuple[str, int], n: int | None = None) -> str:
    qid, rnd = key
    return qid + (f" (round {rnd})" if rnd else "") + (f" x{n}" if n is not None else "")


def merge_problems(counts: Counter, expected: Counter | None) -> list[str]:
    """What is wrong with answer counts per (id, round) against the expected ones (None: unknown).

    Rounds above 0 are checked one by one only when `expected` lists them (an MMBench TSV asked
    with --all-rounds); otherwise only their question id must be expected."""
    allowed = expected if expected is not None else Counter()
    duplicates = {_show(k, n) for k, n in counts.items() if n > allowed.get(k, 1)}
    problems = [f"{len(duplicates)} duplicated question id(s): {_list_ids(duplicates)}"] if duplicates else []
    if expected is None:
        return problems
    ids = {qid for qid, _ in expected}
    rounds_listed = any(rnd for _, rnd in expected)
    missing = {_show(k) for k, n in expected.items() if counts.get(k, 0) < n}
    unexpected = {_show(k) for k in counts if k[0] not in ids or (rounds_listed and k not in expected)}
    if missing:
        problems.append(f"{len(missing)} question id(s) without an answer: {_list_ids(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} answer id(s) not in the question file: {_list_ids(unexpected)}")
    return problems


def expected_keys(path: str, all_rounds: bool = False) -> Counter:
    """(id, round) -> answers expected, from a question file; an MMBench TSV with `all_rounds`
    expects every rotation of each question (as the runner's --all-rounds asks them)."""
    if path.endswith(".tsv") and all_rounds:
        from dualfocus.benchmarks import get_benchmark

        bench = get_benchmark("mmbench", all_rounds=True)
        return Counter(question_key(r["index"], r["round_id"]) for r in bench.expand(bench.read_questions(path)))
    return Counter(question_key(q) for q in read_question_ids(path))


def missing_shards(paths: list[str]) -> list[str]:
    """Shards named N_i.jsonl (the launch scripts' names) whose siblings N_j, j < N, are absent."""
    found: dict[tuple[str, int], set[int]] = {}
    for path in paths:
        match = re.fullmatch(r"(\d+)_(\d+)\.jsonl", os.path.basename(path))
        if match:
            found.setdefault((os.path.dirname(path), int(match.group(1))), set()).add(int(match.group(2)))
    return [os.path.join(folder, f"{n}_{i}.jsonl") for (folder, n), have in sorted(found.items())
            for i in range(n) if i not in have]


def read_question_ids(path: str) -> list:
    """Question ids from a question file: jsonl (`question_id`), an MMBench TSV (`index`), or a
    json list of questions / a SEED-style {'questions': [...]} document."""
    if path.endswith(".tsv"):
        import pandas as pd

        columns = pd.read_table(path, nrows=0).columns
        if "index" not in columns:
            raise MergeError(f"{path}: no 'index' column (its columns: {', '.join(map(str, columns))}); "
                             "give the MMBench TSV the runner answered")
        return pd.read_table(path, usecols=["index"])["index"].tolist()
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        questions = data["questions"] if isinstance(data, dict) else data
        return [_question_id(path, k, q) for k, q in enumerate(questions, 1)]
    from dualfocus.benchmarks import read_question_lines

    return [_question_id(path, k, row) for k, row in enumerate(read_question_lines(path), 1)]


def _question_id(path: str, k: int, row: dict):
    if not isinstance(row, dict) or "question_id" not in row:
        raise MergeError(f"{path}: question {k} has no 'question_id' (its keys: {', '.join(sorted(row)) if isinstance(row, dict) else 'none'}); "
                         "give the question file the runner answered")
    return row["question_id"]


write_jsonl_atomic = write_lines_atomic  # the name merge's callers know; one atomic writer (files.py)


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
        records = merge_checked(paths, args.question_file)
        write_jsonl_atomic(args.output, records)
    except (MergeError, EvalRunError) as e:
        print(f"merge failed: {e}", file=sys.stderr)
        return 1
    errors = sum(bool(r.get("error")) for r in records)
    print(f"merged {len(records)} answer(s) from {len(paths)} shard(s) into {args.output}"
          + (f" ({errors} error record(s))" if errors else ""))
    return 0


def merge_checked(paths: list[str], question_file: str | None) -> list[dict]:
    """`merge_answers` against the question file, or, without one, with every N_i shard required."""
    if question_file is None:
        absent = missing_shards(paths)
        if absent:
            raise MergeError(f"{len(absent)} shard file(s) missing: {', '.join(absent)} (a shard that never "
                             "started?); rerun it, or give --question-file to check the answers instead")
        return merge_answers(paths)
    records = [r for path in paths for r in read_answers(path, report=lambda m: None)]  # peek: rounds asked?
    all_rounds = any(answer_key(r)[1] > 0 for r in records)
    return merge_answers(paths, expected=expected_keys(question_file, all_rounds))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
