"""The option lookup with nothing else around it: how fast does a language model of the zoom model's
shape learn "which option shows this glyph, and what is its letter"?

    python scripts/zoom/recall_probe.py [--steps 10000] [--split --prefix 60] [--queries 8] [--forward 0.5]
        [--width 128] [--layers 4] [--lr 1e-3] [--batch 64] [--threads 1]

An experiment harness behind docs/zoom.md's "The lookup in isolation", not part of the recipe. It
trains a plain transformers `LlamaForCausalLM` from nothing (4 layers, 128 wide, 4 heads, MLP 384:
the zoom model's language model; no image, no chat template, no dualfocus code) on sequences of
abstract tokens laid out as the multiple-choice text lays out its options:

    NL A . g1  NL B . g2  NL C . g3  NL D . g4  SEP g SEP  ->  the letter whose glyph is g

4 of 16 glyphs, in random order, fresh every step; the loss is on the letter only. The value (the
letter) comes before its key (the glyph), as in "C. 7": the lookup needs a head that carries the
letter onto its glyph and a head that finds the glyph asked by its content.

    --split     digit glyphs (10 of the 16) are two tokens, a "▁" then the digit, as the zoom
                tokenizer writes them ("C", ".", "▁", "7"; the letter glyphs are one token, "▁K")
    --prefix N  N filler tokens before the options (the chat template's system prompt is ~40)
    --queries Q Q questions per sequence, each answered in turn (the first is scored)
    --forward F a share F of the training sequences asks the other way, "ASK C ASK -> g3" (the
                glyph's last token): the same head carries each letter onto its glyph, and here it
                pays off alone (docs/zoom.md, "Asked both ways"). Held-out sequences ask only the lookup.

Every 250 steps it prints the accuracy on 500 held-out sequences (chance 0.25) and the seconds.
Deterministic given the flags on one machine and thread count.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

LETTERS = (0, 1, 2, 3)
FIRST_GLYPH, GLYPHS, DIGITS = 10, 16, 10  # glyph token ids 10..25; the first 10 are the digits
SEP, SPACE, DOT, NEWLINE, PAD, ASK = 4, 5, 6, 7, 8, 9
FILLER = 30  # filler token ids 30..89, cycled
IGNORE = -100


def glyph_tokens(glyph: int, split: bool) -> list[int]:
    return [SPACE, glyph] if split and glyph < FIRST_GLYPH + DIGITS else [glyph]


def sequence(glyphs: list[int], asked: list[int], prefix: int, split: bool,
             forward: bool = False) -> tuple[list[int], list[int]]:
    """(tokens, labels): the option lines, then each asked option's glyph between SEPs -> its letter
    (forward: its letter between ASKs -> its glyph's last token). The last answer is dropped from the
    tokens (nothing follows it), its label kept."""
    tokens = [FILLER + i % 60 for i in range(prefix)]
    for letter, glyph in zip(LETTERS, glyphs):
        tokens += [NEWLINE, letter, DOT, *glyph_tokens(glyph, split)]
    labels = [IGNORE] * len(tokens)
    for k in asked:
        question, answer = ([ASK, LETTERS[k], ASK], glyphs[k]) if forward else (
            [SEP, *glyph_tokens(glyphs[k], split), SEP], LETTERS[k])
        tokens += [*question, answer]
        labels += [IGNORE] * (len(question) - 1) + [answer, IGNORE]
    return tokens[:-1], labels[:-1]


def batch(n: int, rng: torch.Generator, args, forward: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, T) tokens and labels, left-padded to the longest (split digits make lengths differ); a share
    `forward` of the rows asks the other way."""
    rows = []
    for _ in range(n):
        glyphs = (torch.randperm(GLYPHS, generator=rng)[:4] + FIRST_GLYPH).tolist()
        asked = [int(torch.randint(0, 4, (1,), generator=rng)) for _ in range(args.queries)]
        other_way = forward > 0 and float(torch.rand((), generator=rng)) < forward
        rows.append(sequence(glyphs, asked, args.prefix, args.split, other_way))
    width = max(len(tokens) for tokens, _ in rows)
    tokens = [[PAD] * (width - len(t)) + t for t, _ in rows]
    labels = [[IGNORE] * (width - len(y)) + y for _, y in rows]
    return torch.tensor(tokens), torch.tensor(labels)


@torch.no_grad()
def accuracy(model, tokens: torch.Tensor, labels: torch.Tensor) -> float:
    """The first question of each sequence: is the argmax over the 4 letters right?"""
    first = (labels != IGNORE).int().argmax(-1)
    rows = torch.arange(len(tokens))
    picked = model(tokens).logits[rows, first, : len(LETTERS)].argmax(-1)
    return (picked == labels[rows, first]).float().mean().item()


def model_for(args) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=100, hidden_size=args.width, intermediate_size=3 * args.width,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=512)
    return LlamaForCausalLM(config)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--split", action="store_true", help='digit glyphs as "▁", digit')
    p.add_argument("--prefix", type=int, default=0, help="filler tokens before the options")
    p.add_argument("--queries", type=int, default=1, help="questions per sequence")
    p.add_argument("--forward", type=float, default=0.0, help="share of training sequences asked the other way")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = model_for(args)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0)
    train_rng, test_rng = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    test = batch(500, test_rng, args)
    print("| step | accuracy | s |\n|---|---|---|", flush=True)
    start = time.time()
    for step in range(args.steps + 1):
        if step % 250 == 0:
            print(f"| {step} | {accuracy(model, *test):.3f} | {time.time() - start:.0f} |", flush=True)
        if step == args.steps:
            break
        tokens, labels = batch(args.batch, train_rng, args, args.forward)
        loss = torch.nn.functional.cross_entropy(model(tokens).logits.flatten(0, 1), labels.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


if __name__ == "__main__":
    main()
