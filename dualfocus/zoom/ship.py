"""Copy a trained zoom checkpoint and the held-out questions into the repository.

    python -m dualfocus.zoom.ship --checkpoint WORK/checkpoint --data WORK/data \\
        [--to-checkpoint checkpoints/dualfocus-zoom-tiny] [--to-data playground/zoom] [--eval WORK/eval]

The checkpoint keeps the original LLaVA layout exactly as `dualfocus.train.train` wrote it
(config.json, model.safetensors with the vision tower inside, tokenizer, preprocessor config);
the trainer's own files (training_args.bin, trainer_state.json, ...) are left behind, but the loss
log is kept as training_log.json. The data folder gets the held-out question files and only the
images they use. With --eval, that run's summary.json is copied beside the checkpoint as
eval_summary.json (the numbers the recipe measured).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from dualfocus.paths import ZOOM_CHECKPOINT, ZOOM_DATA

CHECKPOINT_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.model",
                    "tokenizer_config.json", "special_tokens_map.json")
MAX_BYTES = 20 * 1024 * 1024  # what the repository carries
LOCAL_PATHS = ("model_path", "answers_dir")


def ship_checkpoint(src: Path, dst: Path, eval_dir: Path | None = None) -> int:
    """Copy the checkpoint's files; returns their total size in bytes (refuses more than 20 MiB)."""
    missing = [f for f in CHECKPOINT_FILES if not (src / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{src}: not a full original-layout checkpoint, missing {', '.join(missing)}")
    size = sum((src / f).stat().st_size for f in CHECKPOINT_FILES)
    if size > MAX_BYTES:
        raise ValueError(f"{src}: {size / 2**20:.1f} MiB is more than the repository carries ({MAX_BYTES / 2**20:.0f} MiB)")
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in CHECKPOINT_FILES:
        shutil.copyfile(src / f, dst / f)
    state = src / "trainer_state.json"
    if state.is_file():
        history = json.loads(state.read_text())["log_history"]
        (dst / "training_log.json").write_text(json.dumps(history, indent=1) + "\n")
    if eval_dir is not None:
        summary = json.loads((eval_dir / "summary.json").read_text())
        for key in LOCAL_PATHS:  # where the recipe ran: meaningless in the repository
            summary.pop(key, None)
        (dst / "eval_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return size


def ship_data(src: Path, dst: Path) -> int:
    """The held-out question files, the bench manifest and the images they use; returns the question count."""
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "images").mkdir(parents=True)
    images, n = set(), 0
    for name in ("test_vqa.jsonl", "test_seed.jsonl"):
        rows = [json.loads(line) for line in (src / name).read_text().splitlines() if line.strip()]
        images.update(r["image"] for r in rows)
        n += len(rows)
        shutil.copyfile(src / name, dst / name)
    for image in sorted(images):
        shutil.copyfile(src / image, dst / image)
    shutil.copyfile(src / "manifest.json", dst / "manifest.json")
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dualfocus.zoom.ship", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--eval", default=None, type=Path, help="an evaluate --out folder (its summary.json)")
    parser.add_argument("--to-checkpoint", default=ZOOM_CHECKPOINT, type=Path)
    parser.add_argument("--to-data", default=ZOOM_DATA, type=Path)
    args = parser.parse_args(argv)
    size = ship_checkpoint(args.checkpoint, args.to_checkpoint, args.eval)
    n = ship_data(args.data, args.to_data)
    print(f"checkpoint ({size / 2**20:.1f} MiB) -> {args.to_checkpoint}; {n} held-out questions -> {args.to_data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
