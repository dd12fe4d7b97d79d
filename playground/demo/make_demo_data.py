"""Regenerate the demo data in this folder (deterministic; run from the repository root).

    python playground/demo/make_demo_data.py

Writes four small PNG pictures (shapes and a sign, drawn with PIL) and one question file per
benchmark format, with the annotation files the matching scorers read. The questions have real
answers, so a trained checkpoint can be scored on them; the tiny random checkpoint of
`python -m dualfocus.demo` cannot answer them.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
INSTR = "Answer with the option's letter from the given choices directly."
SHORT = "Answer the question using a single word or phrase."


def draw_images() -> dict[str, Image.Image]:
    images = {}
    img = Image.new("RGB", (96, 72), "white")
    d = ImageDraw.Draw(img)
    d.rectangle((8, 8, 36, 36), fill=(220, 30, 30))
    d.ellipse((56, 34, 88, 66), fill=(30, 60, 220))
    images["shapes.png"] = img

    img = Image.new("RGB", (96, 72), (150, 150, 150))
    d = ImageDraw.Draw(img)
    d.rectangle((20, 14, 76, 44), fill=(20, 140, 40))
    d.text((30, 22), "STOP", fill="white")
    d.rectangle((46, 44, 50, 72), fill=(90, 90, 90))
    images["sign.png"] = img

    img = Image.new("RGB", (80, 80), (250, 240, 210))
    d = ImageDraw.Draw(img)
    for i, colour in enumerate([(240, 200, 20), (250, 140, 20), (40, 170, 40)]):
        d.ellipse((6 + 25 * i, 30, 26 + 25 * i, 50), fill=colour)
    images["fruit.png"] = img

    img = Image.new("RGB", (72, 96), (120, 190, 240))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 70, 72, 96), fill=(60, 160, 60))
    d.polygon([(16, 70), (36, 40), (56, 70)], fill=(140, 80, 40))
    d.ellipse((50, 6, 66, 22), fill=(255, 230, 0))
    images["house.png"] = img
    return images


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def options(*texts: str) -> str:
    return "\n".join(f"{chr(65 + i)}. {t}" for i, t in enumerate(texts))


def seed(images_dir: str) -> None:
    qs = [
        ("9001", "shapes.png", "What color is the square?", ("red", "blue", "green", "yellow"), "A", 3),
        ("9002", "shapes.png", "Where is the circle?", ("top left", "bottom right", "center", "top right"), "B", 4),
        ("9003", "fruit.png", "How many fruits are there?", ("one", "two", "three", "four"), "C", 5),
        ("9004", "sign.png", "What is written on the sign?", ("GO", "EXIT", "YIELD", "STOP"), "D", 9),
    ]
    write_jsonl(HERE / "seed_bench" / "llava-seed-bench.jsonl", [
        {"image": f"{images_dir}/{img}", "text": f"{q}\n{options(*opts)}\n{INSTR}", "category": "demo",
         "question_id": qid} for qid, img, q, opts, _, _ in qs])
    names = ["Scene Understanding", "Instance Identity", "Instance Attributes", "Instance Location",
             "Instances Counting", "Spatial Relation", "Instance Interaction", "Visual Reasoning",
             "Text Understanding"]
    annotation = {
        "question_type": {name: i + 1 for i, name in enumerate(names)},
        "questions": [
            {"answer": ans, **{f"choice_{c}": o for c, o in zip("abcd", opts)}, "data_id": img,
             "data_type": "image", "question": q, "question_id": qid, "question_type_id": t}
            for qid, img, q, opts, ans, t in qs],
    }
    (HERE / "seed_bench" / "SEED-Bench.json").write_text(json.dumps(annotation, indent=1) + "\n", encoding="utf-8")


def mmbench(images: dict[str, Image.Image]) -> None:
    def b64(name: str) -> str:
        buf = io.BytesIO()
        images[name].save(buf, format="PNG", optimize=True)
        return base64.b64encode(buf.getvalue()).decode()

    rows = [
        (0, "What color is the square?", "Look at the shapes.", ("red", "blue", "green", "yellow"), "A",
         "attribute_recognition", "FP-S", "shapes.png"),
        (1, "What shape is at the bottom right?", "", ("square", "circle", "triangle", ""), "B",
         "object_localization", "FP-S", "shapes.png"),
        (2, "What is in the sky?", "A drawing of a house.", ("a sun", "a moon", "a bird", "a plane"), "A",
         "image_scene", "CP", "house.png"),
    ]
    path = HERE / "mmbench" / "mmbench_demo.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "source", "l2-category",
               "comment", "split", "image"]
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for index, q, hint, opts, ans, cat, l2, img in rows:
            writer.writerow([index, q, hint, *opts, ans, cat, "demo", l2, "", "dev", b64(img)])


def gqa(images_dir: str) -> None:
    qs = [
        ("80001", "shapes.png", "Which color is the circle?", ("red", "blue"), "blue", "attr", "query"),
        ("80002", "house.png", "Is the sun above the house?", ("yes", "no"), "yes", "rel", "verify"),
        ("80003", "fruit.png", "What fruit is on the right?", ("lemon", "orange", "lime"), "lime", "obj", "query"),
    ]
    write_jsonl(HERE / "gqa" / "llava_gqa_testdev_balanced_mcq.jsonl", [
        {"question_id": qid, "image": f"{images_dir}/{img}", "question": f"{q}\n{options(*opts)}"}
        for qid, img, q, opts, _, _, _ in qs])
    annotation = {
        qid: {"question": q, "imageId": img.split(".")[0], "isBalanced": True, "answer": ans,
              "types": {"semantic": sem, "structural": struct, "detailed": "demo"}}
        for qid, img, q, _, ans, sem, struct in qs}
    (HERE / "gqa" / "testdev_balanced_questions.json").write_text(json.dumps(annotation, indent=1) + "\n",
                                                                  encoding="utf-8")


def textvqa(images_dir: str) -> None:
    # As in LLaVA's file, the question id is the image id: two questions share "sign".
    qs = [
        ("sign", "What does the sign say?", "STOP", ["stop"] * 9 + ["stop sign"], 70001),
        ("sign", "What color is the sign?", "STOP", ["green"] * 8 + ["dark green"] * 2, 70002),
        ("house", "What is the yellow circle?", "", ["sun"] * 7 + ["the sun"] * 3, 70003),
    ]
    write_jsonl(HERE / "textvqa" / "llava_textvqa_val_v051_ocr.jsonl", [
        {"question_id": image, "image": f"{images_dir}/{image}.png",
         "text": f"{q}\nReference OCR token: {ocr}\n{SHORT}" if ocr else f"{q}\n{SHORT}", "category": "default"}
        for image, q, ocr, _, _ in qs])
    annotation = {
        "dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1",
        "data": [{"question": q.lower(), "image_id": image, "answers": answers, "question_id": tid,
                  "set_name": "val"} for image, q, _, answers, tid in qs],
    }
    (HERE / "textvqa" / "TextVQA_0.5.1_val.json").write_text(json.dumps(annotation, indent=1) + "\n",
                                                             encoding="utf-8")


def vstar() -> None:
    """V*Bench's release layout: <category>/<name>.jpg with <name>.json, and test_questions.jsonl."""
    qs = [
        (0, "direct_attributes", "sa_demo1", "What is the color of the square?", ("blue", "red", "green", "yellow"),
         [[8, 8, 16, 16]], ["square"], "B"),
        (1, "relative_position", "sa_demo2", "Is the circle on the left or right side of the square?",
         ("left", "right"), [[8, 8, 16, 16], [40, 8, 16, 16]], ["circle", "square"], "A"),
    ]
    rows = []
    for qid, category, name, question, shown, bbox, objects, label in qs:
        folder = HERE / "vstar_bench" / category
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (64, 32), "white")
        draw = ImageDraw.Draw(image)
        for (x, y, w, h), shape in zip(bbox, objects):  # the boxes are [x, y, w, h], as the release's
            (draw.ellipse if shape == "circle" else draw.rectangle)((x, y, x + w, y + h), fill="red" if shape == "square" else "blue")
        image.save(folder / f"{name}.jpg", quality=85)
        correct_first = [shown["ABCD".index(label)]] + [o for o in shown if o != shown["ABCD".index(label)]]
        (folder / f"{name}.json").write_text(json.dumps({"target_object": objects, "bbox": bbox, "question": question,
                                                         "options": correct_first}) + "\n", encoding="utf-8")
        lines = "\n".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(shown))
        rows.append({"image": f"{category}/{name}.jpg", "text": f"{question}\n{lines}\n{INSTR}", "category": category,
                     "question_id": qid, "label": label})
    write_jsonl(HERE / "vstar_bench" / "test_questions.jsonl", rows)


def main() -> None:
    images = draw_images()
    (HERE / "images").mkdir(exist_ok=True)
    for name, img in images.items():
        img.save(HERE / "images" / name, optimize=True)
    # Question files name images relative to the demo folder, as LLaVA's name them relative to the
    # benchmark folder (the runner's --image-folder is playground/demo).
    seed("images")
    mmbench(images)
    gqa("images")
    textvqa("images")
    vstar()


if __name__ == "__main__":
    main()
