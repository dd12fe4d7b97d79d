"""A CUDA smoke check of the static decode path before the timed runs (gpu_run.sh step 0).

On a small random fp32 model at the benchmark's shapes (preset cpu-small, on CUDA): DualFocus with
decode steps captured as CUDA graphs ("graph") must give the answers of the eager steps ("off") and
of the reference engine, losses within 1e-3, over two batches (the second reuses the first's
graphs). Exit status 0: the graph path may be timed; 1: it may not (gpu_run.sh then times "off").
`--device cpu` dry-runs the script with the same fixed-shape steps run eagerly (no capture).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_pipeline import FORCED, PRESETS, build_model, image_processor, questions  # noqa: E402

from dualfocus.engine.fast import FastEngine  # noqa: E402
from dualfocus.engine.reference import ReferenceEngine  # noqa: E402
from dualfocus.focus.pipeline import DualFocus, FocusConfig  # noqa: E402
from dualfocus.model.tokenizer import load_tokenizer  # noqa: E402
from dualfocus.tiny.tokenizer import train_llama_tokenizer  # noqa: E402


def main() -> int:
    device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cuda"
    static = "graph" if device.startswith("cuda") else "eager"
    shape = PRESETS["cpu-small"]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = load_tokenizer(train_llama_tokenizer(Path(tmp) / "tok"))
    model = build_model(shape, device, torch.float32)
    processor = image_processor(shape.image_size)
    proto, items = questions(4)
    cfg = FocusConfig(forced_outputs=FORCED)
    runs = {}
    for name, engine in (("graph", FastEngine(model, tokenizer, processor, static_decode=static)),
                         ("off", FastEngine(model, tokenizer, processor, static_decode="off")),
                         ("reference", ReferenceEngine(model, tokenizer, processor))):
        t0 = time.perf_counter()
        runner = DualFocus(engine, proto, cfg)
        runs[name] = runner.run(items[:2]) + runner.run(items[2:])
        print(f"{name}: {time.perf_counter() - t0:.2f} s; warm-up {getattr(engine, 'warmup_s', None)}")
    ok = True
    for name in ("graph", "off"):
        same = all((a.text, a.choice, a.crop, a.box_text) == (b.text, b.choice, b.crop, b.box_text)
                   for a, b in zip(runs[name], runs["reference"]))
        dl = max(abs(u - v) for a, b in zip(runs[name], runs["reference"]) for u, v in zip(a.losses, b.losses))
        fwd = [a.extra["box_forwards"] for a in runs[name]]
        print(f"{name} == reference: answers {same}, max loss diff {dl:.2e}, forwards per box {fwd}")
        ok &= same and dl <= 1e-3
    print("static decode under CUDA graphs:", "OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
