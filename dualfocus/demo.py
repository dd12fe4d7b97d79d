"""The built-in demo, on a CPU: DualFocus measured on the zoom bench, or the four benchmark formats.

    python -m dualfocus.demo [--zoom | --formats] [--output-dir demo_output] [--model-path CKPT]

The default is the zoom demo when its checkpoint is shipped, the four-format demo otherwise (it
says so).

--zoom: the shipped checkpoint `checkpoints/dualfocus-zoom-tiny` (a tiny LLaVA-1.5
trained from scratch with `dualfocus.train` by `scripts/train/train_zoom_mixed.sh`; docs/zoom.md) answers
the held-out zoom-bench questions in `playground/zoom/` with the real runner, free form and multiple
choice: local ones (a sign's glyph, which cannot be read in the whole image, only in a crop) and
global ones (counts, the empty corner: every sign is needed, a crop loses them). It prints the
macro, micro, DualFocus and oracle accuracy, the mean IoU of the boxes the model wrote and the
fallback rate, and writes them to DIR/summary.json (its "formats" keys: "vqa" free form, "seed"
multiple choice; "kinds": "local" and "global", each with the same keys and how the choice went).
Per kind and format it draws 4 questions at random (seed 0), 2 answered right and 2 wrong, prints
their trace with the gold answer, and saves their pictures (image, predicted box, crop, both
answers) as DIR/pictures/<kind>_{free_form,multiple_choice}_{RIGHT,WRONG}_<id>.png. --model-path runs
another checkpoint over the same questions.

--formats: the machinery over every benchmark format (each registered benchmark with demo data). Without --model-path it builds a tiny checkpoint
with RANDOM weights in LLaVA-1.5's original layout (its answers mean nothing: this run shows the
machinery, not the method's accuracy). For each benchmark format (SEED jsonl, MMBench TSV with base64
images, GQA-MCQ jsonl, TextVQA jsonl, ...) it answers the questions in two shards with the fast engine,
merges them with the completeness check, runs the benchmark's scorer, and prints each question's trace
(macro answer, box, micro answer, choice, final answer, gold answer) and the scores. Everything goes under --output-dir:

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

from dualfocus.benchmarks import BENCHMARK_NAMES, get_benchmark
from dualfocus.demo_trace import Key, Verdict, draw_sample, format_trace, verdicts
from dualfocus.demo_zoom import (
    FORMAT_LABELS,
    ZOOM_CHECKPOINT,
    ZOOM_DATA,
    ZOOM_PICTURES,
    run_zoom_demo,
    zoom_shipped,
)
from dualfocus.eval import merge
from dualfocus.eval.runner import run_eval
from dualfocus.mm_utils import get_model_name_from_path
from dualfocus.paths import DEMO_DATA, REPO

__all__ = ["FILES", "FORMAT_LABELS", "Key", "Verdict", "ZOOM_CHECKPOINT", "ZOOM_DATA", "ZOOM_PICTURES", "draw_sample",
           "format_trace", "main", "run_demo", "run_zoom_demo", "verdicts", "zoom_shipped"]

RANDOM_NAME = "llava-v1.5-tiny-random"
NUM_CHUNKS = 2


def demo_files(data: Path = DEMO_DATA) -> dict[str, tuple[str, str | None]]:
    """benchmark -> (question file, annotation file or None), under ``data``: every registered
    benchmark whose layout names demo data (``Layout.demo_split``)."""
    files = {}
    for name in BENCHMARK_NAMES:
        layout = get_benchmark(name).layout
        if layout is None or layout.demo_split is None:
            continue
        annotation = layout.annotation_file(str(data / layout.folder))
        files[name] = (f"{layout.folder}/{layout.demo_split}{layout.suffix}",
                       str(Path(annotation).relative_to(data)) if annotation else None)
    return files


FILES = demo_files()

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
    """The benchmark's official scorer on the merged answers (submission files under upload/)."""
    question_file, annotation = FILES[benchmark]
    return get_benchmark(benchmark).score_run(str(merged), str(data / question_file),
                                              str(data / annotation) if annotation else None,
                                              str(merged.parent / "upload" / benchmark))


def answer_shard(benchmark: str, model_path: str, data: Path, folder: Path, idx: int, **options) -> dict:
    """One of the NUM_CHUNKS runner shards over the benchmark's demo question file; its run summary."""
    question_file, annotation = FILES[benchmark]
    return run_eval(benchmark, model_path, str(data / question_file), str(folder / f"{NUM_CHUNKS}_{idx}.jsonl"),
                    image_folder=str(data / get_benchmark(benchmark).layout.demo_images), num_chunks=NUM_CHUNKS,
                    chunk_idx=idx, progress=False, annotation_file=str(data / annotation) if annotation else None,
                    **options, **({"all_rounds": False} if benchmark == "mmbench" else {}))


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
        question_file, _ = FILES[benchmark]
        folder = answers_root / benchmark / model_id
        print(f"\n=== {benchmark}: {data / question_file} ({NUM_CHUNKS} shards) ===", flush=True)
        summaries = [answer_shard(benchmark, model_path, data, folder, idx, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, device=device, engine=engine) for idx in range(NUM_CHUNKS)]
        shards = [str(folder / f"{NUM_CHUNKS}_{idx}.jsonl") for idx in range(NUM_CHUNKS)]
        records = merge.merge_answers(shards, merge.read_question_ids(str(data / question_file)))
        merged = folder / "merge.jsonl"
        merge.write_jsonl_atomic(str(merged), records)
        print(f"merged {len(records)} answers into {merged}\ntrace (macro, box, micro, choice, final, gold):")
        print(format_trace(records, format_verdicts(benchmark, records, data)))
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


def format_verdicts(benchmark: str, records: Sequence[dict], data: Path) -> dict[Key, Verdict]:
    """The --formats demo's verdicts: the benchmark's question file and annotations under `data`."""
    from dualfocus.benchmarks import get_benchmark

    question_file, annotation = FILES[benchmark]
    reader = get_benchmark(benchmark)
    annotations = reader.load_annotations(str(data / annotation)) if annotation else None
    return verdicts(benchmark, reader.read_questions(str(data / question_file)), records, annotations)


def _shown(path: Path) -> str:
    """A repository path as the user would type it from the repository root."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="demo_output")
    parser.add_argument("--model-path", default=None,
                        help=f"default: {_shown(ZOOM_CHECKPOINT)}; with --formats a tiny checkpoint "
                             "with RANDOM weights, built into the output folder")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--zoom", action="store_true", help="the zoom bench (the default when its checkpoint is "
                                                           f"shipped in {_shown(ZOOM_CHECKPOINT)})")
    which.add_argument("--formats", action="store_true",
                       help="the four benchmark formats (SEED, MMBench, GQA, TextVQA) with random weights (the "
                            "default while the zoom checkpoint is not shipped)")
    parser.add_argument("--benchmarks", nargs="+", default=list(FILES), choices=list(FILES), help="with --formats")
    parser.add_argument("--max_new_tokens", type=int, default=32,
                        help="with --formats: per pass (the benchmarks use 128; random weights never stop early)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16 (zoom), 4 (--formats)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engine", default="fast", choices=("fast", "reference"))
    parser.add_argument("--limit", type=int, default=None, help="zoom: the first N questions of each format")
    args = parser.parse_args(argv)
    if not args.zoom and not args.formats and not zoom_shipped(ZOOM_CHECKPOINT):
        print(f"({_shown(ZOOM_CHECKPOINT)} is not shipped yet: running the four-format demo; "
              "scripts/train/train_zoom_mixed.sh --ship builds the zoom checkpoint)", flush=True)
        args.formats = True
    if args.formats:
        return run_demo(args.output_dir, args.model_path, args.benchmarks, args.max_new_tokens,
                        args.batch_size or 4, args.device, args.engine)
    return run_zoom_demo(args.output_dir, args.model_path or ZOOM_CHECKPOINT, args.engine, args.batch_size or 16,
                         args.device, limit=args.limit)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(sys.argv[1:])
