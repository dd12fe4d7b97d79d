"""Convert between the original LLaVA layout and transformers' llava-hf layout.

    python -m dualfocus.model.convert --src CKPT --dst OUT [--to hf|original]

Loads with `dualfocus.model.builder` (any layout), writes with `dualfocus.model.checkpoint_writer`
(original) or transformers (llava-hf, mapped by `dualfocus.model.hf_layout`). Conversion goes one
way: this module uses the loader; the loader never imports it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dualfocus.model.builder import detect_layout, load_pretrained_model
from dualfocus.model.checkpoint_writer import save_original_checkpoint
from dualfocus.model.hf_layout import hf_to_original, original_to_hf

__all__ = ["convert", "hf_to_original", "main", "original_to_hf"]


def convert(src: str, dst: str, to: str | None = None) -> Path:
    """`src` (either layout) written to `dst` in the other layout, or in `to`; returns `dst`."""
    src_layout = detect_layout(Path(src), None)
    to = to or ("original" if src_layout == "hf" else "hf")
    tokenizer, model, processor, _ = load_pretrained_model(src, device="cpu", torch_dtype=torch.float32)
    out = Path(dst)
    if to == "original":
        save_original_checkpoint(model, out, tokenizer, processor)
    else:
        hf = original_to_hf(model)
        hf.save_pretrained(str(out))
        tokenizer.add_tokens(["<image>"], special_tokens=True)
        tokenizer.save_pretrained(str(out))
        processor.save_pretrained(str(out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="checkpoint directory (original LLaVA or llava-hf layout)")
    parser.add_argument("--dst", required=True, help="output directory")
    parser.add_argument("--to", choices=["hf", "original"], help="target layout (default: the other one)")
    args = parser.parse_args(argv)
    print(convert(args.src, args.dst, args.to))


if __name__ == "__main__":
    main()
