"""Would another choice rule add what DualFocus's does not? An analysis of a zoom evaluation.

    python scripts/zoom/own_context_choice.py --model-path CKPT --data BENCH_DIR --eval EVAL_DIR

DualFocus scores both candidates in the *micro* conversation (box turn, then both images), so the
judge of the macro answer is the micro pass, which already answered greedily: with one-token
answers its own answer is close to the argmax of that very context. This script reads an
`evaluate` run's answers (EVAL_DIR/answers_<fmt>.jsonl, with each record's crop) and, on every
question where the two answers differ, scores each answer in *its own* pass's conversation:

    own     the macro answer's mean token loss after the macro prompt (whole image), the micro
            answer's after the micro conversation (whole image + crop); the lower one is chosen

and prints, per kind and format, how often each rule picked the right answer where exactly one
was right: DualFocus's (as recorded) and `own`. Not a rule the pipeline offers: a measurement.
Reference engine, one thread, deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dualfocus.benchmarks import get_benchmark, score_answer  # noqa: E402
from dualfocus.engine import build_engine  # noqa: E402
from dualfocus.engine.base import ScoringRequest  # noqa: E402
from dualfocus.eval.runner import read_question  # noqa: E402
from dualfocus.focus.protocols import USER  # noqa: E402
from dualfocus.focus.scoring import answer_example  # noqa: E402
from dualfocus.model.builder import load_pretrained_model  # noqa: E402


def own_losses(engine, protocol, q, meta: dict, image: Image.Image) -> tuple[float, float]:
    """(macro answer after the macro prompt, micro answer after the micro conversation)."""
    crop = image.crop(tuple(meta["crop"]))
    macro = answer_example(((USER, protocol.macro_prompt(q)),), meta["macro_answer"], engine.tokenizer)
    micro = answer_example(protocol.micro_messages(q, meta["box_text"]), meta["micro_answer"], engine.tokenizer)
    scores = engine.loglikelihood([ScoringRequest(*(t.tolist() for t in macro), [image]),
                                 ScoringRequest(*(t.tolist() for t in micro), [image, crop])])
    return scores[0].loss, scores[1].loss


def analyse(engine, data: Path, eval_dir: Path, fmt: str) -> dict[str, list[int]]:
    """kind -> [one right, DualFocus picked right, own picked right]."""
    bench = get_benchmark(fmt)
    rows = {r["question_id"]: r for r in map(json.loads, open(eval_dir / f"questions_{fmt}.jsonl"))}
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for record in map(json.loads, open(eval_dir / f"answers_{fmt}.jsonl")):
        meta, row = record.get("metadata") or {}, rows[record["question_id"]]
        macro, micro = meta.get("macro_answer"), meta.get("micro_answer")
        q = read_question(bench, row).query
        gold = bench.gold(row, q)
        if micro is None or macro == micro or score_answer(macro, gold) == score_answer(micro, gold):
            continue
        right = macro if score_answer(macro, gold) else micro
        with Image.open(data / row["image"]) as im:
            macro_loss, micro_loss = own_losses(engine, bench.protocol, q, meta, im.convert("RGB"))
        counts = out[row.get("kind", "local")]
        counts[0] += 1
        counts[1] += meta.get("answer") == right
        counts[2] += (micro if micro_loss < macro_loss else macro) == right
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--eval", required=True, type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tokenizer, model, processor, _ = load_pretrained_model(args.model_path, None, None, device="cpu")
    engine = build_engine("reference", model, tokenizer, processor)
    print("| kind | format | one right | DualFocus picked right | own-context loss picked right |\n|---|---|---|---|---|")
    for fmt in ("vqa", "seed"):
        for kind, (n, df, own) in analyse(engine, args.data, args.eval, fmt).items():
            print(f"| {kind} | {fmt} | {n} | {df} ({100 * df / n:.0f}%) | {own} ({100 * own / n:.0f}%) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
