"""Region-annotated QA -> DualFocus training records.

    python -m dualfocus.train.build_data --input regions.jsonl --output train.json \\
        [--image-folder images/] [--box-units auto|normalized|pixel] [--with-macro]

Input: JSON Lines (or a JSON list), one question per record:
    {"id": "q1", "image": "coco/0001.jpg", "question": "What is the man holding?",
     "answer": "a kite", "box": [120, 45, 300, 200]}
`id` is optional (default: the line number; `question_id` is accepted too). `box` is
[x1, y1, x2, y2], in pixels or as fractions of width/height: with `--box-units auto` (default) a box
whose values all lie in [0, 1] is normalized, any other box is in pixels, which needs the image
(found under `--image-folder`) for its size.

Output: a JSON list of LLaVA conversation records that `python -m dualfocus.train.train` takes:
    turn 1  human "<image>\\nPlease provide the bounding box coordinate of the region this question asks: {question}"
            gpt   "[x1, y1, x2, y2]" normalized, two decimals
    turn 2  human "<image>\\nPlease combine the information from these two images and answer this question: {question}"
            gpt   "{answer}"
with `sub_area` = the box as written in turn 1 (so the training crop is exactly the crop inference
makes from that text). `--with-macro` adds the plain LLaVA record `<image>\\n{question}` -> answer
(id `{id}_macro`), which teaches the macro pass the same answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from PIL import Image

from dualfocus import boxes
from dualfocus.constants import DEFAULT_IMAGE_TOKEN
from dualfocus.files import DiskFullError, write_atomic
from dualfocus.focus.protocols import BOX_REQUEST, COMBINE
from dualfocus.train.data import MAX_LISTED, DataError, load_records
from dualfocus.train.sub_area import normalized_sub_area, resolve_units


def box_turn(question: str) -> str:
    return f"{DEFAULT_IMAGE_TOKEN}\n{BOX_REQUEST}: {question}"


def answer_turn(question: str) -> str:
    return f"{DEFAULT_IMAGE_TOKEN}\n{COMBINE} {question}"


def macro_record(rid, image: str, text: str, answer: str) -> dict:
    """A plain LLaVA record: the question on the whole image, the answer."""
    return {"id": rid, "image": image, "conversations": [
        {"from": "human", "value": f"{DEFAULT_IMAGE_TOKEN}\n{text}"}, {"from": "gpt", "value": answer}]}


def rounded_box(box) -> list[float]:
    """The box as the model learns to write it (`boxes.box_to_text`, two decimals), as numbers."""
    text = boxes.box_to_text(box)
    return [float(v) for v in text.strip("[]").split(", ")]


def dualfocus_records(region: dict, index: int, image_folder: str | None = None, units: str = "auto",
                      with_macro: bool = False) -> list[dict]:
    """The training record(s) of one region-annotated question; ValueError says what is wrong."""
    if not isinstance(region, dict):
        raise ValueError(f"expected a JSON object, got {type(region).__name__}")
    missing = [k for k in ("image", "question", "answer", "box") if region.get(k) in (None, "")]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    question, answer = str(region["question"]).strip(), str(region["answer"]).strip()
    if DEFAULT_IMAGE_TOKEN in question or DEFAULT_IMAGE_TOKEN in answer:
        raise ValueError(f"{DEFAULT_IMAGE_TOKEN} inside the question or answer text")
    rid = region.get("id", region.get("question_id", index))
    width = height = None
    pixels = isinstance(region["box"], (list, tuple)) and len(region["box"]) == 4 and \
        resolve_units(region["box"], units) == "pixel"
    if pixels and image_folder is None:
        raise ValueError(f"box {region['box']} is in pixels: pass --image-folder so the image size is known")
    if image_folder is not None:
        path = os.path.join(image_folder, region["image"])
        try:
            with Image.open(path) as im:
                width, height = im.size
        except FileNotFoundError as e:
            raise ValueError(f"image {path} not found") from e
        except (OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"image {path}: {type(e).__name__}: {e}") from e
    box = normalized_sub_area(region["box"], width, height, units)
    written = rounded_box(box)
    try:
        boxes.validate_box(written)
    except boxes.BoxError as e:
        raise ValueError(f"box {region['box']} becomes {written} with two decimals: {e}") from e
    records = [{
        "id": rid, "image": region["image"], "sub_area": written,
        "conversations": [
            {"from": "human", "value": box_turn(question)},
            {"from": "gpt", "value": boxes.box_to_text(written)},
            {"from": "human", "value": answer_turn(question)},
            {"from": "gpt", "value": answer},
        ],
    }]
    if with_macro:
        records.append(macro_record(f"{rid}_macro", region["image"], question, answer))
    return records


def build_records(regions: Sequence[dict], image_folder: str | None = None, units: str = "auto",
                  with_macro: bool = False) -> list[dict]:
    """All records, or `DataError` listing every bad input record (index, id, reason)."""
    out, bad, seen = [], [], set()
    for i, region in enumerate(regions):
        rid = region.get("id", region.get("question_id", i)) if isinstance(region, dict) else i
        try:
            if rid in seen:
                raise ValueError("duplicate id")
            seen.add(rid)
            out += dualfocus_records(region, i, image_folder, units, with_macro)
        except (ValueError, boxes.BoxError) as e:
            bad.append(f"  record {i} (id {rid!r}): {e}")
    if bad:
        shown = bad[:MAX_LISTED] + ([f"  ... and {len(bad) - MAX_LISTED} more"] if len(bad) > MAX_LISTED else [])
        raise DataError(f"{len(bad)} of {len(regions)} region records are unusable:\n" + "\n".join(shown))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dualfocus.train.build_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="region-annotated questions (JSON Lines or a JSON list)")
    parser.add_argument("--output", required=True, help="DualFocus training records (a JSON list)")
    parser.add_argument("--image-folder", default=None, help="where `image` paths are found (pixel boxes need it)")
    parser.add_argument("--box-units", default="auto", choices=("auto", "normalized", "pixel"))
    parser.add_argument("--with-macro", action="store_true", help="also write the plain one-turn record")
    args = parser.parse_args(argv)
    try:
        records = build_records(read_input(args.input), args.image_folder, args.box_units, args.with_macro)
        write_output(records, args.output)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{len(records)} records -> {args.output}")
    return 0


def read_input(path: str) -> list[dict]:
    """`load_records`, with an unreadable --input as a `DataError` that says which flag to fix."""
    try:
        return load_records(path)
    except FileNotFoundError as e:
        raise DataError(f"--input {path}: no such file; give the region-annotated questions "
                        "(JSON Lines or a JSON list)") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"--input {path}: cannot read it as UTF-8 text ({e.__class__.__name__}: "
                        f"{getattr(e, 'strerror', None) or e})") from e


def write_output(records: list[dict], path: str) -> None:
    """Atomically (`dualfocus.files.write_atomic`: fsynced, then a rename); a folder that is
    missing is a `DataError`; a disk that fills up mid-write leaves no partial file."""
    try:
        write_atomic(path, json.dumps(records, indent=1, ensure_ascii=False), make_folder=False)
    except DiskFullError as e:
        raise DataError(f"--output {path}: {e}") from e
    except OSError as e:
        raise DataError(f"--output {path}: cannot write it ({e.strerror}); check that its folder exists "
                        "and is writable") from e


if __name__ == "__main__":
    sys.exit(main())
