"""The zoom bench: questions that can only be answered by zooming in, in the real file formats.

    python -m dualfocus.zoom.bench --out DIR --n-train N --n-test M --seed S [--box-jitter 3] [--listings 2]
        [--kinds local|global|local,global] [--n-train-global N2] [--n-test-global M2] [--lookups K]

N and M count scenes (`dualfocus.zoom.scene`); every scene gives one question per sign, asked two
ways (held-out scenes have 3 signs; training scenes 1 to 3, which lets the tiny model learn to find
a sign before it must tell three apart by colour):

* free form (`vqa`): "What is written on the sign that is red?" -> "7";
* multiple choice (`seed`, SEED-Bench's layout): the same question, 4 options (the sign's glyph,
  the glyphs of the scene's other signs, one more), "Answer with the option's letter from the
  given choices directly." -> a letter.

The colour word comes last on purpose: the tiny model learns to find "the sign that is red" when the
colour is ~6 tokens before the box it writes, not when it is ~8 ("the red sign"), in the hour of
CPU training the recipe has (docs/zoom.md, Status). For the same reason every training question also
comes with its scene's "Where are the signs?" -> "red [box], blue [box]" record (colours in `SIGN_COLOURS` order,
each right before its box): finding a sign by a colour word just before the box is learned first,
and the box turn's longer lookup builds on it.

The region each question asks about (its sign) is known, so the training data is DualFocus's:

    DIR/images/{train,test}_NNNNN.png       the scenes
    DIR/regions_train.jsonl                  region-annotated questions (`build_data`'s input; the
                                             box in pixels, with +-`box_jitter` px annotation noise)
    DIR/train.json                           training records: per question a DualFocus record in
                                             each format (box turn + micro turn with `sub_area`;
                                             free form from `build_data`, multiple choice with the
                                             same turns and the SEED wording) and one plain macro
                                             record (free form or multiple choice, alternately) and
                                             `listings` copies of its scene's "Where are the signs?"
                                             record (default 2: as many as box turns, the mix the
                                             lookup was learned with)
    DIR/test_vqa.jsonl, DIR/test_seed.jsonl  held-out questions as LLaVA's question files, with the
                                             gold `answer` and the sign's exact `box` (normalized)
    DIR/corpus.txt                           every text line of the bench (tokenizer training)
    DIR/manifest.json                        the arguments and counts

--kinds local (the default) writes exactly today's bench. With "global", global scenes
(`dualfocus.zoom.global_kind`: count the signs, count one colour's, name the empty corner; their
own N2 / M2 scenes, 3 questions each, after the local ones in every file) add their questions to
the same files, and every held-out row gets a `kind` ("local" / "global"; global ones also a
`type`). A global question's box (its `sub_area`, and the `box` of its held-out rows) covers
all its evidence: every sign. --lookups K adds, per training question, K text-only records: the
multiple-choice text with "The answer is 7." before the instruction -> the letter.

Each scene is drawn from its own generator, seeded by (seed, split, index): a seed gives the same
files on every run and machine, and the test scenes do not depend on --n-train.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dualfocus.boxes import box_to_text
from dualfocus.files import write_lines_atomic
from dualfocus.focus.protocols import OPTION_INSTRUCTION
from dualfocus.train.build_data import answer_turn, box_turn, build_records, macro_record, rounded_box
from dualfocus.zoom.global_kind import corpus_lines as global_corpus_lines
from dualfocus.zoom.global_kind import evidence_box, global_questions, make_global_scene
from dualfocus.zoom.scene import GLYPHS, IMAGE_SIZE, SIGN_COLOURS, SIGNS, Scene, make_scene

SPLITS = {"train": 1, "test": 2, "train_global": 3, "test_global": 4}
KINDS = ("local", "global")
LETTERS = ("A", "B", "C", "D")
QUESTION = "What is written on the sign that is {colour}?"
WHERE = "Where are the signs?"
LOOKUP = "The answer is {answer}."


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS[split], index])


def question(colour: str) -> str:
    return QUESTION.format(colour=colour)


def options_for(scene: Scene, k: int, rng: np.random.Generator) -> list[str]:
    """4 glyphs in a random order: sign k's, the other signs', then glyphs not in the scene."""
    mine = scene.signs[k].glyph
    others = [s.glyph for i, s in enumerate(scene.signs) if i != k]
    rest = [g for g in GLYPHS if g != mine and g not in others]
    picked = [mine] + others[: len(LETTERS) - 1]
    while len(picked) < len(LETTERS):
        picked.append(rest.pop(int(rng.integers(0, len(rest)))))
    return [picked[int(i)] for i in rng.permutation(len(LETTERS))]


def mc_text(q: str, options: Sequence[str]) -> str:
    return "\n".join([q, *(f"{letter}. {o}" for letter, o in zip(LETTERS, options)), OPTION_INSTRUCTION])


def normalized(box: Sequence[int]) -> list[float]:
    return [round(v / IMAGE_SIZE, 6) for v in box]


def jittered(box: Sequence[int], rng: np.random.Generator, jitter: int) -> list[int]:
    """Annotation noise: each side moved by up to `jitter` px (kept inside the image, never empty)."""
    x1, y1, x2, y2 = (int(v) + int(rng.integers(-jitter, jitter + 1)) for v in box)
    x1, y1 = max(0, x1), max(0, y1)
    return [x1, y1, max(x1 + 1, min(IMAGE_SIZE, x2)), max(y1 + 1, min(IMAGE_SIZE, y2))]


def mc_record(rid: str, image: str, q: str, text: str, letter: str, box_text: str) -> dict:
    """A multiple-choice question as a DualFocus training record, in the turns `build_data` writes
    and the SEED protocol asks: box turn on the bare question; the micro turn on the whole text
    (question, options, instruction); the answer a letter."""
    sub_area = [float(v) for v in box_text.strip("[]").split(", ")]
    return {"id": rid, "image": image, "sub_area": sub_area, "conversations": [
        {"from": "human", "value": box_turn(q)}, {"from": "gpt", "value": box_text},
        {"from": "human", "value": answer_turn(text)}, {"from": "gpt", "value": letter}]}


def lookup_record(rid: str, text: str, answer: str, letter: str) -> dict:
    """The multiple-choice text with its answer written before the instruction, no image -> the letter:
    the option lookup (answer -> the option line that shows it -> its letter) without the reading."""
    *head, instruction = text.split("\n")
    return {"id": rid, "conversations": [
        {"from": "human", "value": "\n".join([*head, LOOKUP.format(answer=answer), instruction])},
        {"from": "gpt", "value": letter}]}


def listing(colour_boxes: dict[str, str]) -> str:
    """ "red [box], blue [box]": the scene's signs in `SIGN_COLOURS` order, each colour before its box."""
    return ", ".join(f"{c} {colour_boxes[c]}" for c in SIGN_COLOURS if c in colour_boxes)


def corpus_lines() -> list[str]:
    """Every line of text the bench can produce (questions, option lines, answers), for the tokenizer."""
    lines = [question(c) for c in SIGN_COLOURS] + [OPTION_INSTRUCTION, WHERE]
    lines += [f"{c} [0.12, 0.34, 0.56, 0.78]" for c in SIGN_COLOURS]
    lines += [f"{letter}. {g}" for letter in LETTERS for g in GLYPHS] + list(GLYPHS) + list(LETTERS)
    return lines


@dataclass
class _Files:
    """What `generate` writes, gathered scene by scene."""

    kinds: tuple[str, ...]
    lookups: int = 0  # text-only option-lookup records per multiple-choice training question
    regions: list = field(default_factory=list)  # region-annotated training questions (build_data's input)
    extra: list = field(default_factory=list)  # the other training records
    test_vqa: list = field(default_factory=list)
    test_seed: list = field(default_factory=list)

    def tagged(self, row: dict, kind: str) -> dict:
        """A held-out row; a mixed bench says each question's kind (a local-only one stays as it was)."""
        return {**row, "kind": kind} if "global" in self.kinds else row

    def add_training(self, qid: str, image: str, q: str, text: str, answer: str, letter: str, box: list[int]) -> str:
        """The question's region record, its DualFocus multiple-choice record and, for every other
        question, the multiple-choice macro record (the free-form ones come from build_records);
        returns the box as the box turn writes it."""
        self.regions.append({"id": qid, "image": image, "question": q, "answer": answer, "box": box})
        written = box_to_text(rounded_box(normalized(box)))
        self.extra.append(mc_record(f"{qid}_mc", image, q, text, letter, written))
        if len(self.regions) % 2 == 0:
            self.extra.append(macro_record(f"{qid}_mc_macro", image, text, letter))
        self.extra += [lookup_record(f"{qid}_lookup{'' if c == 0 else c + 1}", text, answer, letter)
                       for c in range(self.lookups)]
        return written


def save_image(scene, root: Path, split: str, index: int) -> str:
    """Write the scene's PNG; returns its path relative to `root`. Held-out images (they ship) are
    optimized for size; training images are not: same pixels, and PNG's optimizer was 85% of the
    bench's time."""
    image = f"images/{split}_{index:05d}.png"
    scene.image.save(root / image, optimize=split.startswith("test"))
    return image


def local_scene(files: _Files, split: str, index: int, seed: int, box_jitter: int, listings: int, root: Path) -> None:
    """One local scene: a question per sign (its glyph), and the scene's listing records."""
    rng = scene_rng(seed, split, index)
    scene = make_scene(rng, int(rng.integers(1, SIGNS + 1)) if split == "train" else SIGNS)
    image = save_image(scene, root, split, index)
    written_by_colour = {}
    for k, sign in enumerate(scene.signs):
        qid = f"{split}_{index:05d}_{k}"
        q = question(sign.colour)
        options = options_for(scene, k, rng)
        letter = LETTERS[options.index(sign.glyph)]
        text = mc_text(q, options)
        if split == "train":
            box = jittered(sign.box, rng, box_jitter) if box_jitter else list(sign.box)
            written_by_colour[sign.colour] = files.add_training(qid, image, q, text, sign.glyph, letter, box)
        else:
            common = {"image": image, "box": normalized(sign.box), "colour": sign.colour}
            files.test_vqa.append(files.tagged({"question_id": qid, "text": q, **common, "answer": sign.glyph}, "local"))
            files.test_seed.append(files.tagged({"question_id": f"{qid}_mc", "text": text, **common, "answer": letter,
                                                 "category": "zoom"}, "local"))
    if split == "train":
        files.extra += [macro_record(f"{split}_{index:05d}_{k}_where{'' if c == 0 else c + 1}", image, WHERE,
                                     listing(written_by_colour))
                        for k in range(len(scene.signs)) for c in range(listings)]


def global_scene(files: _Files, split: str, index: int, seed: int, box_jitter: int, root: Path) -> None:
    """One global scene (`global_kind`): three questions, each with the box of all its evidence."""
    rng = scene_rng(seed, split, index)
    scene = make_global_scene(rng)
    image = save_image(scene, root, split, index)
    evidence = evidence_box(scene)
    for k, gq in enumerate(global_questions(scene, rng)):
        qid = f"{split}_{index:05d}_{k}"
        letter = LETTERS[gq.options.index(gq.answer)]
        text = mc_text(gq.text, gq.options)
        if split == "train_global":
            box = jittered(evidence, rng, box_jitter) if box_jitter else list(evidence)
            files.add_training(qid, image, gq.text, text, gq.answer, letter, box)
        else:
            common = {"image": image, "box": normalized(evidence), "kind": "global", "type": gq.type}
            files.test_vqa.append({"question_id": qid, "text": gq.text, **common, "answer": gq.answer})
            files.test_seed.append({"question_id": f"{qid}_mc", "text": text, **common, "answer": letter,
                                    "category": "zoom"})


def generate(out: str | os.PathLike, n_train: int, n_test: int, seed: int = 0, box_jitter: int = 3,
             listings: int = 2, kinds: Sequence[str] = ("local",), n_train_global: int | None = None,
             n_test_global: int | None = None, lookups: int = 0) -> dict:
    """Write the bench into `out` (see the module docstring); returns the manifest. Global scenes
    (`kinds` with "global") default to as many as the local ones, and come after them in every file."""
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be some of {KINDS}, got {list(kinds)}")
    files = _Files(tuple(k for k in KINDS if k in kinds), lookups)
    n_global = {"train_global": n_train if n_train_global is None else n_train_global,
                "test_global": n_test if n_test_global is None else n_test_global}
    for split, count in (("train", n_train), ("test", n_test)):
        for index in range(count if "local" in kinds else 0):
            local_scene(files, split, index, seed, box_jitter, listings, root)
        global_split = f"{split}_global"
        for index in range(n_global[global_split] if "global" in kinds else 0):
            global_scene(files, global_split, index, seed, box_jitter, root)
    kept = {f"{r['id']}_macro" for r in files.regions[::2]}
    records = [r for r in build_records(files.regions, image_folder=str(root), units="pixel", with_macro=True)
               if not r["id"].endswith("_macro") or r["id"] in kept] + files.extra
    return write_files(root, files, records, {
        "seed": seed, "n_train_scenes": n_train, "n_test_scenes": n_test, "box_jitter": box_jitter,
        "listings": listings, "image_size": IMAGE_SIZE, "train_questions": len(files.regions),
        "train_records": len(records), "test_questions_per_format": len(files.test_vqa)})


def write_files(root: Path, files: _Files, records: list[dict], manifest: dict) -> dict:
    write_lines_atomic(root / "regions_train.jsonl", files.regions)
    with open(root / "train.json", "w", encoding="utf-8") as f:
        json.dump(records, f, indent=None, ensure_ascii=False)
    write_lines_atomic(root / "test_vqa.jsonl", files.test_vqa)
    write_lines_atomic(root / "test_seed.jsonl", files.test_seed)
    lines = corpus_lines() + (global_corpus_lines() if "global" in files.kinds else [])
    lines += [LOOKUP.format(answer=g) for g in GLYPHS] if files.lookups else []
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if files.lookups:
        manifest["lookups"] = files.lookups
    if files.kinds != ("local",):  # a local-only bench keeps today's manifest
        manifest.update(kinds=list(files.kinds), test_questions_per_kind={
            k: sum(r.get("kind", "local") == k for r in files.test_vqa) for k in files.kinds})
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dualfocus.zoom.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-train", type=int, required=True, help="training scenes (1-3 questions each)")
    parser.add_argument("--n-test", type=int, required=True, help="held-out scenes (3 questions each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--box-jitter", type=int, default=3, help="px of annotation noise on training boxes")
    parser.add_argument("--listings", type=int, default=2, help="'Where are the signs?' records per question")
    parser.add_argument("--kinds", default="local", help="comma-separated: local (today's bench), global, or both")
    parser.add_argument("--n-train-global", type=int, default=None, help="global training scenes (default --n-train)")
    parser.add_argument("--n-test-global", type=int, default=None, help="global held-out scenes (default --n-test)")
    parser.add_argument("--lookups", type=int, default=0,
                        help="text-only option-lookup records per training question (multiple choice: answer -> letter)")
    args = parser.parse_args(argv)
    manifest = generate(args.out, args.n_train, args.n_test, args.seed, args.box_jitter, args.listings,
                        tuple(k.strip() for k in args.kinds.split(",")), args.n_train_global, args.n_test_global,
                        args.lookups)
    print(json.dumps(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
