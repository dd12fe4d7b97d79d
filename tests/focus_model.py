"""A tiny LLaVA that follows the DualFocus protocol on a few questions (a test helper, not a test).

A random tiny model never writes a parseable box, so the crop, micro and scoring steps of the
pipeline would never run in tests. `train_focus_checkpoint` teaches one, by plain teacher-forced
fine-tuning (LLaVA's loss: `model(input_ids, images=..., labels=...)` on conversations from
`dualfocus.preprocess.preprocess`, CLIP tower frozen as in LLaVA's fine-tuning), to answer each
question of `CASES` as the case says:

* macro pass: ``case.macro``;
* box pass: ``case.box`` (a box that differs per question, or a bad box: "none", pixel units,
  inverted, degenerate, out of range, so that every fallback of the pipeline is reached);
* micro pass (the box turn replayed, then the micro question with the full image and the crop
  computed by `dualfocus.boxes` exactly as the pipeline will): ``case.micro``, which for some
  questions differs from the macro answer (both valid: the candidates get scored), is invalid
  for one, and agrees for others.

It is saved in the original LLaVA layout (config.json, weights without the tower, the tokenizer;
the CLIP tower beside it) and read back with `load_pretrained_model`, the users' path. Seeded and
single-threaded in the parts that matter: the same weights on every run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dualfocus import boxes
from dualfocus.benchmarks import get_protocol
from dualfocus.conversation import default_conversation
from dualfocus.focus.protocols import FocusQuery
from dualfocus.mm_utils import process_images
from dualfocus.preprocess import preprocess
from dualfocus.tiny.checkpoint import TinySpec

SPEC = TinySpec()  # the default tiny sizes learn the cases in ~60 steps
MAX_NEW_TOKENS = 40  # the longest trained answer (a box) is 25 tokens with its "</s>"

OPTIONS = "\n".join(("A. red", "B. green", "C. blue", "D. yellow"))
SHAPES = "\n".join(("A. circle", "B. square", "C. triangle", "D. star"))
SEED_INSTRUCTION = "Answer with the option's letter from the given choices directly."
SHORT = "Answer the question using a single word or phrase."


@dataclass(frozen=True)
class FocusCase:
    """One trained question: its record, its image, and what each pass is trained to answer."""

    benchmark: str  # "seed" or "textvqa"
    question_id: str
    text: str  # the record's text
    size: tuple[int, int]  # image width, height
    macro: str
    box: str
    micro: str | None  # None: the box is unusable, there is no micro pass to train
    expect: str  # the choice the pipeline should reach ("agree", "both_valid", "no_micro: pixel_units", ...)

    @property
    def record(self) -> dict:
        return {"question_id": self.question_id, "image": f"{self.question_id}.png", "text": self.text}

    def query(self) -> FocusQuery:
        return get_protocol(self.benchmark).from_record(self.record)

    def image(self) -> Image.Image:
        return case_image(self.question_id, self.size)


def _seed(question: str, options: str = OPTIONS) -> str:
    return f"{question}\n{options}\n{SEED_INSTRUCTION}"


def _textvqa(question: str, ocr: str) -> str:
    return f"{question}\nReference OCR token: {ocr}\n{SHORT}"


CASES: tuple[FocusCase, ...] = (
    FocusCase("seed", "s1", _seed("What color is the car?"), (64, 48),
              "A", "[0.20, 0.30, 0.60, 0.70]", "A", "agree"),
    FocusCase("seed", "s2", _seed("What color is the dog next to the door?"), (40, 72),
              "B", "[0.10, 0.10, 0.50, 0.40]", "D", "both_valid"),
    FocusCase("seed", "s3", _seed("Which shape is on the table?", SHAPES), (56, 56),
              "C", "none", None, "no_micro: no_box"),
    FocusCase("seed", "s4", _seed("What color is the shirt of the man?"), (80, 40),
              "D", "[0.55, 0.15, 0.95, 0.65]", "maybe", "micro_invalid"),
    FocusCase("seed", "s5", _seed("Which shape is at the top of the image?", SHAPES), (48, 64),
              "unsure", "[0.05, 0.05, 0.45, 0.35]", "B", "macro_invalid"),
    FocusCase("seed", "s6", _seed("What color is the bus?"), (72, 54),
              "A", "[120, 45, 300, 200]", None, "no_micro: pixel_units"),
    FocusCase("textvqa", "t1", _textvqa("What does the sign say?", "stop, exit"), (60, 60),
              "stop", "[0.30, 0.20, 0.70, 0.80]", "exit", "both_valid"),
    FocusCase("textvqa", "t2", _textvqa("What is written on the bus?", "city, bus, 12"), (96, 48),
              "city", "[0.05, 0.40, 0.45, 0.90]", "city", "agree"),
    FocusCase("textvqa", "t3", _textvqa("What number is on the shirt?", "42"), (50, 70),
              "42", "[0.70, 0.20, 0.30, 0.60]", None, "no_micro: inverted"),
    FocusCase("textvqa", "t4", _textvqa("What is the name of the shop?", "cafe, open, the"), (64, 40),
              "cafe", "[0.30, 0.30, 0.30, 0.60]", None, "no_micro: degenerate"),
    FocusCase("textvqa", "t5", _textvqa("What word is on the door?", "exit"), (44, 66),
              "exit", "[0.20, 0.30, 1.50, 0.70]", None, "no_micro: out_of_range"),
    FocusCase("textvqa", "t6", _textvqa("What is the brand of the phone on the table?", "nokia, 3310"),
              (90, 60), "yes", "[0.25, 0.35, 0.75, 0.65]", "no", "both_valid"),
)


def case_image(qid: str, size: tuple[int, int]) -> Image.Image:
    """A deterministic picture per question id: coloured blocks on a background (RGB)."""
    rng = np.random.default_rng([ord(c) for c in qid])
    w, h = size
    pixels = np.empty((h, w, 3), dtype=np.uint8)
    pixels[:] = rng.integers(0, 256, 3)
    for _ in range(4):
        x1, y1 = int(rng.integers(0, w - 4)), int(rng.integers(0, h - 4))
        x2, y2 = int(rng.integers(x1 + 2, w)), int(rng.integers(y1 + 2, h))
        pixels[y1:y2, x1:x2] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels)


def crop_for(case: FocusCase, image: Image.Image) -> Image.Image:
    """The crop the pipeline makes from the case's box (default policy: square + 25 px)."""
    region = boxes.focus_region(boxes.parse_box(case.box), image.width, image.height)
    return boxes.crop(image, region)


def training_conversations(case: FocusCase) -> list[tuple[list[dict], list[Image.Image]]]:
    """The case's passes as LLaVA training conversations, with the images each one shows."""
    proto, q, image = get_protocol(case.benchmark), case.query(), case.image()

    def turn(role, value):
        return {"from": role, "value": value}

    out = [
        ([turn("human", proto.macro_prompt(q)), turn("gpt", case.macro)], [image]),
        ([turn("human", proto.box_prompt(q)), turn("gpt", case.box)], [image]),
    ]
    if case.micro is not None:
        micro = [turn("human" if role == 0 else "gpt", text) for role, text in proto.micro_messages(q, case.box)]
        out.append((micro + [turn("gpt", case.micro)], [image, crop_for(case, image)]))
    return out


def train_focus_checkpoint(out_dir: str | Path, tokenizer_dir: str | Path, steps: int = 60,
                           lr: float = 1e-2, seed: int = 0, log=None) -> Path:
    """Build a tiny checkpoint at ``out_dir``, fine-tune it on `CASES`, save it there again.

    Runs on one CPU thread: the same summation order, so the same weights, on any machine (and
    on a busy 2-core box it is no slower than two threads).
    """
    from dualfocus.model.builder import load_pretrained_model
    from dualfocus.model.checkpoint_writer import save_original_checkpoint
    from dualfocus.tiny.checkpoint import build_tiny_checkpoint

    out = build_tiny_checkpoint(out_dir, spec=SPEC, seed=seed, tokenizer_dir=tokenizer_dir)
    tokenizer, model, image_processor, _ = load_pretrained_model(str(out), None, None, device="cpu")
    samples = [s for case in CASES for s in training_conversations(case)]
    ids, labels, mask, pixels = _batch(samples, tokenizer, image_processor, model.config)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit(model, (ids, labels, mask, pixels), steps, lr, seed, log)
    finally:
        torch.set_num_threads(threads)
    save_original_checkpoint(model, out, include_vision_tower=False)
    return out


def _fit(model, batch, steps: int, lr: float, seed: int, log) -> None:
    ids, labels, mask, pixels = batch
    torch.manual_seed(seed)
    model.train()
    model.model.vision_tower.requires_grad_(False)  # LLaVA fine-tunes the projector and the LLM only
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    start = time.perf_counter()
    for step in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, images=pixels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(f"step {step} loss {loss.item():.4f} ({time.perf_counter() - start:.1f}s)")
    model.eval()


def _batch(samples, tokenizer, image_processor, config):
    """Right-padded (N, T) input_ids / labels / attention mask and the (n_images, 3, H, W) pixels."""
    rows = []
    for conv, _ in samples:
        enc = preprocess([conv], tokenizer, default_conversation, has_image=True)
        rows.append((enc["input_ids"][0], enc["labels"][0]))
    T = max(len(i) for i, _ in rows)
    ids = torch.full((len(rows), T), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), T), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.bool)
    for r, (i, lab) in enumerate(rows):
        ids[r, : len(i)], labels[r, : len(i)], mask[r, : len(i)] = i, lab, True
    pixels = process_images([im for _, images in samples for im in images], image_processor, config)
    return ids, labels, mask, pixels


if __name__ == "__main__":  # manual check: python tests/focus_model.py
    import sys
    import tempfile

    from dualfocus.tiny.tokenizer import train_llama_tokenizer

    tmp = Path(tempfile.mkdtemp())
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    t = time.perf_counter()
    path = train_focus_checkpoint(tmp / "focus", train_llama_tokenizer(tmp / "tok"), steps=steps, log=print)
    print(path, f"{time.perf_counter() - t:.1f}s")
