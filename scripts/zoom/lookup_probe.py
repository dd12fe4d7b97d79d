"""Learning curve of the zoom bench's hard part, in isolation: the box turn's "which sign is red".

    python scripts/zoom/lookup_probe.py --mode image [--tie] [--describe] [--steps 2400] [--lr 5e-4]
    python scripts/zoom/lookup_probe.py --mode text  [--tie] [--steps 2400]

An experiment harness behind docs/zoom.md's Status table, not part of the recipe. It trains the
untrained zoom model (`dualfocus.zoom.model`, the recipe's starting point) on box turns only, with
a plain AdamW loop over pre-processed tensors (~0.2 s/step on one core), and prints a table of
held-out accuracy every --every steps:

* image: the box turn on bench scenes (1-3 signs for training, 3 held out), exactly the
  protocol's prompt; --describe adds one "Where are the signs?" -> "red [box], blue [box]" record
  per scene (colours in a fixed order, each right before its box);
* text: the same question with the colour -> box table written before it ("Signs: red at [box],
  ..."), no image: is the two-hop recall learnable by the language model at all?

Columns: x / y = the tens digit of the box's first corner (which pegboard column / row; picking
one of the three signs at random scores ~0.5), cell = both (the right sign). x is the clean
measure of finding the named sign: y is predicted after the (teacher-forced) true column, which
gives the sign away whenever it is the only one in its column. listed x (--describe): the column
of the first sign in the held-out scenes' "Where are the signs?" answers, where the colour word
sits 3 tokens before the digit instead of ~8 (is the key's distance what stops the lookup?).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from dualfocus.boxes import box_to_text
from dualfocus.conversation import conv_templates
from dualfocus.mm_utils import process_images
from dualfocus.model.builder import load_pretrained_model
from dualfocus.preprocess import preprocess
from dualfocus.train.build_data import box_turn
from dualfocus.train.data import DataCollator
from dualfocus.zoom import scene as sc
from dualfocus.zoom.bench import QUESTION, WHERE, corpus_lines, listing, normalized
from dualfocus.zoom.model import init_checkpoint


def examples(mode: str, n: int, describe: bool, held_out: int, processor, cfg, wording: str = QUESTION):
    """(conversations, pixels or None, is_box_turn) for n scenes; the last `held_out` have 3 signs."""
    rng = np.random.default_rng(0)
    convs, pixels, is_box = [], [], []
    for i in range(n):
        count = 3 if i >= n - held_out else int(rng.integers(1, 4))
        scene = sc.make_scene(np.random.default_rng([99, i]), signs=count)
        sign = scene.signs[int(rng.integers(0, count))]
        box = box_to_text(normalized(sign.box))
        question = box_turn(wording.format(colour=sign.colour))
        if mode == "text":
            table = ", ".join(f"{s.colour} at {box_to_text(normalized(s.box))}" for s in scene.signs)
            question = f"Signs: {table}.\n" + question.replace("<image>\n", "")
        else:
            pixels.append(process_images([scene.image], processor, cfg)[0])
        convs.append([{"from": "human", "value": question}, {"from": "gpt", "value": box}])
        is_box.append(True)
        if describe and mode == "image":
            listed = listing({s.colour: box_to_text(normalized(s.box)) for s in scene.signs})
            convs.append([{"from": "human", "value": f"<image>\n{WHERE}"}, {"from": "gpt", "value": listed}])
            pixels.append(pixels[-1])
            is_box.append(False)
    return convs, (torch.stack(pixels) if pixels else None), torch.tensor(is_box)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("image", "text"), default="image")
    p.add_argument("--tie", action="store_true", help="tie the input and output embeddings")
    p.add_argument("--describe", action="store_true", help="add 'Where are the signs?' records (image mode)")
    p.add_argument("--question", default=QUESTION, help="the question's wording, with {colour} (default: the bench's)")
    p.add_argument("--scenes", type=int, default=5000)
    p.add_argument("--held-out", type=int, default=300)
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--every", type=int, default=200)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = f"{tmp}/corpus.txt"
        with open(corpus, "w") as f:
            f.write("\n".join(corpus_lines() + ["Signs: at"]
                               + [args.question.format(colour=c) for c in sc.SIGN_COLOURS]) + "\n")
        init_checkpoint(f"{tmp}/init", corpus, seed=0)
        tok, model, processor, _ = load_pretrained_model(f"{tmp}/init", None, None, device="cpu")
    if args.tie:
        model.lm_head.weight = model.model.embed_tokens.weight
    convs, pixels, is_box = examples(args.mode, args.scenes, args.describe, args.held_out, processor, model.config,
                                     args.question)
    template = conv_templates["vicuna_v1"]
    rows = [preprocess([c], tok, template, has_image=args.mode == "image") for c in convs]
    batch = DataCollator(tok.pad_token_id, tok.model_max_length)(  # right-padded (N, T), as in training
        [dict(input_ids=r["input_ids"][0], labels=r["labels"][0], images=torch.zeros(0)) for r in rows])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    box_rows = is_box.nonzero().flatten()
    test = box_rows[-args.held_out:]
    train = torch.arange(int(test[0]))  # every record of the training scenes
    listed = (~is_box).nonzero().flatten()
    listed = listed[listed > test[0]]  # the held-out scenes' "Where are the signs?" records
    digits = {tok.convert_tokens_to_ids(d) for d in "0123456789"}

    def forward(idx, with_labels=True):
        kw = dict(input_ids=ids[idx], attention_mask=mask[idx])
        if pixels is not None:
            kw["images"] = pixels[idx]
        return model(**kw, labels=labels[idx] if with_labels else None)

    def held_out(rows=None):
        rows = test if rows is None else rows
        model.eval()
        with torch.no_grad():
            if pixels is None:
                pred, lab = forward(rows, False).logits.argmax(-1), labels[rows]
            else:
                emb, m, lab, pos = model.prepare_inputs_labels_for_multimodal(ids[rows], mask[rows], labels[rows],
                                                                              pixels[rows])
                pred = model(inputs_embeds=emb, attention_mask=m, position_ids=pos).logits.argmax(-1)
        model.train()
        hits = []
        for b in range(len(rows)):
            where = [q for q in (lab[b] != -100).nonzero().flatten().tolist() if lab[b, q].item() in digits]
            # digits of "[0.33, 0.58, ...": 0, 3 (x tens), 3, 0, 5 (y tens), ...
            hits.append([int(pred[b, q - 1] == lab[b, q]) for q in (where[1], where[4])])
        hits = np.array(hits)
        return hits[:, 0].mean(), hits[:, 1].mean(), (hits[:, 0] * hits[:, 1]).mean()

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
    g = torch.Generator().manual_seed(0)
    model.train()
    print(f"{args.mode}, tie={args.tie}, describe={args.describe}, {args.question!r}: {len(train)} training records, "
          f"{len(test)} held-out box turns\n| step | loss | x | y | cell | listed x | s |\n|---|---|---|---|---|---|---|",
          flush=True)
    t0 = time.time()
    for step in range(args.steps + 1):
        out = forward(train[torch.randint(0, len(train), (16,), generator=g)])
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.every == 0:
            x, y, cell = held_out()
            listed_x = f"{held_out(listed)[0]:.2f}" if len(listed) else "-"
            print(f"| {step} | {out.loss.item():.3f} | {x:.2f} | {y:.2f} | {cell:.2f} | {listed_x} | {time.time() - t0:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
