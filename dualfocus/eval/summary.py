"""A run's summary: counts, errors, fallback rate, and the accuracy of each answer in the trace.

The accuracies are read from the trace each record keeps in `metadata`, so every ablation comes
from one run: macro (the first pass alone, plain LLaVA), micro (the micro answer where there is
one, else the macro answer), final (the answer written) and oracle (right when either the macro
or the micro answer is right: the ceiling of any choice rule).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dualfocus.benchmarks import Benchmark, score_answer
from dualfocus.eval.answers import match_records

ABLATIONS = ("macro", "micro", "final", "oracle")


@dataclass
class _Tally:
    answered: int = 0
    errors: int = 0
    ok: int = 0
    fallbacks: int = 0
    step_errors: int = 0  # a step failed but an answer stands (e.g. scoring)
    with_gold: int = 0
    choices: Counter = field(default_factory=Counter)
    scores: dict = field(default_factory=lambda: dict.fromkeys(ABLATIONS, 0.0))

    def count(self, record: Mapping) -> None:
        self.answered += 1
        meta = record.get("metadata") or {}
        if record.get("error"):
            self.errors += 1
            return
        self.ok += 1
        self.fallbacks += meta.get("fallback") is not None and meta.get("mode") != "macro"
        self.step_errors += bool(meta.get("error"))
        self.choices[str(meta.get("choice", "")).split(":")[0]] += 1

    def score(self, record: Mapping, gold) -> None:
        """Error records count as wrong (they are in `with_gold`, never in a score)."""
        self.with_gold += 1
        if record.get("error"):
            return
        meta = record.get("metadata") or {}
        macro = meta.get("macro_answer")
        micro = meta.get("micro_answer") if meta.get("micro_answer") is not None else macro
        macro_s, micro_s = score_answer(macro, gold), score_answer(micro, gold)
        self.scores["macro"] += macro_s
        self.scores["micro"] += micro_s
        self.scores["final"] += score_answer(meta.get("answer"), gold)
        self.scores["oracle"] += max(macro_s, micro_s)


def summarize(benchmark: Benchmark, questions: Sequence, records: Sequence[Mapping], annotations: Any = None) -> dict:
    """Counts and, where gold answers are known, the accuracy (%) of each answer in the trace.

    `questions`: the runner's `Question`s (row, key, query, prompt). Error records count as wrong.
    ``fallback_rate``: the share of answered questions without a micro pass.
    """
    matched = match_records([(q.key, q.prompt) for q in questions], records)
    tally = _Tally()
    for question, record in zip(questions, matched):
        if record is None:
            continue
        tally.count(record)
        gold = None if question.query is None else benchmark.gold(question.row, question.query, annotations)
        if gold is not None:
            tally.score(record, gold)
    n = tally.with_gold
    return {
        "benchmark": benchmark.name,
        "questions": len(questions),
        "answered": tally.answered,
        "errors": tally.errors,
        "step_errors": tally.step_errors,
        "fallbacks": tally.fallbacks,
        "fallback_rate": round(tally.fallbacks / tally.ok, 4) if tally.ok else None,
        "choices": dict(tally.choices),
        "stray_records": len(records) - tally.answered,  # in the file but not questions of this chunk
        "with_gold": n,
        "accuracy": {name: round(100.0 * s / n, 2) for name, s in tally.scores.items()} if n else None,
    }


def format_summary(summary: Mapping) -> str:
    """The summary as the lines printed at the end of a run."""
    lines = [
        f"{summary['benchmark']}: {summary['answered']}/{summary['questions']} questions answered "
        f"({summary.get('new', 0)} now, {summary.get('resumed_from', 0)} from an earlier run), "
        f"{summary['errors']} error(s)",
    ]
    if summary.get("retried"):
        lines.append(f"{summary['retried']} question(s) asked again after an error in an earlier run")
    if summary.get("step_errors"):
        lines.append(f"{summary['step_errors']} answer(s) kept the macro answer after a failed step "
                     "(metadata.error says which)")
    if summary.get("chunk"):
        lines.append(f"chunk {summary['chunk']}: {summary['answers_file']}")
    if summary["fallback_rate"] is not None:
        lines.append(f"fallback rate (no micro pass): {100 * summary['fallback_rate']:.1f}% "
                     f"({summary['fallbacks']} question(s))")
    if summary["choices"]:
        lines.append("choices: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["choices"].items())))
    if summary["accuracy"] is not None:
        acc = summary["accuracy"]
        lines.append(f"accuracy over {summary['with_gold']} question(s) with known answers: "
                     + ", ".join(f"{name} {acc[name]:.2f}%" for name in ABLATIONS))
    if summary.get("questions_per_s"):
        lines.append(f"{summary['questions_per_s']:.2f} questions/s over {summary['elapsed_s']:.1f} s")
    return "\n".join(lines)
