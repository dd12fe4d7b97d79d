"""Questions per second: reference vs fast engine, and DualFocus vs a plain LLaVA answer.

    python benchmarks/bench_pipeline.py --preset cpu-small            # CPU, small config
    python benchmarks/bench_pipeline.py --preset 7b --device cuda     # real 7B shapes, random fp16
    python benchmarks/bench_pipeline.py --preset 7b-2gpu --device cuda  # 7B split over two GPUs

Random weights, forced output lengths (macro / box / micro texts fixed, so every question takes
every path: box parsed, micro pass, both answers valid and different -> two candidates scored).
The forced box is decoded with its format drafts (focus.drafts; `--no-draft`: one forward a
token); `--own-box` also runs the model's own greedy box (random weights: not a box, so the
drafts mostly fail) and reports forwards per box either way. Prints a table, the static-decode
warm-up (CUDA graph captures per step width) and, with `--breakdown`, the phases of one batch;
`--json` writes the numbers too. Timings, never tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dualfocus.benchmarks import get_protocol  # noqa: E402
from dualfocus.engine.fast import FastEngine  # noqa: E402
from dualfocus.engine.options import STATIC_DECODE  # noqa: E402
from dualfocus.engine.reference import ReferenceEngine  # noqa: E402
from dualfocus.focus.pipeline import DualFocus, FocusConfig  # noqa: E402
from dualfocus.model.llava_llama import LlavaLlamaConfig, LlavaLlamaForCausalLM  # noqa: E402
from dualfocus.model.tokenizer import load_tokenizer  # noqa: E402
from dualfocus.tiny.checkpoint import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD  # noqa: E402
from dualfocus.tiny.tokenizer import train_llama_tokenizer  # noqa: E402


@dataclass(frozen=True)
class Shape:
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    hidden: int
    layers: int
    heads: int
    mlp: int
    vocab: int = 32000
    image_size: int = 336


PRESETS = {
    "cpu-small": Shape(256, 4, 4, 1024, 512, 4, 8, 1376),
    "7b": Shape(1024, 24, 16, 4096, 4096, 32, 32, 11008),  # CLIP ViT-L/14-336 + Vicuna-7B
    "13b": Shape(1024, 24, 16, 4096, 5120, 40, 40, 13824),  # CLIP ViT-L/14-336 + Vicuna-13B
    "7b-2gpu": Shape(1024, 24, 16, 4096, 4096, 32, 32, 11008),  # 7B, its layers split over cuda:0 and cuda:1
}
GPUS = {"7b-2gpu": 2}
FORCED = (("macro", "A. red"), ("box", "[0.25, 0.30, 0.75, 0.80]"), ("micro", "B. blue"))


def build_model(shape: Shape, device: str, dtype: torch.dtype, gpus: int = 1) -> LlavaLlamaForCausalLM:
    vision = dict(hidden_size=shape.vision_hidden, intermediate_size=shape.vision_mlp,
                  num_hidden_layers=shape.vision_layers, num_attention_heads=shape.vision_heads,
                  image_size=shape.image_size, patch_size=14, hidden_act="quick_gelu", projection_dim=768)
    config = LlavaLlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.mlp,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.heads,
        max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, mm_vision_config=vision,
        mm_hidden_size=shape.vision_hidden, mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
        image_aspect_ratio="pad",
    )
    with torch.device(device):
        model = LlavaLlamaForCausalLM(config)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.02, generator=gen)
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.zero_()
    model = model.to(dtype).eval()
    return split(model, gpus)


def split(model: LlavaLlamaForCausalLM, gpus: int) -> LlavaLlamaForCausalLM:
    """A device_map over `gpus` GPUs (accelerate, as the loader does): tower, projector, embeddings
    and the first layers on cuda:0, the rest of the layers, the norm and lm_head spread after them."""
    if gpus == 1:
        return model
    if torch.cuda.device_count() < gpus:
        raise SystemExit(f"this preset needs {gpus} GPUs, {torch.cuda.device_count()} visible")
    from accelerate import dispatch_model

    n = len(model.model.layers)
    dmap = {"model.vision_tower": 0, "model.mm_projector": 0, "model.embed_tokens": 0, "model.rotary_emb": 0,
            "model.norm": gpus - 1, "lm_head": gpus - 1}
    dmap |= {f"model.layers.{i}": i * gpus // n for i in range(n)}
    return dispatch_model(model, device_map=dmap)


def image_processor(size: int):
    from dualfocus.model.image_processor import clip_image_processor

    return clip_image_processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)


def questions(n: int, seed: int = 0):
    proto = get_protocol("seed")
    rng = np.random.default_rng(seed)
    words = "red blue green sign shape left right top bottom small large text written colour".split()
    items = []
    for i in range(n):
        w, h = int(rng.integers(400, 900)), int(rng.integers(400, 900))
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        q = "What is " + " ".join(rng.choice(words, int(rng.integers(4, 14)))) + "?"
        text = f"{q}\nA. red\nB. blue\nC. green\nD. yellow\nAnswer with the option's letter from the given choices directly."
        items.append((proto.from_record({"question_id": i, "text": text}), image))
    return proto, items


def timed(runner, items, batch: int, device: str) -> tuple[float, float, list]:
    """Seconds per question over `items` in batches, and peak GPU memory (GB)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    results = []
    for i in range(0, len(items), batch):
        results += runner.run(items[i : i + batch])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else float("nan")
    return (time.perf_counter() - t0) / len(items), peak, results


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None, help="default: fp16 on cuda, fp32 on cpu")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--batches", type=int, default=2, help="timed batches per batch size (fast engine)")
    ap.add_argument("--reference-questions", type=int, default=4)
    ap.add_argument("--check", action="store_true", help="first check fast == reference on a few questions")
    ap.add_argument("--breakdown", action="store_true", help="then time the phases of one batch at the largest size")
    ap.add_argument("--static-decode", choices=STATIC_DECODE, default="auto",
                    help="fast engine decode steps: auto = CUDA graphs on one CUDA device, else eager")
    ap.add_argument("--no-draft", action="store_true", help="decode the box one token a forward")
    ap.add_argument("--own-box", action="store_true",
                    help="also run one batch with the model's own greedy box (not forced): forwards per box")
    ap.add_argument("--json", type=Path)
    return ap.parse_args(argv)


def check_parity(fast: DualFocus, reference: DualFocus, items) -> None:
    a, b = fast.run(items), reference.run(items)
    same = [(x.text, x.choice, x.crop) == (y.text, y.choice, y.crop) for x, y in zip(a, b)]
    dl = max(abs(u - v) for x, y in zip(a, b) for u, v in zip(x.losses, y.losses))
    print(f"check fast == reference on {len(items)} questions: answers {all(same)}, max loss diff {dl:.2e}, "
          f"choices {[x.choice for x in a]}")


def time_batches(df: dict, plain: DualFocus, items, args) -> list[dict]:
    """One row per batch size: fast DualFocus, plain LLaVA on the same engine, and the reference.

    Each runner is warmed up on the very questions it is timed on next (every prompt length, kernel
    shape and static-decode shape seen once), right before: the engine keeps one spare KV buffer."""
    timed(df["reference"], items[: args.reference_questions], 1, args.device)
    ref_s, ref_peak, _ = timed(df["reference"], items[: args.reference_questions], 1, args.device)
    rows = []
    for bs in args.batch_sizes:
        n = bs * args.batches
        timed(df["fast"], items[:n], bs, args.device)
        fast_s, fast_peak, res = timed(df["fast"], items[:n], bs, args.device)
        timed(plain, items[:n], bs, args.device)
        plain_s, plain_peak, _ = timed(plain, items[:n], bs, args.device)
        assert all(r.candidates for r in res), "forced outputs should reach candidate scoring"
        rows.append(dict(batch=bs, questions=n, reference_qps=1 / ref_s, fast_qps=1 / fast_s,
                         plain_qps=1 / plain_s, speedup=ref_s / fast_s, df_over_plain=fast_s / plain_s,
                         fast_peak_gb=fast_peak, plain_peak_gb=plain_peak, reference_peak_gb=ref_peak,
                         box_forwards=sum(r.extra["box_forwards"] for r in res) / len(res)))
    return rows


def print_table(rows: list[dict]) -> None:
    head = (f"{'batch':>5} | {'reference q/s':>13} | {'fast q/s':>9} | {'plain LLaVA q/s':>15} | {'fast/ref':>8} | "
            f"{'DF/plain cost':>13} | {'peak GB (DF)':>12} | {'fwd/box':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['batch']:>5} | {r['reference_qps']:>13.3f} | {r['fast_qps']:>9.3f} | {r['plain_qps']:>15.3f} | "
              f"{r['speedup']:>7.1f}x | {r['df_over_plain']:>12.2f}x | {r['fast_peak_gb']:>12.1f} | "
              f"{r['box_forwards']:>7.1f}")


def main(argv=None) -> None:
    args = parse_args(argv)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
        args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")]
    shape = PRESETS[args.preset]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = load_tokenizer(train_llama_tokenizer(Path(tmp) / "tok"))
    t0 = time.perf_counter()
    model = build_model(shape, args.device, dtype, GPUS.get(args.preset, 1))
    build_s = time.perf_counter() - t0
    processor = image_processor(shape.image_size)
    cfg = FocusConfig(forced_outputs=FORCED, draft_box=not args.no_draft)
    engines = {"fast": FastEngine(model, tokenizer, processor, static_decode=args.static_decode),
               "reference": ReferenceEngine(model, tokenizer, processor)}
    proto, items = questions(max(args.batch_sizes) * args.batches + 8)
    df = {k: DualFocus(e, proto, cfg) for k, e in engines.items()}
    plain = DualFocus(engines["fast"], proto, FocusConfig(mode="macro", forced_outputs=FORCED))
    lengths = {name: len(df["fast"]._params[name].forced) for name, _ in FORCED}
    if args.check:
        check_parity(df["fast"], df["reference"], items[:4])
    rows = time_batches(df, plain, items, args)
    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    fast = engines["fast"]
    print(f"\nDualFocus pipeline, preset {args.preset} ({shape}), {dtype}, device {dev_name}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}; model built in {build_s:.1f}s")
    print(f"forced tokens per pass (incl. EOS): {lengths}; box drafts {'off' if args.no_draft else 'on'}; "
          f"static decode {fast.static_decode or 'off'}; reference: one question at a time, "
          f"{args.reference_questions} questions, peak {rows[0]['reference_peak_gb']:.1f} GB")
    print_table(rows)
    warmup = {w: round(sec, 3) for w, sec in sorted(fast.warmup_s.items())}
    print(f"static-decode warm-up (CUDA graph capture, once per step width and KV shape): {warmup or 'none'}"
          f"; total {sum(warmup.values()):.2f} s")
    own = own_box(fast, proto, items[: max(args.batch_sizes)], args) if args.own_box else None
    breakdown = phase_breakdown(fast, df["fast"], items[: max(args.batch_sizes)], args.device) \
        if args.breakdown else None
    if args.json:
        args.json.write_text(json.dumps(dict(preset=args.preset, dtype=str(dtype), device=dev_name, rows=rows,
                                             forced_tokens=lengths, breakdown=breakdown, warmup_s=warmup,
                                             own_box=own, static_decode=fast.static_decode,
                                             drafts=not args.no_draft), indent=2))


def own_box(engine: FastEngine, proto, items, args) -> dict:
    """One batch with the model's own greedy box (macro and micro still forced), drafts on and off:
    forwards per box. Random weights rarely write a box, so this shows what failed drafts cost."""
    out = {}
    forced = tuple(kv for kv in FORCED if kv[0] != "box")
    head = engine.model.lm_head.weight
    saved = head[len(engine.tokenizer) :].clone()
    with torch.no_grad():  # the bench tokenizer has 1000 pieces: logits past them are 0, below the best piece
        head[len(engine.tokenizer) :] = 0
    for drafts in (True, False):
        runner = DualFocus(engine, proto, FocusConfig(forced_outputs=forced, box_max_new_tokens=32, draft_box=drafts))
        timed(runner, items, len(items), args.device)  # warm-up
        sec, _, res = timed(runner, items, len(items), args.device)
        out["drafts" if drafts else "plain"] = dict(
            qps=1 / sec, box_tokens=sum(r.extra["box_tokens"] for r in res) / len(res),
            box_forwards=sum(r.extra["box_forwards"] for r in res) / len(res),
            boxes_parsed=sum(r.box is not None for r in res))
    with torch.no_grad():
        head[len(engine.tokenizer) :] = saved
    print(f"\nown greedy box, batch {len(items)}: " + "; ".join(
        f"{k}: {v['qps']:.3f} q/s, {v['box_tokens']:.1f} tokens and {v['box_forwards']:.1f} forwards per box, "
        f"{v['boxes_parsed']} parsed" for k, v in out.items()))
    return out


def phase_breakdown(engine: FastEngine, runner: DualFocus, items, device: str) -> dict:
    """Seconds per phase for one batch (synchronising around each step, so a little slower)."""
    totals: dict[str, float] = {}

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def timed_method(name, fn, key):
        def wrapper(*a, **k):
            sync()
            t = time.perf_counter()
            out = fn(*a, **k)
            sync()
            label = key(*a, **k)
            totals[label] = totals.get(label, 0.0) + time.perf_counter() - t
            return out
        setattr(engine, name, wrapper)

    timed_method("_register_images", engine._register_images, lambda *a, **k: "CLIP + projector")
    timed_method("_forward", engine._forward,
                 lambda call, step: f"prefill ({step.width} columns)" if step.width > 8 else "decode steps")
    sync()
    t0 = time.perf_counter()
    runner.run(items)
    sync()
    total = time.perf_counter() - t0
    for name in ("_register_images", "_forward"):
        delattr(engine, name)
    totals["other (host, lm_head, masks)"] = total - sum(totals.values())
    print(f"\nphases of one batch of {len(items)} (fast engine, synchronised): {total:.2f} s")
    for label, sec in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {label:<32} {sec:7.3f} s  {100 * sec / total:5.1f}%")
    return totals


if __name__ == "__main__":
    main()
