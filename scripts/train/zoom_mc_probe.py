"""Does the multiple-choice letter form? A short fine-tuning probe on the zoom bench's micro turn.

    python scripts/train/zoom_mc_probe.py --init CKPT --variant base|mc|text|more_mc [--tie]
        [--scenes 600] [--steps 800] [--every 100] [--lr 5e-4] [--threads 1]

An experiment harness behind docs/zoom.md's "Multiple choice" notes, not part of the recipe. It
starts from a checkpoint (default: the shipped one, which reads the glyph in the crop but answers
one letter to every multiple-choice question), trains it a few hundred steps with a plain AdamW
loop (batch 16, pre-processed tensors, one core) on a mix of zoom-bench records, and prints every
--every steps, on the held-out scenes (seed 0's, the shipped held-out set) with the gold box
(teacher-forced box turn, the crop made from the sign's box as the trainer makes it):

    mc      the micro turn's letter (argmax over A-D) is the right option
    top     the share of the most frequent predicted letter (1.0: one letter for everything)
    read    free form: the micro turn's glyph token (after its "▁", teacher-forced) is the argmax over the vocabulary

Variants (the training mix; every record is a bench record, `dualfocus.zoom.bench`):
    base     the recipe's mix (DualFocus records in both formats, macro records, listings)
    mc       only the DualFocus multiple-choice records
    mc_letter  the same, only the letter labelled (the trainer's mean token loss otherwise gives the
             one-token answer ~1/25 of a record's weight, and ~1% of a recipe batch's)
    more_mc  the recipe's mix with every multiple-choice DualFocus record three times
    text     base + one text-only option-lookup record per question: the micro turn's text (no
             image) with "The sign reads 7." before SEED's instruction -> the letter (the lookup
             without the reading)
    round2   the DualFocus records of both formats, only the micro answer labelled (--round2_only)
    round2_text  the same + the text-only lookups
    lookup_only  only those lookups (held out: the last 300, of other scenes; mc = their letter);
             with --scratch: is the lookup learnable by this language model from nothing?
    synthetic_lookup  --synthetic fresh lookups (bench.lookup_record's wording, random glyphs), each
             seen about once, held out: 300 more

--tie shares the input and output embeddings (lm_head = embed_tokens, the trained input rows);
--scratch re-initialises every weight first.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dualfocus.conversation import conv_templates
from dualfocus.model.builder import load_pretrained_model
from dualfocus.train.build_data import answer_turn, box_turn
from dualfocus.train.data import DataCollator, SupervisedDataset
from dualfocus.train.sub_area import CropPolicy
from dualfocus.zoom import bench

REPO = Path(__file__).resolve().parents[2]
LETTERS = bench.LETTERS
HELD_OUT_LOOKUPS = 300  # lookup_only: the last ones (other scenes) are the held-out set


def text_lookup(record: dict) -> dict:
    """A DualFocus MC record -> the text-only option lookup: options + the glyph read -> letter."""
    text = record["conversations"][2]["value"].split("\n", 1)[1]  # drop "<image>\n"
    q, *rest = text.split("\n")
    options, instruction = rest[:-1], rest[-1]
    letter = record["conversations"][3]["value"]
    glyph = options[LETTERS.index(letter)].split(". ", 1)[1]
    value = "\n".join([q, *options, f"The sign reads {glyph}.", instruction])
    return {"id": f"{record['id']}_lookup", "conversations": [{"from": "human", "value": value},
                                                              {"from": "gpt", "value": letter}]}


def mix(ids: list[str], variant: str) -> list[str]:
    """The training mix's record ids (`ids`: the bench's records, then the text-only lookups)."""
    records = [i for i in ids if not i.endswith("_lookup")]
    mc = [i for i in records if i.endswith("_mc")]
    if variant in ("mc", "mc_letter"):
        return mc
    if variant == "more_mc":
        return records + mc + mc
    if variant == "text":
        return records + [i for i in ids if i.endswith("_lookup")]
    if variant in ("round2", "round2_text"):  # the DualFocus records of both formats, no macro or listing
        dualfocus = [i for i in records if i.endswith("_mc") or i.split("_")[-1].isdigit()]
        return dualfocus + ([i for i in ids if i.endswith("_lookup")] if variant == "round2_text" else [])
    if variant == "lookup_only":
        return [i for i in ids if i.endswith("_lookup")][:-HELD_OUT_LOOKUPS]
    return records


def synthetic_lookups(n: int, tok, processor) -> list[dict]:
    """`n` text-only lookup records of random local questions (`bench.lookup_record`), as model inputs."""
    rng = np.random.default_rng(1)
    records = []
    for i in range(n):
        glyphs = [bench.GLYPHS[int(g)] for g in rng.choice(len(bench.GLYPHS), size=4, replace=False)]
        k = int(rng.integers(0, 4))
        colour = list(bench.SIGN_COLOURS)[int(rng.integers(0, len(bench.SIGN_COLOURS)))]
        records.append(bench.lookup_record(f"s{i}", bench.mc_text(bench.question(colour), glyphs), glyphs[k],
                                           LETTERS[k]))
    return tensors(SupervisedDataset(records, tok, processor, conv_templates["vicuna_v1"]))


def letter_only(labels: torch.Tensor) -> torch.Tensor:
    out = torch.full_like(labels, -100)
    kept = (labels != -100).nonzero().flatten()[-2:]
    out[kept] = labels[kept]
    return out


def answer_only(labels: torch.Tensor) -> torch.Tensor:
    """The labels after the last gap: the last answer (the micro one; a lookup's only one)."""
    out = torch.full_like(labels, -100)
    where = (labels != -100).nonzero().flatten().tolist()
    start = [q for k, q in enumerate(where) if k == 0 or q != where[k - 1] + 1][-1]
    out[start:] = labels[start:]
    return out


def held_out(rows: list[dict]) -> list[dict]:
    """Test rows -> DualFocus records with the gold box (what the micro turn sees after a right box)."""
    out = []
    for row in rows:
        q = row["text"].split("\n")[0]
        box = bench.box_to_text(bench.rounded_box(row["box"]))
        out.append({"id": row["question_id"], "image": row["image"], "sub_area": bench.rounded_box(row["box"]),
                    "conversations": [{"from": "human", "value": box_turn(q)}, {"from": "gpt", "value": box},
                                      {"from": "human", "value": answer_turn(row["text"])},
                                      {"from": "gpt", "value": row["answer"]}]})
    return out


def tensors(dataset: SupervisedDataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


@torch.no_grad()
def score(model, items: list[dict], collate, letter_ids: list[int] | None) -> tuple[float, float]:
    """(accuracy, share of the most frequent prediction) at each record's last answer's first token."""
    model.eval()
    hits, preds = 0, []
    for start in range(0, len(items), 32):
        b = collate(items[start:start + 32])
        if b["images"] is None:  # text-only records
            lab, logits = b["labels"], model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        else:
            emb, m, lab, pos = model.prepare_inputs_labels_for_multimodal(b["input_ids"], b["attention_mask"],
                                                                          b["labels"], b["images"])
            logits = model(inputs_embeds=emb, attention_mask=m, position_ids=pos).logits
        for i in range(len(lab)):
            answer = (lab[i] != -100).nonzero().flatten().tolist()[-2]  # the letter / glyph, before </s>
            row = logits[i, answer - 1]  # teacher-forced: "▁" before a glyph is given
            if letter_ids is not None:
                pred = letter_ids[int(row[letter_ids].argmax())]
            else:
                pred = int(row.argmax())
            hits += pred == int(lab[i, answer])
            preds.append(pred)
    model.train()
    top = max(preds.count(p) for p in set(preds)) / len(preds)
    return hits / len(items), top


def prepare(cache: Path, scenes: int, test_scenes: int, tok, processor) -> dict:
    """The bench (seed 0) as model inputs, made once into `cache` and shared by every variant."""
    if (cache / "items.pt").is_file():
        return torch.load(cache / "items.pt")
    conv, policy = conv_templates["vicuna_v1"], CropPolicy(units="normalized", process=True)
    with tempfile.TemporaryDirectory() as tmp:
        bench.generate(tmp, scenes, test_scenes, seed=0)
        records = json.loads(Path(tmp, "train.json").read_text())
        records += [text_lookup(r) for r in records if r["id"].endswith("_mc")]
        rows = {f: bench_rows(Path(tmp, f"test_{f}.jsonl")) for f in ("vqa", "seed")}

        def data(recs):
            return tensors(SupervisedDataset(recs, tok, processor, conv, image_folder=tmp, crop_policy=policy))

        items = {"ids": [r["id"] for r in records], "train": data(records), "mc_test": data(held_out(rows["seed"])),
                 "ff_test": data(held_out(rows["vqa"]))}
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(items, cache / "items.pt")
    return items


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", default=str(REPO / "checkpoints" / "dualfocus-zoom-tiny"))
    p.add_argument("--variant", choices=("base", "mc", "mc_letter", "more_mc", "text", "lookup_only", "round2",
                                             "round2_text", "synthetic_lookup"), default="base")
    p.add_argument("--scratch", action="store_true", help="re-initialise every weight first (transformers' init)")
    p.add_argument("--tie", action="store_true")
    p.add_argument("--cache", default="/tmp/zoom_mc_probe", help="where the prepared inputs are kept")
    p.add_argument("--scenes", type=int, default=400)
    p.add_argument("--test-scenes", type=int, default=50)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prepare-only", action="store_true")
    p.add_argument("--synthetic", type=int, default=24000, help="synthetic_lookup: training records")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok, model, processor, _ = load_pretrained_model(args.init, None, None, device="cpu")
    model.float()
    if args.scratch:
        model.apply(model._init_weights)
    if args.tie:
        model.lm_head.weight = model.model.embed_tokens.weight
    items = prepare(Path(args.cache), args.scenes, args.test_scenes, tok, processor)
    if args.prepare_only:
        return
    by_id = dict(zip(items["ids"], items["train"]))
    train = [by_id[i] for i in mix(items["ids"], args.variant)]
    if args.variant == "mc_letter":  # the letter (and its </s>) is the only label: no box tokens to dilute it
        train = [{**x, "labels": letter_only(x["labels"])} for x in train]
    if args.variant.startswith("round2"):  # --round2_only: the micro answer is the only label
        train = [{**x, "labels": answer_only(x["labels"])} for x in train]
    mc_test, ff_test = items["mc_test"], items["ff_test"]
    if args.variant == "lookup_only":  # held out: the lookups of the last training questions; no reading
        mc_test, ff_test = [by_id[i] for i in items["ids"] if i.endswith("_lookup")][-HELD_OUT_LOOKUPS:], []
    if args.variant == "synthetic_lookup":  # fresh text-only lookups, none seen twice, as many as the recipe's
        made = synthetic_lookups(args.synthetic + HELD_OUT_LOOKUPS, tok, processor)
        train, mc_test, ff_test = made[:-HELD_OUT_LOOKUPS], made[-HELD_OUT_LOOKUPS:], []
    collate = DataCollator(tok.pad_token_id, 512)
    letter_ids = sorted({int(x["labels"][x["labels"] != -100][-2]) for x in mc_test})  # the letter, then </s>
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
    order = random.Random(args.seed)
    print(f"{args.variant} tie={args.tie} from {args.init}: {len(train)} training records, {len(mc_test)} held-out "
          f"questions per format; letters {letter_ids}\n| step | loss | mc | top | read | s |\n|---|---|---|---|---|---|",
          flush=True)
    t0, loss = time.time(), float("nan")
    model.train()
    for step in range(args.steps + 1):
        if step % args.every == 0:
            mc, top = score(model, mc_test, collate, letter_ids)
            read, _ = score(model, ff_test, collate, None) if ff_test else (float("nan"), None)
            print(f"| {step} | {loss:.3f} | {mc:.3f} | {top:.2f} | {read:.3f} | {time.time() - t0:.0f} |", flush=True)
        if step == args.steps:
            break
        out = model(**collate(order.sample(train, 16)))
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss = out.loss.item()


def bench_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    main()
