"""The built-in demo, on a CPU: DualFocus measured on the zoom bench, or the four benchmark formats.

    python -m dualfocus.demo [--zoom | --formats] [--output-dir demo_output] [--model-path CKPT]

The default is the zoom demo when its checkpoint is shipped, the four-format demo otherwise (it
says so).

--zoom: the shipped checkpoint `checkpoints/dualfocus-zoom-tiny` (a tiny LLaVA-1.5
trained from scratch with `dualfocus.train` by `scripts/train/train_zoom_toy.sh`; docs/zoom.md) answers
the held-out zoom-bench questions in `playground/zoom/` (signs whose glyphs cannot be read in the whole
image, only in a crop) with the real runner, free form and multiple choice. It prints the macro,
micro, DualFocus and oracle accuracy, the mean IoU of the boxes the model wrote and the fallback
rate, and writes them to DIR/summary.json (its "formats" keys: "vqa" free form, "seed" multiple
choice). Per format it draws 4 questions at random (seed 0), 2 answered right and 2 wrong, prints
their trace with the gold answer, and saves their pictures (image, predicted box, crop, both
answers) as DIR/pictures/{free_form,multiple_choice}_{RIGHT,WRONG}_<id>.png. --model-path runs
another checkpoint over the same questions.

--formats: the machinery over every benchmark format. Without --model-path it builds a tiny checkpoint
with RANDOM weights in LLaVA-1.5's original layout (its answers mean nothing: this run shows the
machinery, not the method's accuracy). For each benchmark format (SEED jsonl, MMBench TSV with base64
images, GQA-MCQ jsonl, TextVQA jsonl) it answers the questions in two shards with the fast engine,
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
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dualfocus.eval import merge
from dualfocus.eval.runner import run_eval
from dualfocus.mm_utils import get_model_name_from_path

REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "playground" / "demo"
ZOOM_DATA = REPO / "playground" / "zoom"
ZOOM_CHECKPOINT = REPO / "checkpoints" / "dualfocus-zoom-tiny"
ZOOM_PICTURES = 4  # questions drawn per format: half answered right, half wrong
SAMPLE_SEED = 0
FORMAT_LABELS = {"vqa": "free form", "seed": "multiple choice"}  # the zoom bench's formats, as printed
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


Key = tuple[str, int]  # (question id, its occurrence): TextVQA's ids repeat per image, in file order


def keys(ids: Sequence) -> list[Key]:
    seen: Counter = Counter()
    out = []
    for qid in map(str, ids):
        out.append((qid, seen[qid]))
        seen[qid] += 1
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


def _shown(path: Path) -> str:
    """A repository path as the user would type it from the repository root."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def zoom_shipped() -> bool:
    return (ZOOM_CHECKPOINT / "config.json").is_file() and (ZOOM_DATA / "test_vqa.jsonl").is_file()


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


def format_verdicts(benchmark: str, records: Sequence[dict], data: Path) -> dict[Key, Verdict]:
    """The --formats demo's verdicts: the benchmark's question file and annotations under `data`."""
    from dualfocus.benchmarks import get_benchmark

    question_file, annotation = FILES[benchmark]
    reader = get_benchmark(benchmark)
    annotations = reader.load_annotations(str(data / annotation)) if annotation else None
    return verdicts(benchmark, reader.read_questions(str(data / question_file)), records, annotations)


def draw_sample(judged: Mapping[Key, Verdict], k: int, seed: int = SAMPLE_SEED) -> list[Key]:
    """k questions: half right and half wrong answers (the rest from the other group when one runs
    short), each half drawn uniformly at random with `seed`; in question order."""
    right = [q for q, v in judged.items() if v.right]
    wrong = [q for q, v in judged.items() if not v.right]
    n_right = min(len(right), max((k + 1) // 2, k - len(wrong)))
    rng = random.Random(seed)
    picked = set(rng.sample(right, n_right)) | set(rng.sample(wrong, min(len(wrong), k - n_right)))
    return [q for q in judged if q in picked]


def draw_labelled(row: dict, record: dict, verdict: Verdict, data: Path, folder: Path, fmt: str) -> Path:
    """One question's picture; RIGHT / WRONG in its file name and under the question."""
    from PIL import Image

    from dualfocus.serve.visualize import save_visualization
    from dualfocus.zoom.evaluate import result_from_record

    with Image.open(data / row["image"]) as im:
        image = im.convert("RGB")
    question = (f"{row['text']}\n({verdict.label}: gold {verdict.gold}, DualFocus {record.get('text')!r}; "
                f"sign box {[round(v, 3) for v in row['box']]})")
    name = f"{FORMAT_LABELS[fmt].replace(' ', '_')}_{verdict.label}_{row['question_id']}.png"
    return save_visualization(image, result_from_record(record), question, folder / name)


def show_sample(fmt: str, out: Path, data: Path, k: int) -> list[Path]:
    """Print the trace of k sampled questions of one format (with gold) and draw their pictures."""
    from dualfocus.eval.runner import read_answer_file
    from dualfocus.zoom.evaluate import read_rows

    rows = read_rows(out / f"questions_{fmt}.jsonl")
    records = read_answer_file(str(out / f"answers_{fmt}.jsonl"))
    judged = verdicts(fmt, rows, records)
    picked = draw_sample(judged, k)
    n_right = sum(judged[q].right for q in picked)
    print(f"\n{FORMAT_LABELS[fmt]}: {len(picked)} of {len(rows)} questions, {n_right} answered right and "
          f"{len(picked) - n_right} wrong, each drawn at random (seed {SAMPLE_SEED}) from the right or the wrong "
          f"answers ({sum(v.right for v in judged.values())} of the {len(rows)} right in all)\n(macro, box, micro, choice, final, gold):")
    by_key = dict(zip(keys([r["question_id"] for r in records]), records))
    print(format_trace([by_key[key] for key in picked], judged))  # the zoom bench's ids are unique
    rows_by_key = dict(zip(keys([row["question_id"] for row in rows]), rows))
    return [draw_labelled(rows_by_key[key], by_key[key], judged[key], data, out / "pictures", fmt)
            for key in picked if not by_key[key].get("error")]


def run_zoom_demo(output_dir: str = "demo_output", model_path: str | None = None, engine: str = "fast",
                  batch_size: int = 16, device: str = "cpu", data_dir: str | None = None, limit: int | None = None,
                  pictures: int = ZOOM_PICTURES) -> dict:
    """The shipped zoom checkpoint (or `model_path`) over the held-out zoom questions; returns the summary.

    Writes DIR/summary.json (accuracy_macro, accuracy_micro, accuracy_dualfocus, accuracy_oracle,
    mean_box_iou, fallback_rate, n; pooled, and per format under "formats": "vqa" is free form,
    "seed" multiple choice), the answers (DIR/answers_{vqa,seed}.jsonl) and DIR/pictures/: per format
    `pictures` questions, half answered right and half wrong, drawn at random (`SAMPLE_SEED`).
    """
    from dualfocus.zoom.evaluate import evaluate, format_table

    started = time.perf_counter()
    out = Path(output_dir).resolve()
    data = Path(data_dir).resolve() if data_dir else ZOOM_DATA
    model_path = str(model_path or ZOOM_CHECKPOINT)
    if not (Path(model_path) / "config.json").is_file():
        raise FileNotFoundError(f"{model_path}: no checkpoint there (the zoom demo ships "
                                f"{ZOOM_CHECKPOINT}; scripts/train/train_zoom_toy.sh rebuilds it)")
    print(f"=== zoom bench: {data} with {model_path} ===\n"
          "Each question asks for the glyph on one coloured sign. In the whole image (896 px seen at 56) the glyph is a "
          "2 x 3 pixel smudge;\nin the crop around the sign it is 17 x 24 px and readable. macro = plain LLaVA on the "
          "whole image, micro = after the crop,\nDualFocus = the method's choice between them, oracle = either right.", flush=True)
    result = evaluate(model_path, str(data), str(out), limit=limit, engine=engine, batch_size=batch_size,
                      device=device)
    if (out / "pictures").is_dir():
        shutil.rmtree(out / "pictures")  # an earlier run's sample
    for fmt in result["formats"]:
        show_sample(fmt, out, data, pictures)
    print("\n" + format_table(result))
    result["elapsed_s"] = round(time.perf_counter() - started, 2)
    print(f"\nsummary: {out / 'summary.json'}; pictures (RIGHT / WRONG in their names): {out / 'pictures'}; "
          f"{result['elapsed_s']:.1f} s")
    return result


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
    if not args.zoom and not args.formats and not zoom_shipped():
        print(f"({_shown(ZOOM_CHECKPOINT)} is not shipped yet: running the four-format demo; "
              "scripts/train/train_zoom_toy.sh --ship builds the zoom checkpoint)", flush=True)
        args.formats = True
    if args.formats:
        return run_demo(args.output_dir, args.model_path, args.benchmarks, args.max_new_tokens,
                        args.batch_size or 4, args.device, args.engine)
    return run_zoom_demo(args.output_dir, args.model_path, args.engine, args.batch_size or 16, args.device,
                         limit=args.limit)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(sys.argv[1:])
