"""Run by the side environment's Python (transformers 4.31.0, tokenizers 0.13.3, sentencepiece 0.1.99,
LLaVA-1.5's code from ``llava-torch==1.1.1``): computes what the released stack computes, for
``tests/test_fidelity.py`` to compare with ours. Not imported by the test suite itself.

    python released_stack.py REQUEST.json RESPONSE.json

REQUEST holds ``tokenizer_dir`` and any of: ``texts`` (-> ids of ``tokenizer(text)``, and both
decodes of those ids), ``image_prompts`` (-> LLaVA's ``tokenizer_image_token``), ``conversations``
(-> LLaVA's ``preprocess`` input_ids and labels under a named template), ``images`` with
``processor`` settings (-> ``CLIPImageProcessor`` pixel values, and LLaVA's ``process_images``
with ``image_aspect_ratio: pad``, saved as .npy files beside RESPONSE).

LLaVA's ``llava/train/train.py`` imports its trainer and model zoo at the top; only its
tokenization functions are needed here, so their source is taken from that file and executed
against LLaVA's own ``conversation``, ``constants`` and ``mm_utils`` modules.
"""

import ast
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
import transformers
from llava import constants, conversation, mm_utils
from PIL import Image

_PREPROCESS_FUNCTIONS = ("_tokenize_fn", "_mask_targets", "_add_speaker_and_signal", "preprocess_llama_2",
                         "preprocess_v1", "preprocess_mpt", "preprocess_plain", "preprocess")


def llava_train_functions() -> types.SimpleNamespace:
    """LLaVA's preprocess* functions, compiled from its train.py without its heavy imports."""
    import llava

    source = (Path(llava.__file__).parent / "train" / "train.py").read_text()
    tree = ast.parse(source)
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in _PREPROCESS_FUNCTIONS]
    scope = {"torch": torch, "transformers": transformers, "copy": __import__("copy"), "Dict": dict,
             "Sequence": list, "List": list, "conversation_lib": conversation,
             "tokenizer_image_token": mm_utils.tokenizer_image_token, **vars(constants)}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "llava/train/train.py", "exec"), scope)
    return types.SimpleNamespace(**{name: scope[name] for name in _PREPROCESS_FUNCTIONS})


def llava_mmbench_is_none():
    """LLaVA's ``is_none`` (llava/eval/model_vqa_mmbench.py), compiled alone: the file loads a model at import."""
    import llava

    tree = ast.parse((Path(llava.__file__).parent / "eval" / "model_vqa_mmbench.py").read_text())
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "is_none"]
    scope = {"math": __import__("math")}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "llava/eval/model_vqa_mmbench.py", "exec"), scope)
    return scope["is_none"]


def texts(tok, items):
    out = []
    for text in items:
        ids = tok(text).input_ids
        out.append({"ids": ids, "decode": tok.decode(ids), "decode_skip": tok.decode(ids, skip_special_tokens=True)})
    return out


def conversations(tok, items):
    fns, out = llava_train_functions(), []
    for item in items:
        conversation.default_conversation = conversation.conv_templates[item["template"]]
        res = fns.preprocess([item["source"]], tok, has_image=item["has_image"])
        out.append({"input_ids": res["input_ids"][0].tolist(), "labels": res["labels"][0].tolist()})
    return out


def pixels(request, out_dir: Path):
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(**request["processor"])
    names = []
    for i, path in enumerate(request["images"]):
        image = Image.open(path).convert("RGB")
        plain = processor.preprocess(image, return_tensors="np")["pixel_values"][0]
        padded = mm_utils.process_images([image], processor, types.SimpleNamespace(image_aspect_ratio="pad"))
        np.save(out_dir / f"plain_{i}.npy", plain)
        np.save(out_dir / f"pad_{i}.npy", padded[0].numpy())
        names.append([f"plain_{i}.npy", f"pad_{i}.npy"])
    return names


def main(request_file, response_file):
    request = json.loads(Path(request_file).read_text())
    response = {"versions": {"transformers": transformers.__version__}}
    if "tokenizer_dir" in request:
        tok = transformers.AutoTokenizer.from_pretrained(request["tokenizer_dir"], use_fast=False)
        response["tokenizer"] = {"class": type(tok).__name__, "legacy": tok.legacy, "pad_token_id": tok.pad_token_id}
        response["texts"] = texts(tok, request.get("texts", []))
        response["image_prompts"] = [mm_utils.tokenizer_image_token(p, tok) for p in request.get("image_prompts", [])]
        response["conversations"] = conversations(tok, request.get("conversations", []))
    if "mmbench_cells" in request:  # JSON has no NaN: "__nan__" stands for float("nan")
        is_none = llava_mmbench_is_none()
        response["mmbench_is_none"] = [is_none(float("nan") if v == "__nan__" else v) for v in request["mmbench_cells"]]
    if "images" in request:
        response["pixels"] = pixels(request, Path(response_file).parent)
    Path(response_file).write_text(json.dumps(response))


if __name__ == "__main__":
    main(*sys.argv[1:])
