"""The zoom demo: the shipped zoom checkpoint over the held-out zoom-bench questions, with a labelled
sample of pictures (`python -m dualfocus.demo --zoom`)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from dualfocus.demo_trace import SAMPLE_SEED, Verdict, draw_sample, format_trace, keys, verdicts
from dualfocus.paths import ZOOM_CHECKPOINT, ZOOM_DATA
from dualfocus.zoom.by_kind import by_kind, format_kind_table, kind_of

ZOOM_PICTURES = 4  # questions drawn per format and kind: half answered right, half wrong
FORMAT_LABELS = {"vqa": "free form", "seed": "multiple choice"}  # the zoom bench's formats, as printed
INTRO = ("Local questions ask for the glyph on one coloured sign. In the whole image (896 px seen at 56) the glyph is "
         "a 2 x 3 pixel smudge;\nin the crop around the sign it is 17 x 24 px and readable.")
INTRO_GLOBAL = ("\nGlobal questions (count the signs, count one colour, name the empty corner) need every sign; a crop "
                "around one sign loses them.")
INTRO_PASSES = ("\nmacro = plain LLaVA on the whole image, micro = after the crop, DualFocus = the method's choice "
                "between them, oracle = either right.")


def bench_kinds(data: Path) -> list[str]:
    """The question kinds a zoom bench directory holds (its manifest's `kinds`; a local-only bench has none)."""
    manifest = data / "manifest.json"
    return json.loads(manifest.read_text()).get("kinds", ["local"]) if manifest.is_file() else ["local"]


def zoom_shipped(checkpoint: Path = ZOOM_CHECKPOINT) -> bool:
    return (checkpoint / "config.json").is_file() and (ZOOM_DATA / "test_vqa.jsonl").is_file()


def draw_labelled(row: dict, record: dict, verdict: Verdict, data: Path, folder: Path, fmt: str) -> Path:
    """One question's picture; its kind, RIGHT / WRONG in its file name and under the question."""
    from PIL import Image

    from dualfocus.serve.visualize import save_visualization
    from dualfocus.zoom.evaluate import result_from_record

    with Image.open(data / row["image"]) as im:
        image = im.convert("RGB")
    kind = kind_of(row)
    region = "sign box" if kind == "local" else "evidence box"
    question = (f"{row['text']}\n({verdict.label}: gold {verdict.gold}, DualFocus {record.get('text')!r}; "
                f"{region} {[round(v, 3) for v in row['box']]})")
    name = f"{kind}_{FORMAT_LABELS[fmt].replace(' ', '_')}_{verdict.label}_{row['question_id']}.png"
    return save_visualization(image, result_from_record(record), question, folder / name)


def show_samples(fmt: str, out: Path, data: Path, k: int) -> list[Path]:
    """Per question kind, print the trace of k sampled questions of one format and draw their pictures."""
    from dualfocus.eval.runner import read_answer_file
    from dualfocus.zoom.evaluate import read_rows

    records = read_answer_file(str(out / f"answers_{fmt}.jsonl"))
    kinds = by_kind(read_rows(out / f"questions_{fmt}.jsonl"))
    return [p for kind, rows in kinds.items()
            for p in show_sample(fmt, f"{kind} {FORMAT_LABELS[fmt]}" if len(kinds) > 1 else FORMAT_LABELS[fmt],
                                 rows, records, out, data, k)]


def show_sample(fmt: str, title: str, rows: list[dict], records: list[dict], out: Path, data: Path,
                k: int) -> list[Path]:
    """Print the trace of k sampled questions (with gold) and draw their pictures."""
    judged = verdicts(fmt, rows, records)
    picked = draw_sample(judged, k)
    n_right = sum(judged[q].right for q in picked)
    print(f"\n{title}: {len(picked)} of {len(rows)} questions, {n_right} answered right and "
          f"{len(picked) - n_right} wrong, each drawn at random (seed {SAMPLE_SEED}) from the right or the wrong "
          f"answers ({sum(v.right for v in judged.values())} of the {len(rows)} right in all)\n(macro, box, micro, choice, final, gold):")
    by_key = dict(zip(keys([r["question_id"] for r in records]), records))
    print(format_trace([by_key[key] for key in picked], {key: judged[key] for key in picked}))  # the zoom bench's ids are unique
    rows_by_key = dict(zip(keys([row["question_id"] for row in rows]), rows))
    return [draw_labelled(rows_by_key[key], by_key[key], judged[key], data, out / "pictures", fmt)
            for key in picked if not by_key[key].get("error")]


def run_zoom_demo(output_dir: str = "demo_output", model_path: str | None = None, engine: str = "fast",
                  batch_size: int = 16, device: str = "cpu", data_dir: str | None = None, limit: int | None = None,
                  pictures: int = ZOOM_PICTURES) -> dict:
    """The shipped zoom checkpoint (or `model_path`) over the held-out zoom questions; returns the summary.

    Writes DIR/summary.json (accuracy_macro, accuracy_micro, accuracy_dualfocus, accuracy_oracle,
    mean_box_iou, fallback_rate, n; pooled, per format under "formats": "vqa" is free form, "seed"
    multiple choice, and per question kind under "kinds"), the answers (DIR/answers_{vqa,seed}.jsonl)
    and DIR/pictures/: per kind and format `pictures` questions, half answered right and half wrong,
    drawn at random (`SAMPLE_SEED`).
    """
    from dualfocus.zoom.evaluate import evaluate, format_table

    started = time.perf_counter()
    out = Path(output_dir).resolve()
    data = Path(data_dir).resolve() if data_dir else ZOOM_DATA
    model_path = str(model_path or ZOOM_CHECKPOINT)
    if not (Path(model_path) / "config.json").is_file():
        raise FileNotFoundError(f"{model_path}: no checkpoint there (the zoom demo ships "
                                f"{ZOOM_CHECKPOINT}; scripts/train/train_zoom_mixed.sh rebuilds it)")
    mixed = "global" in bench_kinds(data)
    print(f"=== zoom bench: {data} with {model_path} ===\n{INTRO}{INTRO_GLOBAL if mixed else ''}{INTRO_PASSES}",
          flush=True)
    result = evaluate(model_path, str(data), str(out), limit=limit, engine=engine, batch_size=batch_size,
                      device=device)
    if (out / "pictures").is_dir():
        shutil.rmtree(out / "pictures")  # an earlier run's sample
    for fmt in result["formats"]:
        show_samples(fmt, out, data, pictures)
    print("\n" + format_table(result))
    if set(result["kinds"]) != {"local"}:
        print("\nPer question kind (picked: when the two answers differed; picked right: when exactly one was "
              "right):\n" + format_kind_table(result))
    result["elapsed_s"] = round(time.perf_counter() - started, 2)
    print(f"\nsummary: {out / 'summary.json'}; pictures (RIGHT / WRONG in their names): {out / 'pictures'}; "
          f"{result['elapsed_s']:.1f} s")
    return result
