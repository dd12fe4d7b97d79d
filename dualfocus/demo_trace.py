"""The demo's trace lines and verdicts: one line per question (macro, box, micro, choice, final) and,
where the answer is known, the gold answer and RIGHT / WRONG, scored as the runner scores it."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SAMPLE_SEED = 0


def _short(text, width: int = 36) -> str:
    if text is None:
        return "-"
    text = repr(str(text))[1:-1]  # random weights write control characters: show them escaped
    return text if len(text) <= width else text[: width - 3] + "..."


Key = tuple[str, int]  # (question id, its occurrence): TextVQA's ids repeat per image, in file order


def keys(ids: Sequence) -> list[Key]:
    seen: Counter = Counter()
    out = []
    for qid in map(str, ids):
        out.append((qid, seen[qid]))
        seen[qid] += 1
    return out


@dataclass(frozen=True)
class Verdict:
    gold: str  # a letter for multiple choice; free form: the answer (TextVQA: the most given of its 10)
    score: float  # the runner's score_answer: 1 or 0 (TextVQA's VQA accuracy: 0, 0.3, ... 1)

    @property
    def right(self) -> bool:
        return self.score == 1.0

    @property
    def label(self) -> str:
        return "RIGHT" if self.right else "WRONG" if self.score == 0 else f"PARTLY ({self.score:.1f})"


def verdicts(benchmark_name: str, rows: Sequence[dict], records: Sequence[dict],
             annotations=None) -> dict[Key, Verdict]:
    """{(question id, occurrence): Verdict} for every question with a known answer, scored as the
    runner's accuracy scores it (an error record scores 0); the k-th record of an id answers its
    k-th question."""
    from dualfocus.benchmarks import get_benchmark, score_answer

    benchmark = get_benchmark(benchmark_name)
    by_key = dict(zip(keys([r["question_id"] for r in records]), records))
    queries = [benchmark.protocol.from_record(row) for row in rows]
    out = {}
    for row, query, key in zip(rows, queries, keys([q.question_id for q in queries])):
        gold = benchmark.gold(row, query, annotations)
        if gold is None:
            continue
        record = by_key.get(key, {})
        score = 0.0 if record.get("error") else score_answer(record.get("text"), gold)
        shown = gold if isinstance(gold, str) else Counter(gold).most_common(1)[0][0]
        out[key] = Verdict(shown, float(score))
    return out


def format_trace(records: Sequence[dict], verdicts: Mapping[Key, Verdict] | None = None) -> str:
    """One line per question: id, macro answer, box text -> parsed box, micro answer, choice, final,
    and with `verdicts` (keyed as `keys` keys `records`) the gold answer and RIGHT / WRONG."""
    lines = []
    for r, key in zip(records, keys([r["question_id"] for r in records])):
        m = r.get("metadata") or {}
        qid = f"{r['question_id']}" + (f"/r{r['round_id']}" if r.get("round_id") else "")
        verdict = (verdicts or {}).get(key)
        gold = f"  gold={verdict.gold}  {verdict.label}" if verdict else ""
        if r.get("error"):
            lines.append(f"  {qid:>8}  ERROR {r['error']}{gold}")
            continue
        box = m.get("box")
        box = "[" + ", ".join(f"{v:.2f}" for v in box) + "]" if box else f"no box ({m.get('fallback')})"
        lines.append(f"  {qid:>8}  macro={_short(m.get('macro_answer'))!s:<38} box={_short(m.get('box_text'), 24)} "
                     f"-> {box}  micro={_short(m.get('micro_answer'), 20)}  choice={m.get('choice')}  "
                     f"final={_short(r.get('text'), 20)}{gold}")
    return "\n".join(lines)


def draw_sample(judged: Mapping[Key, Verdict], k: int, seed: int = SAMPLE_SEED) -> list[Key]:
    """k questions: half right and half wrong answers (the rest from the other group when one runs
    short), each half drawn uniformly at random with `seed`; in question order."""
    right = [q for q, v in judged.items() if v.right]
    wrong = [q for q, v in judged.items() if not v.right]
    n_right = min(len(right), max((k + 1) // 2, k - len(wrong)))
    rng = random.Random(seed)
    picked = set(rng.sample(right, n_right)) | set(rng.sample(wrong, min(len(wrong), k - n_right)))
    return [q for q in judged if q in picked]
