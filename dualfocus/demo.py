"""The built-in demo: the real runner, merge and scorers over `playground/demo/`, on a CPU, in seconds.

    python -m dualfocus.demo [--output-dir demo_output] [--model-path CKPT]

Without --model-path it builds a tiny checkpoint with RANDOM weights in LLaVA-1.5's original
layout (its answers mean nothing: the demo shows the machinery, not the method's accuracy). For
each benchmark format (SEED jsonl, MMBench TSV with base64 images, GQA-MCQ jsonl, TextVQA jsonl)
it answers the questions in two shards with the fast engine, merges them with the completeness
check, runs the benchmark's scorer, and prints each question's trace (macro answer, box, micro
answer, choice) and the scores. Everything goes under --output-dir:

    checkpoints/<name>, checkpoints/<name>-clip    the random checkpoint (reused when present)
    answers/<bench>/<name>/2_{0,1}.jsonl           the shards, as the eval scripts name them
    answers/<bench>/<name>/merge.jsonl             merged; scores and submission files beside it
    demo_summary.json                              run summaries and scores of every benchmark
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dualfocus.eval import merge
from dualfocus.eval.runner import run_eval
from dualfocus.mm_utils import get_model_name_from_path

DEMO_DATA = Path(__file__).resolve().parent.parent / "playground" / "demo"
RANDOM_NAME = "llava-v1.5-tiny-random"
NUM_CHUNKS = 2

# benchmark -> (question file, annotation file for the summary and the scorer), under DEMO_DATA.
FILES = {
    "seed": ("seed_bench/llava-seed-bench.jsonl", "seed_bench/SEED-Bench.json"),
    "mmbench": ("mmbench/mmbench_demo.tsv", None),  # the TSV holds the answers
    "gqa": ("gqa/llava_gqa_testdev_balanced_mcq.jsonl", "gqa/testdev_balanced_questions.json"),
    "textvqa": ("textvqa/llava_textvqa_val_v051_ocr.jsonl", "textvqa/TextVQA_0.5.1_val.json"),
}

BANNER = """\
################################################################################
#  DEMO CHECKPOINT WITH RANDOM WEIGHTS: its answers, boxes and scores MEAN       #
#  NOTHING. It shows the pipeline, runner, merge and scorers working end to end. #
#  Pass --model-path to run a trained checkpoint over the same files.           #
################################################################################"""


def build_random_checkpoint(out_dir: Path) -> Path:
    """The tiny random checkpoint (original layout), built once and reused."""
    ckpt = out_dir / "checkpoints" / RANDOM_NAME
    if not (ckpt / "config.json").exists():
        from dualfocus.tiny.checkpoint import build_tiny_checkpoint

        build_tiny_checkpoint(ckpt)
    return ckpt


def score(benchmark: str, merged: Path, data: Path) -> dict:
    """Run the benchmark's scorer on the merged answers; returns its result dict."""
    question_file, annotation = FILES[benchmark]
    folder = merged.parent
    if benchmark == "seed":
        from dualfocus.eval.convert_seed_for_submission import main as seed_main

        return seed_main(["--annotation-file", str(data / annotation), "--result-file", str(merged),
                          "--result-upload-file", str(folder / "upload" / "seed.jsonl")])
    if benchmark == "mmbench":
        return score_mmbench(data / question_file, merged)
    if benchmark == "gqa":
        from dualfocus.eval.convert_gqa_for_eval import main as gqa_main

        return gqa_main(["--src", str(merged), "--dst", str(folder / "testdev_balanced_predictions.json"),
                         "--questions", str(data / question_file), "--gqa-annotations", str(data / annotation)])
    from dualfocus.eval.eval_textvqa import main as textvqa_main

    return textvqa_main(["--annotation-file", str(data / annotation), "--result-file", str(merged)])[0]


def score_mmbench(tsv: Path, merged: Path) -> dict:
    """MMBench's converter: the submission xlsx, and local scores as the demo TSV has answers."""
    from dualfocus.eval import convert_mmbench_for_submission as mmb

    return mmb.main(["--annotation-file", str(tsv), "--result-dir", str(merged.parent),
                     "--upload-dir", str(merged.parent / "upload"), "--experiment", merged.stem])


def _short(text, width: int = 36) -> str:
    if text is None:
        return "-"
    text = repr(str(text))[1:-1]  # random weights write control characters: show them escaped
    return text if len(text) <= width else text[: width - 3] + "..."


def format_trace(records: Sequence[dict]) -> str:
    """One line per question: id, macro answer, box text -> parsed box, micro answer, choice, final."""
    lines = []
    for r in records:
        m = r.get("metadata") or {}
        qid = f"{r['question_id']}" + (f"/r{r['round_id']}" if r.get("round_id") else "")
        if r.get("error"):
            lines.append(f"  {qid:>8}  ERROR {r['error']}")
            continue
        box = m.get("box")
        box = "[" + ", ".join(f"{v:.2f}" for v in box) + "]" if box else f"no box ({m.get('fallback')})"
        lines.append(f"  {qid:>8}  macro={_short(m.get('macro_answer'))!s:<38} box={_short(m.get('box_text'), 24)} "
                     f"-> {box}  micro={_short(m.get('micro_answer'), 20)}  choice={m.get('choice')}  "
                     f"final={_short(r.get('text'), 20)}")
    return "\n".join(lines)


def run_demo(output_dir: str = "demo_output", model_path: str | None = None, benchmarks: Sequence[str] = tuple(FILES),
             max_new_tokens: int = 32, batch_size: int = 4, device: str = "cpu", engine: str = "fast",
             data_dir: str | None = None) -> dict:
    """Answer, merge and score every demo benchmark; returns {benchmark: {summary, score}}.

    `model_path` None builds the tiny random checkpoint into `output_dir`. Answers are rewritten on
    every run (the demo's answers folder is emptied first); the checkpoint is reused.
    """
    started = time.perf_counter()
    out = Path(output_dir).resolve()
    data = Path(data_dir).resolve() if data_dir else DEMO_DATA
    random_weights = model_path is None
    if random_weights:
        print(BANNER, flush=True)
        model_path = str(build_random_checkpoint(out))
    model_id = get_model_name_from_path(model_path)
    answers_root = out / "answers"
    if answers_root.exists():
        shutil.rmtree(answers_root)  # the demo's own answers from an earlier run
    results = {}
    for benchmark in benchmarks:
        question_file, annotation = FILES[benchmark]
        folder = answers_root / benchmark / model_id
        print(f"\n=== {benchmark}: {data / question_file} ({NUM_CHUNKS} shards) ===", flush=True)
        summaries = []
        for idx in range(NUM_CHUNKS):
            summaries.append(run_eval(
                benchmark, model_path, str(data / question_file), str(folder / f"{NUM_CHUNKS}_{idx}.jsonl"),
                image_folder=str(data), num_chunks=NUM_CHUNKS, chunk_idx=idx, max_new_tokens=max_new_tokens,
                batch_size=batch_size, device=device, engine=engine, progress=False,
                annotation_file=str(data / annotation) if annotation else None,
                **({"all_rounds": False} if benchmark == "mmbench" else {})))
        shards = [str(folder / f"{NUM_CHUNKS}_{idx}.jsonl") for idx in range(NUM_CHUNKS)]
        records = merge.merge_answers(shards, merge.read_question_ids(str(data / question_file)))
        merged = folder / "merge.jsonl"
        merge.write_jsonl_atomic(str(merged), records)
        print(f"merged {len(records)} answers into {merged}\ntrace (macro, box, micro, choice, final):")
        print(format_trace(records))
        print(f"--- {benchmark} scorer ---", flush=True)
        results[benchmark] = {"summaries": summaries, "score": score(benchmark, merged, data), "merged": str(merged)}
    summary = {"model_path": model_path, "random_weights": random_weights, "output_dir": str(out),
               "elapsed_s": round(time.perf_counter() - started, 2), "benchmarks": results}
    with open(out / "demo_summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False, default=str)
    print(f"\ndemo finished in {summary['elapsed_s']:.1f} s; everything is under {out}")
    if random_weights:
        print("(random weights: the numbers above say nothing about DualFocus)")
    return summary


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="demo_output")
    parser.add_argument("--model-path", default=None, help="default: build a tiny checkpoint with random weights")
    parser.add_argument("--benchmarks", nargs="+", default=list(FILES), choices=list(FILES))
    parser.add_argument("--max_new_tokens", type=int, default=32,
                        help="per pass (the benchmarks use 128; random weights never stop early)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engine", default="fast", choices=("fast", "reference"))
    args = parser.parse_args(argv)
    return run_demo(args.output_dir, args.model_path, args.benchmarks, args.max_new_tokens, args.batch_size,
                    args.device, args.engine)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(sys.argv[1:])
