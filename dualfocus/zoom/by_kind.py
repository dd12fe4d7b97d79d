"""The zoom bench's metrics per question kind, and how DualFocus's choice between the two answers went.

A mixed bench (`python -m dualfocus.zoom.bench --kinds local,global`) tags every held-out question
with its `kind`: "local" (a sign's glyph: only the crop answers) or "global" (`global_kind`: only
the whole image answers). A row without the field is local (today's bench). `evaluate` scores
each kind on its own with the runner's own summary (`dualfocus.eval.summary.summarize` on the
kind's rows), so a kind's accuracies are computed exactly as the pooled ones, and adds the choice:

    agreed          the macro and micro answers were the same (nothing to choose)
    picked_macro    they differed and DualFocus answered the macro one
    picked_micro    they differed and DualFocus answered the micro one
    no_micro        there was no micro answer (fallback: the macro one stands)
    differed        they differed (picked_macro + picked_micro)
    one_right       they differed and exactly one of them was right (the choice decides)
    picked_right    ... and DualFocus picked that one; picked_right_rate = picked_right / one_right
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dualfocus.benchmarks import get_benchmark, score_answer
from dualfocus.eval.runner import read_question

KINDS = ("local", "global")
CHOICE_KEYS = ("agreed", "picked_macro", "picked_micro", "no_micro", "differed", "one_right", "picked_right")


def kind_of(row: Mapping) -> str:
    return row.get("kind", "local")


def first_of_each_kind(rows: Sequence[dict], limit: int | None) -> list[dict]:
    """The first `limit` rows of each kind, in file order (all rows when `limit` is None)."""
    if limit is None:
        return list(rows)
    seen: dict[str, int] = {}
    kept = []
    for row in rows:
        seen[kind_of(row)] = seen.get(kind_of(row), 0) + 1
        if seen[kind_of(row)] <= limit:
            kept.append(row)
    return kept


def by_kind(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """The rows of each kind present, in KINDS order."""
    out = {k: [r for r in rows if kind_of(r) == k] for k in KINDS}
    return {k: v for k, v in out.items() if v}


def choice_stats(fmt: str, rows: Sequence[dict], records: Sequence[Mapping]) -> dict:
    """How the choice went on these questions (module docstring); error records count nowhere."""
    bench = get_benchmark(fmt)
    by_id = {r["question_id"]: r for r in records}
    out = dict.fromkeys(CHOICE_KEYS, 0)
    for row in rows:
        record = by_id.get(row["question_id"])
        if record is None or record.get("error"):
            continue
        meta = record.get("metadata") or {}
        macro, micro, final = meta.get("macro_answer"), meta.get("micro_answer"), meta.get("answer")
        if micro is None:
            out["no_micro"] += 1
            continue
        if micro == macro:
            out["agreed"] += 1
            continue
        out["differed"] += 1
        out["picked_micro" if final == micro else "picked_macro"] += 1
        gold = bench.gold(row, read_question(bench, row).query)
        macro_s, micro_s = score_answer(macro, gold), score_answer(micro, gold)
        if macro_s != micro_s:
            out["one_right"] += 1
            out["picked_right"] += score_answer(final, gold) == max(macro_s, micro_s)
    return with_rate(out)


def with_rate(stats: Mapping) -> dict:
    rate = round(stats["picked_right"] / stats["one_right"], 4) if stats["one_right"] else None
    return {**{k: stats[k] for k in CHOICE_KEYS}, "picked_right_rate": rate}


def summed(per_format: Mapping[str, Mapping]) -> dict:
    """The choice counts over the formats."""
    return with_rate({k: sum(m["choice"][k] for m in per_format.values()) for k in CHOICE_KEYS})


def format_kind_table(result: Mapping) -> str:
    """The README's demo table: per kind and format (and each kind pooled) the accuracies, box IoU,
    fallback, which side the choice picked when the answers differed, and how often it picked right."""
    head = ("| kind | questions | n | macro | micro | DualFocus | oracle | box IoU | fallback | agreed | "
            "picked macro / micro | picked right when one was |")
    lines = [head, "|" + "---|" * 12]
    for kind, summary in result.get("kinds", {}).items():
        rows = [(m["format"], m) for m in summary["formats"].values()] + [("all", summary)]
        for name, m in rows:
            c = m["choice"]
            rate = "-" if c["picked_right_rate"] is None else f"{100 * c['picked_right_rate']:.0f}%"
            lines.append(f"| {kind} | {name} | {m['n']} | {m['accuracy_macro']:.1f} | {m['accuracy_micro']:.1f} | "
                         f"{m['accuracy_dualfocus']:.1f} | {m['accuracy_oracle']:.1f} | {m['mean_box_iou']:.3f} | "
                         f"{100 * m['fallback_rate']:.1f}% | {c['agreed']} | {c['picked_macro']} / "
                         f"{c['picked_micro']} | {c['picked_right']} of {c['one_right']} ({rate}) |")
    return "\n".join(lines)
