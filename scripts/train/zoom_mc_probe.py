"""Does the multiple-choice letter form? A short fine-tuning probe on the zoom bench's micro turn.

    python scripts/train/zoom_mc_probe.py --init CKPT --variant base|mc|text|more_mc|yes_no|... [--tie]
        [--scenes 600] [--steps 800] [--every 100] [--lr 5e-4] [--batch 16] [--threads 1]
    python scripts/train/zoom_mc_probe.py --glyph-probe   (no training: where is the read glyph?)

An experiment harness behind docs/zoom.md's "Multiple choice" notes, not part of the recipe. It
starts from a checkpoint (default: the shipped one, which reads the glyph in the crop but answers
one letter to every multiple-choice question), trains it a few hundred steps with a plain AdamW
loop (batch 16 unless --batch, pre-processed tensors, one core) on a mix of zoom-bench records, and
prints every --every steps, on the held-out scenes (seed 0's, the shipped held-out set) with the gold box
(teacher-forced box turn, the crop made from the sign's box as the trainer makes it):

    mc      the micro turn's letter (argmax over A-D) is the right option
    top     the share of the most frequent predicted letter (1.0: one letter for everything)
    read    free form: the micro turn's glyph token (after its "▁", teacher-forced) is the argmax over the vocabulary
            (synthetic_lookup --forward: the same on 300 held-out forward lookups, a letter -> its glyph)
    yn      yes_no only: the held-out verification questions (below) answered right ("Yes" / "No", 50% each)

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
    yes_no   the MC records (only the letter labelled) + the free-form DualFocus records + one yes/no
             verification record per MC question ("Is 7 written on the sign that is red?" -> "Yes" /
             "No", the glyph its own or another option's, 50/50; only the answer labelled), in equal
             shares per batch: an answer whose first token needs the glyph read at the letter's position
             (free form writes "▁" there, the glyph one token later) and compared with a glyph in the text
    synthetic_lookup  --synthetic fresh lookups (bench.lookup_record's wording, random glyphs), each
             seen about once, held out: 300 more (their own stream since session 10; session 8's rows
             held out the stream's last 300). --forward F: a share F asks the other way, the
             options then "What is option C?" (--forward-wording line: "C.") -> the glyph

--tie shares the input and output embeddings (lm_head = embed_tokens, the trained input rows);
--scratch re-initialises every weight first.

--glyph-probe: for the checkpoint as it is, a linear probe (multinomial logistic regression, 2,400
training MC records, scored on 600 more) per layer, on the residual at the position that predicts the
letter (after "ASSISTANT:"), for the glyph the question's sign shows: is the glyph read where the letter
has to be written?

Session 8's runs (docs/zoom.md, "Multiple choice: where the letter is written"), each after
`--cache DIR --scenes N` (a cache is made once per DIR, with N scenes):
    --variant mc_letter --scenes 4000 --steps 1500 --every 250 [--tie]
    --glyph-probe --scenes 1600
    --variant yes_no --scenes 1600 --steps 2000 --every 250 --threads 2   (and --steps 6000 --every 500)
    --variant synthetic_lookup --scratch --batch 64 --lr 1e-3 --synthetic 64000 --steps 1000 --every 250
        (and --synthetic 256000 --steps 4000 --every 500)
Session 10's (docs/zoom.md, "Asked both ways"):
    --variant synthetic_lookup --scratch --batch 64 --lr 1e-3 --synthetic 160000 --forward 0.5 --steps 2500
        --every 250 [--forward-wording line]   (and --synthetic 384000 --steps 6000 --every 500 --threads 2;
        --synthetic 192000 --steps 3000 --every 500 --threads 2, which scores the forward half too)
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
from dualfocus.train.data import DataCollator, SupervisedDataset
from dualfocus.train.sub_area import CropPolicy
from dualfocus.zoom import bench

REPO = Path(__file__).resolve().parents[2]
LETTERS = bench.LETTERS
HELD_OUT_LOOKUPS = 300  # lookup_only: the last ones (other scenes) are the held-out set
CACHE_VERSION = 2  # 2: with the yes/no records


def micro_turn(record: dict) -> tuple[str, list[str], str, str, list[str]]:
    """A DualFocus MC record's micro turn -> (question line, option lines "A. 7", instruction, letter,
    the options' glyphs)."""
    text = record["conversations"][2]["value"].split("\n", 1)[1]  # drop "<image>\n"
    q, *rest = text.split("\n")
    options = rest[:-1]
    return q, options, rest[-1], record["conversations"][3]["value"], [o.split(". ", 1)[1] for o in options]


def text_lookup(record: dict) -> dict:
    """A DualFocus MC record -> the text-only option lookup: options + the glyph read -> letter."""
    q, options, instruction, letter, glyphs = micro_turn(record)
    glyph = glyphs[LETTERS.index(letter)]
    value = "\n".join([q, *options, f"The sign reads {glyph}.", instruction])
    return {"id": f"{record['id']}_lookup", "conversations": [{"from": "human", "value": value},
                                                              {"from": "gpt", "value": letter}]}


def yes_no(record: dict, rng: random.Random) -> dict:
    """A DualFocus MC record -> its yes/no verification record: the same box turn, then "Is G written
    on the sign that is red?" with G the sign's glyph or another option's (50/50) -> "Yes" / "No"."""
    *_, letter, glyphs = micro_turn(record)
    gold = glyphs[LETTERS.index(letter)]
    glyph = gold if rng.random() < 0.5 else rng.choice([g for g in glyphs if g != gold])
    colour = record["conversations"][0]["value"].rsplit(" ", 1)[1].rstrip("?")
    question = f"Is {glyph} written on the sign that is {colour}?"
    return bench.mc_record(f"{record['id']}_yn", record["image"], question, question, "Yes" if glyph == gold else "No",
                           record["conversations"][1]["value"])


def free_form(rid: str) -> bool:
    """A free-form DualFocus record's id ends with its question's number (`build_data`)."""
    return rid.split("_")[-1].isdigit()


def mix(ids: list[str], variant: str) -> list[str]:
    """The training mix's record ids (`ids`: the bench's records, then the text-only lookups)."""
    records = [i for i in ids if not i.endswith(("_lookup", "_yn"))]
    mc = [i for i in records if i.endswith("_mc")]
    if variant in ("mc", "mc_letter"):
        return mc
    if variant == "more_mc":
        return records + mc + mc
    if variant == "text":
        return records + [i for i in ids if i.endswith("_lookup")]
    if variant in ("round2", "round2_text"):  # the DualFocus records of both formats, no macro or listing
        dualfocus = [i for i in records if i.endswith("_mc") or free_form(i)]
        return dualfocus + ([i for i in ids if i.endswith("_lookup")] if variant == "round2_text" else [])
    if variant == "lookup_only":
        return [i for i in ids if i.endswith("_lookup")][:-HELD_OUT_LOOKUPS]
    return records


FORWARD = {"question": "What is option {letter}?", "line": "{letter}."}  # --forward-wording


def synthetic_lookups(n: int, tok, processor, forward: float = 0.0, wording: str = "question",
                      seed: int = 1) -> list[dict]:
    """`n` text-only lookup records of random local questions (`bench.lookup_record`), as model inputs;
    a share `forward` asks the other way: the options, then FORWARD[wording] -> the option's glyph."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        glyphs = [bench.GLYPHS[int(g)] for g in rng.choice(len(bench.GLYPHS), size=4, replace=False)]
        k = int(rng.integers(0, 4))
        colour = list(bench.SIGN_COLOURS)[int(rng.integers(0, len(bench.SIGN_COLOURS)))]
        text = bench.mc_text(bench.question(colour), glyphs)
        if forward and rng.random() < forward:
            head = text.rsplit("\n", 1)[0]  # the instruction gives way to the forward question
            records.append({"id": f"f{i}", "conversations": [
                {"from": "human", "value": f"{head}\n{FORWARD[wording].format(letter=LETTERS[k])}"},
                {"from": "gpt", "value": glyphs[k]}]})
        else:
            records.append(bench.lookup_record(f"s{i}", text, glyphs[k], LETTERS[k]))
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
    return [bench.mc_record(row["question_id"], row["image"], row["text"].split("\n")[0], row["text"], row["answer"],
                            bench.box_to_text(bench.rounded_box(row["box"]))) for row in rows]


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
        items = torch.load(cache / "items.pt")
        if items.get("version") != CACHE_VERSION:
            raise SystemExit(f"{cache} was prepared by an older version of this script (no yes/no records): "
                             "delete it or pass another --cache")
        return items
    conv, policy = conv_templates["vicuna_v1"], CropPolicy(units="normalized", process=True)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        bench.generate(tmp, scenes, test_scenes, seed=0)
        records = json.loads(Path(tmp, "train.json").read_text())
        mc = [r for r in records if r["id"].endswith("_mc")]
        records += [text_lookup(r) for r in mc] + [yes_no(r, rng) for r in mc]
        rows = {f: bench_rows(Path(tmp, f"test_{f}.jsonl")) for f in ("vqa", "seed")}

        def data(recs):
            return tensors(SupervisedDataset(recs, tok, processor, conv, image_folder=tmp, crop_policy=policy))

        mc_test = held_out(rows["seed"])
        items = {"version": CACHE_VERSION, "ids": [r["id"] for r in records], "train": data(records),
                 "mc_test": data(mc_test), "ff_test": data(held_out(rows["vqa"])),
                 "yn_test": data([yes_no(r, rng) for r in mc_test])}
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(items, cache / "items.pt")
    return items


def records_by_id(items: dict) -> dict:
    """The prepared training records by their bench id."""
    return dict(zip(items["ids"], items["train"]))


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", default=str(REPO / "checkpoints" / "dualfocus-zoom-tiny"))
    p.add_argument("--variant", choices=("base", "mc", "mc_letter", "more_mc", "text", "lookup_only", "round2",
                                             "round2_text", "synthetic_lookup", "yes_no"), default="base")
    p.add_argument("--scratch", action="store_true", help="re-initialise every weight first (transformers' init)")
    p.add_argument("--tie", action="store_true")
    p.add_argument("--glyph-probe", action="store_true", help="no training: the per-layer linear probe")
    p.add_argument("--cache", default="/tmp/zoom_mc_probe", help="where the prepared inputs are kept")
    p.add_argument("--scenes", type=int, default=400)
    p.add_argument("--test-scenes", type=int, default=50)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prepare-only", action="store_true")
    p.add_argument("--forward", type=float, default=0.0,
                   help="synthetic_lookup: share of records asked the other way (a letter -> its glyph)")
    p.add_argument("--forward-wording", choices=tuple(FORWARD), default="question")
    p.add_argument("--synthetic", type=int, default=24000, help="synthetic_lookup: training records")
    return p.parse_args(argv)


def training_data(items: dict, args, tok, processor) -> tuple[list[list[dict]], list[dict], list[dict], list[dict]]:
    """(pools, each an equal share of every batch; MC held out; free form held out; yes/no held out)."""
    by_id = records_by_id(items)
    ids = mix(items["ids"], "mc" if args.variant == "yes_no" else args.variant)
    train = [by_id[i] for i in ids]
    if args.variant in ("mc_letter", "yes_no"):  # the letter (and its </s>) is the only label: no box tokens
        train = [{**x, "labels": letter_only(x["labels"])} for x in train]
    if args.variant.startswith("round2"):  # --round2_only: the micro answer is the only label
        train = [{**x, "labels": answer_only(x["labels"])} for x in train]
    pools, mc_test, ff_test = [train], items["mc_test"], items["ff_test"]
    if args.variant == "yes_no":  # + the free-form DualFocus records, + yes/no (its answer labelled)
        free_forms = [by_id[i] for i in items["ids"] if free_form(i)]
        verify = [{**by_id[i], "labels": answer_only(by_id[i]["labels"])} for i in items["ids"] if i.endswith("_yn")]
        pools = [train, free_forms, verify]
    if args.variant == "lookup_only":  # held out: the lookups of the last training questions; no reading
        mc_test, ff_test = [by_id[i] for i in items["ids"] if i.endswith("_lookup")][-HELD_OUT_LOOKUPS:], []
    if args.variant == "synthetic_lookup":  # fresh text-only lookups, none seen twice, as many as the recipe's
        made = synthetic_lookups(args.synthetic, tok, processor, args.forward, args.forward_wording)
        held = synthetic_lookups(HELD_OUT_LOOKUPS, tok, processor, seed=99)  # reverse lookups only
        ff_test = synthetic_lookups(HELD_OUT_LOOKUPS, tok, processor, 1.0, args.forward_wording, seed=98) \
            if args.forward else []  # forward only: "read" is then the forward half's glyph
        pools, mc_test = [made], held
    return pools, mc_test, ff_test, items["yn_test"] if args.variant == "yes_no" else []


def draw(pools: list[list[dict]], order: random.Random, size: int = 16) -> list[dict]:
    """One batch: `size` records, split as evenly as it goes over the pools (one pool: a plain sample)."""
    shares = [size // len(pools) + (k < size % len(pools)) for k in range(len(pools))]
    return [x for pool, n in zip(pools, shares) for x in order.sample(pool, n)]


def train(model, tok, pools, tests: tuple[list, list, list], args) -> None:
    """The AdamW loop (--batch records a step), a table row every --every steps: loss, mc, top, read (and yn for yes_no)."""
    mc_test, ff_test, yn_test = tests
    collate = DataCollator(tok.pad_token_id, 512)
    letter_ids = sorted({int(x["labels"][x["labels"] != -100][-2]) for x in mc_test})  # the letter, then </s>
    yes_no_ids = tok.convert_tokens_to_ids(["▁Yes", "▁No"])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
    order = random.Random(args.seed)
    print(f"{args.variant} tie={args.tie} from {args.init}: {[len(p) for p in pools]} training records, "
          f"{len(mc_test)} held-out questions per format; letters {letter_ids}\n"
          "| step | loss | mc | top | read | yn | s |\n|---|---|---|---|---|---|---|", flush=True)
    t0, loss = time.time(), float("nan")
    model.train()
    for step in range(args.steps + 1):
        if step % args.every == 0:
            mc, top = score(model, mc_test, collate, letter_ids)
            read = score(model, ff_test, collate, None)[0] if ff_test else float("nan")
            yn = score(model, yn_test, collate, yes_no_ids)[0] if yn_test else float("nan")
            print(f"| {step} | {loss:.3f} | {mc:.3f} | {top:.2f} | {read:.3f} | {yn:.3f} | {time.time() - t0:.0f} |",
                  flush=True)
        if step == args.steps:
            break
        out = model(**collate(draw(pools, order, args.batch)))
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss = out.loss.item()


@torch.no_grad()
def letter_states(model, tok, records: list[dict]) -> tuple[torch.Tensor, list[int]]:
    """(N, layers + 1, hidden) residuals at the position that predicts each MC record's letter, and the
    glyph token its answer's option shows (the option line's last token)."""
    collate, states, glyphs = DataCollator(tok.pad_token_id, 512), [], []
    plain = dict(zip(tok.convert_tokens_to_ids([f"▁{c}" for c in LETTERS]), tok.convert_tokens_to_ids(list(LETTERS))))
    newline, dot = tok.convert_tokens_to_ids(["<0x0A>", "."])
    for start in range(0, len(records), 64):
        batch = records[start:start + 64]
        b = collate(batch)
        emb, m, lab, pos = model.prepare_inputs_labels_for_multimodal(b["input_ids"], b["attention_mask"],
                                                                      b["labels"], b["images"])
        hidden = model.model(inputs_embeds=emb, attention_mask=m, position_ids=pos, output_hidden_states=True)
        for i, x in enumerate(batch):
            k = (lab[i] != -100).nonzero().flatten().tolist()[-2]  # the letter (then </s>)
            ids = x["input_ids"].tolist()
            letter = plain[int(lab[i, k])]  # "B" of "\nB. 7" (not the "A" of "Answer")
            line = max(q for q in range(1, len(ids) - 1) if ids[q - 1:q + 2] == [newline, letter, dot])
            glyphs.append(ids[ids.index(newline, line) - 1])  # "7" (digits: "▁", "7"; letters: "▁K")
            states.append(torch.stack([h[i, k - 1] for h in hidden.hidden_states]))
    return torch.stack(states), glyphs


def glyph_probe(model, tok, items: dict, n_train: int = 2400, n_test: int = 600) -> None:
    """Per layer: held-out accuracy of a linear probe for the glyph, at the letter's position."""
    by_id = records_by_id(items)
    records = [by_id[i] for i in items["ids"] if i.endswith("_mc")][:n_train + n_test]
    model.eval()
    states, glyphs = letter_states(model, tok, records)
    classes = sorted(set(glyphs))
    y = torch.tensor([classes.index(g) for g in glyphs])
    print(f"glyph at the letter's position, {len(classes)} glyphs, {n_train} / {len(records) - n_train} records"
          f" (one glyph for all: {max(glyphs.count(g) for g in classes) / len(glyphs):.3f})")
    for layer in range(states.shape[1]):
        x = states[:, layer]
        x = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-5)
        probe = torch.nn.Linear(x.shape[1], len(classes))
        opt = torch.optim.Adam(probe.parameters(), 1e-2, weight_decay=1e-4)
        for _ in range(500):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(probe(x[:n_train]), y[:n_train]).backward()
            opt.step()
        accuracy = (probe(x[n_train:]).argmax(-1) == y[n_train:]).float().mean().item()
        print(f"| {'embeddings' if layer == 0 else f'layer {layer}'} | {accuracy:.3f} |")


def main(argv=None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok, model, processor, _ = load_pretrained_model(args.init, None, None, device="cpu")
    model.float()
    if args.scratch:
        model.apply(model._init_weights)
    if args.tie:
        model.lm_head.weight = model.model.embed_tokens.weight
    items = prepare(Path(args.cache), args.scenes, args.test_scenes, tok, processor)
    if args.glyph_probe:
        return glyph_probe(model, tok, items)
    if args.prepare_only:
        return
    pools, *tests = training_data(items, args, tok, processor)
    train(model, tok, pools, tuple(tests), args)


def bench_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    main()
