"""Score a checkpoint on the zoom bench's held-out questions with the real runner.

    python -m dualfocus.zoom.evaluate --model-path CKPT --data DIR --out OUT [--formats vqa seed]
        [--limit N] [--engine fast|reference] [--pictures K] [--selection original|candidate|macro|micro]

For each format (`vqa`: free form, DIR/test_vqa.jsonl; `seed`: multiple choice, DIR/test_seed.jsonl)
`dualfocus.eval.runner.run_eval` answers the questions (macro pass, box pass, crop, micro pass,
choice; greedy) into OUT/answers_<format>.jsonl. From the answers' traces and the question
files' gold answers and sign boxes:

    accuracy_macro      the first pass alone (plain LLaVA on the whole image)
    accuracy_micro      the micro answer (whole image + crop), the macro one where there is no crop
    accuracy_dualfocus  the answer DualFocus gives (the choice between the two)
    accuracy_oracle     right when either pass is right
    mean_box_iou        IoU of the box the model wrote with the sign's box (0 without a usable box)
    fallback_rate       share of questions without a usable box (no micro pass)
    n                   questions

per format and pooled over the formats, into OUT/summary.json; with `choice` (how the choice
between the two answers went: `by_kind`) and `kinds`: the same per question kind ("local",
"global": a mixed bench tags its rows; a row without a kind is local), each pooled and with its
own `formats`. --limit takes the first N questions of each kind in each format. `--pictures K` also draws the first
K questions of each format (`dualfocus.serve.visualize`: image, box, crop, both answers) into
OUT/pictures/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from dualfocus.benchmarks import get_benchmark
from dualfocus.benchmarks.scoring import write_json_atomic
from dualfocus.eval.runner import read_answer_file, read_question, run_eval
from dualfocus.eval.summary import summarize
from dualfocus.focus.protocols import SELECTION_HELP, SELECTIONS
from dualfocus.zoom.by_kind import by_kind, choice_stats, first_of_each_kind, format_kind_table, summed

FORMATS = ("vqa", "seed")
FORMAT_NAMES = {"vqa": "free form", "seed": "multiple choice (4 options)"}
MAX_NEW_TOKENS = 32  # the longest trained answer, a box, is 25 tokens with its </s>
METRICS = ("accuracy_macro", "accuracy_micro", "accuracy_dualfocus", "accuracy_oracle", "mean_box_iou",
           "fallback_rate")


def iou(a: Sequence[float] | None, b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when `a` is None."""
    if a is None:
        return 0.0
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def read_rows(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def format_metrics(rows: Sequence[dict], records: Sequence[dict], summary: Mapping) -> dict:
    """The metrics of one format from its question rows, answer records and runner summary."""
    by_id = {r["question_id"]: r for r in records}
    ious = [iou((by_id[row["question_id"]].get("metadata") or {}).get("box"), row["box"]) for row in rows]
    acc = summary["accuracy"]
    return {
        "n": len(rows),
        "accuracy_macro": acc["macro"], "accuracy_micro": acc["micro"],
        "accuracy_dualfocus": acc["final"], "accuracy_oracle": acc["oracle"],
        "mean_box_iou": round(sum(ious) / len(ious), 4),
        "fallback_rate": summary["fallback_rate"],
        "errors": summary["errors"],
        "choices": summary["choices"],
    }


def kind_metrics(fmt: str, rows: Sequence[dict], records: Sequence[dict]) -> dict:
    """One format's metrics on one kind's rows: the runner's summary of just those questions."""
    bench = get_benchmark(fmt)
    summary = summarize(bench, [read_question(bench, row) for row in rows], records)
    return {"format": FORMAT_NAMES[fmt], **format_metrics(rows, records, summary),
            "choice": choice_stats(fmt, rows, records)}


def pooled(per_format: Mapping[str, Mapping]) -> dict:
    """Question-weighted means over the formats."""
    n = sum(m["n"] for m in per_format.values())
    out = {"n": n}
    for key in METRICS:
        out[key] = round(sum(m[key] * m["n"] for m in per_format.values()) / n, 4 if "rate" in key or "iou" in key
                         else 2)
    return out


def evaluate(model_path: str, data_dir: str, out_dir: str, formats: Sequence[str] = FORMATS,
             limit: int | None = None, engine: str = "fast", batch_size: int = 16, device: str = "cpu",
             pictures: int = 0, progress: bool = False, selection: str = "original") -> dict:
    """Answer and score every format; returns (and writes to OUT/summary.json) the metrics.

    `selection` is the choice rule (`dualfocus.focus.protocols.SELECTIONS`): "original" as the
    release chooses, "candidate" by each candidate's own loss.
    """
    data, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_format = {}
    per_kind: dict[str, dict] = {}
    for fmt in formats:
        rows = first_of_each_kind(read_rows(data / f"test_{fmt}.jsonl"), limit)
        question_file = out / f"questions_{fmt}.jsonl"
        question_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        answers = out / f"answers_{fmt}.jsonl"
        answers.unlink(missing_ok=True)  # a fresh run, not a resume
        summary = run_eval(fmt, model_path, str(question_file), str(answers), image_folder=str(data),
                           max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size, device=device, engine=engine,
                           progress=progress, selection=selection)
        records = read_answer_file(str(answers))
        per_format[fmt] = {"format": FORMAT_NAMES[fmt], **format_metrics(rows, records, summary),
                           "choice": choice_stats(fmt, rows, records)}
        for kind, kind_rows in by_kind(rows).items():
            per_kind.setdefault(kind, {})[fmt] = kind_metrics(fmt, kind_rows, records)
        if pictures:
            draw_pictures(rows[:pictures], records, data, out / "pictures", fmt)
    result = {"model_path": str(model_path), "engine": engine, "selection": selection, "answers_dir": str(out),
              **pooled(per_format),
              "choice": summed(per_format), "formats": per_format,
              "kinds": {kind: {**pooled(f), "choice": summed(f), "formats": f} for kind, f in per_kind.items()}}
    write_json_atomic(str(out / "summary.json"), result)
    return result


def result_from_record(record: Mapping):
    """The `FocusResult` an answer record's trace describes (for pictures, without rerunning)."""
    from dualfocus.focus.pipeline import FocusResult

    names = {f.name for f in dataclasses.fields(FocusResult)} - {"question_id", "text", "extra"}
    meta = record.get("metadata") or {}
    return FocusResult(record["question_id"], text=record.get("text", ""),
                       **{k: v for k, v in meta.items() if k in names})


def draw_pictures(rows: Sequence[dict], records: Sequence[dict], data: Path, folder: Path, fmt: str) -> list[Path]:
    from PIL import Image

    from dualfocus.serve.visualize import save_visualization

    by_id = {r["question_id"]: r for r in records}
    paths = []
    for row in rows:
        record = by_id[row["question_id"]]
        if record.get("error"):
            continue
        with Image.open(data / row["image"]) as im:
            image = im.convert("RGB")
        question = f"{row['text']}\n(gold: {row['answer']}, sign box {[round(v, 3) for v in row['box']]})"
        paths.append(save_visualization(image, result_from_record(record), question,
                                        folder / f"{fmt}_{row['question_id']}.png"))
    return paths


def format_table(result: Mapping) -> str:
    """The metrics as a markdown table, one row per format and the pooled row."""
    head = "| questions | n | macro | micro | DualFocus | oracle | box IoU | fallback |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    rows = [(m["format"], m) for m in result["formats"].values()] + [("all", result)]
    for name, m in rows:
        lines.append(f"| {name} | {m['n']} | {m['accuracy_macro']:.1f} | {m['accuracy_micro']:.1f} | "
                     f"{m['accuracy_dualfocus']:.1f} | {m['accuracy_oracle']:.1f} | {m['mean_box_iou']:.3f} | "
                     f"{100 * m['fallback_rate']:.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dualfocus.zoom.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--data", required=True, help="a zoom bench directory (test_vqa.jsonl, test_seed.jsonl)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--limit", type=int, default=None, help="the first N questions of each format")
    parser.add_argument("--engine", default="fast", choices=("fast", "reference"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pictures", type=int, default=0)
    parser.add_argument("--selection", default="original", choices=SELECTIONS, help=SELECTION_HELP)
    args = parser.parse_args(argv)
    result = evaluate(args.model_path, args.data, args.out, args.formats, args.limit, args.engine, args.batch_size,
                      args.device, args.pictures, selection=args.selection)
    print(format_table(result))
    if set(result["kinds"]) != {"local"}:
        print("\n" + format_kind_table(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
