"""The zoom model before training: a tiny LLaVA-1.5 with fresh weights, in the original layout.

    python -m dualfocus.zoom.model --bench DIR --out CKPT [--seed 0]

A CLIP-style tower (56 px input, 14 px patches: 16 image tokens), LLaVA-1.5's mlp2x_gelu
projector and a small Llama, all randomly initialised (transformers' own initialisers, seeded),
and a Llama-style sentencepiece tokenizer trained on the built-in prompt corpus plus the bench's
text (`DIR/corpus.txt`). The checkpoint carries its tower and describes it (`mm_vision_config`
and `preprocessor_config.json` inside), so `dualfocus.train.train --tune_vit True` trains every
part and the trained checkpoint needs nothing outside itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from transformers import CLIPVisionModel

from dualfocus.tiny.checkpoint import TinySpec, clip_config, image_processor, tiny_llava

SPEC = TinySpec(
    image_size=56, patch_size=14,  # 4 x 4 = 16 image tokens; an 896 px scene is seen 16x smaller
    vision_hidden=96, vision_layers=4, vision_heads=4,  # select layer -2 (LLaVA-1.5): 3 layers feed the LLM
    text_hidden=128, text_layers=4, text_heads=4, text_kv_heads=4, text_intermediate=384,
    projector="mlp2x_gelu", select_layer=-2, select_feature="patch",
    initializer_range=0.02,  # transformers' default: a model to train, not a fixture with peaked logits
    max_position_embeddings=1024,
)
VOCAB_SIZE = 1000
# The tower's position embeddings start at this std instead of CLIP's 0.02: a patch's content enters
# at ~0.5, so at 0.02 an image token hardly says where it is, and the box turn is about where.
POSITION_STD = 0.3
TOWER_NAME = "zoom-tiny-clip-56 (weights inside this checkpoint)"


def fresh_tower(spec: TinySpec = SPEC, seed: int = 0) -> CLIPVisionModel:
    """The untrained tower: transformers' CLIP initialisation (not the fixtures' N(0, 0.2)), seeded,
    position embeddings at POSITION_STD."""
    torch.manual_seed(seed)
    tower = CLIPVisionModel(clip_config(spec))
    with torch.no_grad():
        tower.embeddings.position_embedding.weight.normal_(0, POSITION_STD)
    return tower


def init_checkpoint(out_dir: str | os.PathLike, corpus: str | os.PathLike | None = None, seed: int = 0,
                    spec: TinySpec = SPEC, vocab_size: int = VOCAB_SIZE) -> Path:
    """Write the untrained checkpoint to `out_dir` (replacing it) and return its path."""
    from dualfocus.model.checkpoint_writer import save_original_checkpoint
    from dualfocus.model.tokenizer import TOKENIZER_FILES, load_tokenizer
    from dualfocus.tiny.tokenizer import train_llama_tokenizer

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    extra = Path(corpus).read_text(encoding="utf-8").splitlines() if corpus else ()
    # The zoom model was trained on per-segment sentencepiece ids: its config says legacy: true.
    tok_dir = train_llama_tokenizer(out / ".tokenizer", vocab_size=vocab_size, extra_text=extra, legacy=True)
    tokenizer = load_tokenizer(tok_dir)
    model = tiny_llava(spec, vocab_size=len(tokenizer), seed=seed, vision_tower=TOWER_NAME)
    model.model.vision_tower.vision_tower.load_state_dict(fresh_tower(spec, seed).state_dict())
    save_original_checkpoint(model, out, image_processor=image_processor(spec), include_vision_tower=True)
    for f in TOKENIZER_FILES:
        shutil.copyfile(tok_dir / f, out / f)
    shutil.rmtree(tok_dir)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dualfocus.zoom.model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", required=True, help="the bench directory (its corpus.txt trains the tokenizer)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = init_checkpoint(args.out, Path(args.bench) / "corpus.txt", args.seed)
    cfg = json.loads((out / "config.json").read_text())
    print(f"untrained zoom model -> {out} (vocab {cfg['vocab_size']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
