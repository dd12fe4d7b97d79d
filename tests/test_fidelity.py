"""Fidelity to the released stack, proven by running it: transformers 4.31.0's slow LlamaTokenizer,
tokenizers 0.13.3, sentencepiece 0.1.99 and LLaVA-1.5's own tokenization code (``llava-torch==1.1.1``)
in a side environment (``tests/released_stack.py``), against ours, on:

* every prompt the protocols send (macro, box, micro, candidate scoring under both selections), for
  every benchmark and every conversation template, through ``tokenizer_image_token``;
* the scoring and training conversations through LLaVA's ``preprocess`` (ids and label masks);
* random text with special tokens, both ways (ids and decodes);
* the tiny test tokenizers (``legacy`` false and true) and Llama-2's real vocabulary, rebuilt from the
  npm package ``llama-tokenizer-js`` (``tests/llama2_vocab.py``), itself checked against that
  package's encoder;
* CLIP pixel values, against 4.31's ``CLIPImageProcessor`` and LLaVA's ``process_images``.

``bash scripts/ci/fidelity_env.sh`` builds the side environment and fetches the package; .ci/run
does it and exports the variables below. Without them these tests skip locally and fail in CI.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from PIL import Image
from side_env import required_env

from dualfocus.benchmarks import get_protocol
from dualfocus.constants import IGNORE_INDEX
from dualfocus.conversation import SeparatorStyle, conv_templates
from dualfocus.focus.scoring import original_scoring_prompt
from dualfocus.mm_utils import process_images, tokenizer_image_token
from dualfocus.model.image_processor import clip_image_processor
from dualfocus.model.tokenizer import load_tokenizer
from dualfocus.preprocess import LabelMaskingError, preprocess
from dualfocus.tiny.tokenizer import train_llama_tokenizer, write_tokenizer_configs

HERE = Path(__file__).parent
pytestmark = pytest.mark.fidelity


def _env(name: str) -> str:
    return required_env(name, "fidelity_env.sh")


def released(request: dict, tmp_path: Path) -> dict:
    """What the released stack computes for ``request`` (see tests/released_stack.py)."""
    side_python = _env("DUALFOCUS_TF431_PYTHON")
    req, resp = tmp_path / "request.json", tmp_path / "response.json"
    req.write_text(json.dumps(request))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([side_python, str(HERE / "released_stack.py"), str(req), str(resp)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(resp.read_text())
    assert out["versions"]["transformers"] == "4.31.0"
    return out


# --- the prompts ---------------------------------------------------------------------------------

RECORDS = {
    "seed": {"question_id": "s1", "image": "a.jpg", "text": "What colour is the car?\nA. red\nB. blue\nC. green"
             "\nD. white\nAnswer with the option's letter from the given choices directly."},
    "gqa": {"question_id": "g1", "image": "a.jpg", "question": "Which side is the cup on?\nA. left\nB. right"},
    "textvqa": {"question_id": "t1", "image": "a.jpg", "text": "What is written on the sign?\nReference OCR token: "
                "STOP, ahead, 25\nAnswer the question using a single word or phrase."},
    "vqa": {"question_id": "v1", "image": "a.jpg", "text": "What is written on the sign that is red?"},
    "mmbench": {"index": 7, "question": "Which animal is bigger?", "hint": "Look at the left half.",
                "A": "the cat", "B": "the dog", "C": "a box", "D": float("nan")},
}
PROTOCOL_NAMES = tuple(RECORDS)  # the release's protocols: the ones its code can be compared with
BOX_TEXTS = ("[0.12, 0.34, 0.56, 0.78]", "[0.0, 0.0, 1.0, 1.0]", "The region is [0.5, 0.05, 0.95, 0.9].")
CANDIDATES = {"seed": ("B", "C"), "gqa": ("left", "right"), "textvqa": ("STOP", "ahead"),
              "vqa": ("7", "the red sign"), "mmbench": ("A", "D")}


def _prompt(conv_mode: str, messages, answer: str | None = None) -> str:
    conv = conv_templates[conv_mode].copy()
    for role, text in messages:
        conv.append_message(conv.roles[role], text)
    conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()


def _templates():
    """Every template a CLI accepts, except PLAIN, which cannot hold a two-turn conversation."""
    return [m for m, c in conv_templates.items() if c.sep_style != SeparatorStyle.PLAIN]


def protocol_prompts() -> list[str]:
    """Each protocol's macro, box and micro prompts and candidate-scored conversations, in every template."""
    prompts = []
    for name in PROTOCOL_NAMES:
        proto = get_protocol(name)
        q = proto.from_record(RECORDS[name])
        for mode in _templates():
            prompts += [_prompt(mode, [(0, proto.macro_prompt(q))]), _prompt(mode, [(0, proto.box_prompt(q))])]
            for box in BOX_TEXTS:
                prompts.append(_prompt(mode, proto.micro_messages(q, box)))
                prompts += [_prompt(mode, proto.micro_messages(q, box), c) for c in CANDIDATES[name]]
    return prompts


def scoring_conversations() -> list[dict]:
    """The original selection's scoring examples: one human turn + the candidate, under vicuna_v1."""
    items = []
    for name in PROTOCOL_NAMES:
        proto = get_protocol(name)
        q = proto.from_record(RECORDS[name])
        for box in BOX_TEXTS:
            human = original_scoring_prompt(proto, q, box, "vicuna_v1")
            items += [{"template": "v1", "has_image": True,
                       "source": [{"from": "human", "value": human}, {"from": "gpt", "value": c}]}
                      for c in CANDIDATES[name]]
    return items


def training_conversations() -> list[dict]:
    """Multi-round DualFocus training conversations (box turn, then the two-image answer), v1 and llama_2."""
    rounds = [("<image>\nWhat is on the sign? Please provide the bounding box coordinate of the region this "
               "question asks about.", "[0.1, 0.2, 0.4, 0.5]"),
              ("<image>\nPlease combine the information from these two images and answer this question.", "STOP"),
              ("And its colour?", "Red, with white letters.")]
    items = []
    for template in ("v1", "llama_2"):
        for n in (1, 2, 3):
            source = [{"from": s, "value": v} for h, a in rounds[:n] for s, v in (("human", h), ("gpt", a))]
            items.append({"template": template, "has_image": True, "source": source})
        text_only = [{"from": s, "value": v} for s, v in (("human", "Hi there"), ("gpt", "Hello."),
                                                           ("human", "USER: twice?"), ("gpt", "Yes </s> no"))]
        items.append({"template": template, "has_image": False, "source": text_only})
    return items


def random_texts(n: int = 300, seed: int = 0) -> list[str]:
    """Text around special tokens, with spaces, "▁", newlines, digits and non-ASCII characters."""
    rng = random.Random(seed)
    alphabet = list("abcXYZ .,:?019[]<>é中\n") + ["</s>", "<s>", "<unk>", "USER", " ASSISTANT", "▁", "  ",
                                                 "\n\n", "<image>", "Hello", " world", "😀"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))) for _ in range(n)]


# --- the comparison ------------------------------------------------------------------------------

def compare_tokenizer(tokenizer_dir: Path, tmp_path: Path) -> dict:
    ours = load_tokenizer(tokenizer_dir)
    prompts, scoring, training, texts = protocol_prompts(), scoring_conversations(), training_conversations(), \
        random_texts()
    ref = released({"tokenizer_dir": str(tokenizer_dir), "texts": texts, "image_prompts": prompts,
                    "conversations": scoring + training}, tmp_path)
    assert ref["tokenizer"]["class"] == "LlamaTokenizer" and ref["tokenizer"]["legacy"] == ours.legacy
    assert ours.pad_token_id == ref["tokenizer"]["pad_token_id"]
    for prompt, expected in zip(prompts, ref["image_prompts"], strict=True):
        assert tokenizer_image_token(prompt, ours) == expected, prompt
    for text, expected in zip(texts, ref["texts"], strict=True):
        ids = ours(text).input_ids
        assert ids == expected["ids"], repr(text)
        assert ours.decode(ids) == expected["decode"], repr(text)
        assert ours.decode(ids, skip_special_tokens=True) == expected["decode_skip"], repr(text)
    for item, expected in zip(scoring + training, ref["conversations"], strict=True):
        conv = conv_templates["vicuna_v1" if item["template"] == "v1" else item["template"]]
        if set(expected["labels"]) == {IGNORE_INDEX}:  # LLaVA's "tokenization mismatch": all masked
            with pytest.raises(LabelMaskingError):  # ours names it instead (docs/protocol.md)
                preprocess([item["source"]], ours, conv, has_image=item["has_image"])
            continue
        out = preprocess([item["source"]], ours, conv, has_image=item["has_image"])
        assert out["input_ids"][0].tolist() == expected["input_ids"], item
        assert out["labels"][0].tolist() == expected["labels"], item
    return {"prompts": prompts, "ours": ours, "reference": ref}


def test_prompts_cover_every_protocol_pass_and_template():
    prompts, modes = protocol_prompts(), _templates()
    assert len(prompts) >= 200 and len(modes) >= 10
    assert sum("</s>" in p for p in prompts) >= 100  # multi-turn: text after a special token
    assert any("Please combine the information" in p for p in prompts)


@pytest.mark.parametrize("legacy", [False, True], ids=["legacy-false", "legacy-true"])
def test_tiny_tokenizer_equals_transformers_4_31(tmp_path, legacy):
    tok_dir = train_llama_tokenizer(tmp_path / "tok", legacy=legacy)
    compare_tokenizer(tok_dir, tmp_path)


def test_tiny_vocabulary_without_the_stripped_piece_gives_unk_as_4_31(tmp_path):
    """legacy: false on a vocabulary trained without "</s>USER" text: "USER" is <unk> (id 0 = pad), in both."""
    tok_dir = write_tokenizer_configs(train_llama_tokenizer(tmp_path / "tok", legacy=True), legacy=False)
    ours = load_tokenizer(tok_dir)
    ref = released({"tokenizer_dir": str(tok_dir), "texts": ["red</s>USER: hi"]}, tmp_path)
    ids = ours("red</s>USER: hi").input_ids
    assert ids == ref["texts"][0]["ids"] and ids[ids.index(2) + 1] == 0


def test_added_tokens_equal_transformers_4_31(tmp_path):
    """added_tokens.json (LLaVA's <im_patch>): ids after the vocabulary, spaces around them stripped."""
    tok_dir = train_llama_tokenizer(tmp_path / "tok")
    (tok_dir / "added_tokens.json").write_text(json.dumps({"<im_patch>": 1000, "<im_start>": 1001}))
    texts = ["a <im_patch> b", "<im_start><im_patch>  x</s>USER <im_patch>", " <im_patch>\n"]
    ref = released({"tokenizer_dir": str(tok_dir), "texts": texts}, tmp_path)
    ours = load_tokenizer(tok_dir)
    for text, expected in zip(texts, ref["texts"], strict=True):
        ids = ours(text).input_ids
        assert ids == expected["ids"] and 1000 in ids, repr(text)
        assert (ours.decode(ids), ours.decode(ids, skip_special_tokens=True)) == (expected["decode"],
                                                                                  expected["decode_skip"])


@pytest.fixture(scope="module")
def llama2_js() -> Path:
    return Path(_env("DUALFOCUS_LLAMA_TOKENIZER_JS"))


@pytest.fixture(scope="module")
def llama2_dir(llama2_js, tmp_path_factory) -> Path:
    from llama2_vocab import write_tokenizer_dir

    return write_tokenizer_dir(llama2_js, tmp_path_factory.mktemp("llama2"), legacy=False)


def test_llama2_vocabulary_equals_the_package_encoder(llama2_js, llama2_dir, tmp_path):
    """The rebuilt model encodes 400+ texts as llama-tokenizer-js itself does, and gives Llama-2's known ids."""
    node = shutil.which("node") or pytest.fail("node is not installed")
    sp = spm.SentencePieceProcessor(model_file=str(llama2_dir / "tokenizer.model"))
    assert sp.get_piece_size() == 32000
    assert sp.encode("Hello world") == [15043, 3186] and sp.encode("USER:") == [3148, 1001, 29901]
    texts = [t.replace("</s>", "").replace("<s>", "").replace("<unk>", "") for t in random_texts(300, seed=1)]
    texts = [t for t in texts if t]  # the package encodes "" as no tokens at all
    texts += protocol_prompts()[:150]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = (f"import t from {json.dumps(llama2_js.as_uri())}; import fs from 'fs';"
              f"const xs = JSON.parse(fs.readFileSync({json.dumps(str(tmp_path / 'texts.json'))}, 'utf8'));"
              "console.log(JSON.stringify(xs.map(x => t.encode(x, true, true))));")
    run = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    expected = json.loads(run.stdout)
    assert len(texts) >= 400
    for text, ids in zip(texts, expected, strict=True):
        assert [1] + sp.encode(text) == ids, repr(text)


def test_llama2_vocabulary_equals_transformers_4_31(llama2_dir, tmp_path):
    result = compare_tokenizer(llama2_dir, tmp_path)
    ours = result["ours"]
    # The measured difference this fixes: "]</s>USER:" -> </s> US(3308) ER(1001), not ▁US(3148).
    ids = ours("[0.1, 0.2, 0.3, 0.4]</s>USER:").input_ids
    assert ids[ids.index(2) + 1: ids.index(2) + 3] == [3308, 1001]
    # With Llama-2's vocabulary no protocol prompt has an <unk>: the release's pad-masking never applies.
    assert not any(0 in tokenizer_image_token(p, ours) for p in result["prompts"])
    masked = [c for c in result["reference"]["conversations"] if set(c["labels"]) == {IGNORE_INDEX}]
    assert len(masked) == 2  # only the two conversations with "</s>" inside an answer mismatch


def test_tokenizer_loads_beside_protobuf_6(tiny_tokenizer_dir):
    """Loading reads tokenizer.model with sentencepiece alone, so the protobuf release does not matter."""
    side = _env("DUALFOCUS_PROTOBUF6_PYTHON")
    code = ("import sys, google.protobuf as p; from dualfocus.model.tokenizer import load_tokenizer;"
            f"t = load_tokenizer({str(tiny_tokenizer_dir)!r}); print(p.__version__, t('a</s>USER').input_ids)")
    run = subprocess.run([side, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    assert run.returncode == 0, run.stderr[-2000:]
    version, ids = run.stdout.split(" ", 1)
    assert version.startswith("6.")
    assert json.loads(ids) == load_tokenizer(tiny_tokenizer_dir)("a</s>USER").input_ids


def test_tokenizer_loading_never_imports_protobuf(tiny_tokenizer_dir):
    code = ("import sys; from dualfocus.model.tokenizer import load_tokenizer;"
            f"load_tokenizer({str(tiny_tokenizer_dir)!r})('x</s>USER: y'); print('google.protobuf' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-1] == "False"


def test_mmbench_empty_cells_as_the_release_decides(tmp_path):
    """Which MMBench cells are empty (no hint line, the options end): LLaVA's own is_none, run."""
    from dualfocus.benchmarks.mmbench import is_empty_cell

    cells = [None, "__nan__", "nan", "NaN", "none", "None", "", " ", "  ", "\t", "x", "0", " nan"]
    ref = released({"mmbench_cells": cells}, tmp_path)["mmbench_is_none"]
    ours = [is_empty_cell(float("nan") if c == "__nan__" else c) for c in cells]
    assert ours == ref
    assert ref[cells.index(" ")] is False  # a cell of spaces is content to the release


# --- pixels ----------------------------------------------------------------------------------------

def _images(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    shapes = [(480, 640), (640, 360), (336, 336), (17, 45), (900, 120), (5, 5)]
    paths = []
    for i, (h, w) in enumerate(shapes):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("size", [336, 56])
def test_pixels_equal_transformers_4_31_clip_processor(tmp_path, size):
    settings = {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size},
                "do_center_crop": True, "do_resize": True, "do_normalize": True, "do_rescale": True,
                "do_convert_rgb": True, "resample": 3, "rescale_factor": 1 / 255,
                "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    paths = _images(tmp_path)
    ref = released({"images": [str(p) for p in paths], "processor": settings}, tmp_path)
    ours = clip_image_processor(**settings)
    for path, (plain, pad) in zip(paths, ref["pixels"], strict=True):
        image = Image.open(path).convert("RGB")
        got = ours.preprocess(image, return_tensors="pt")["pixel_values"][0].numpy()
        np.testing.assert_array_equal(got, np.load(tmp_path / plain))
        got_pad = process_images([image], ours, types.SimpleNamespace(image_aspect_ratio="pad"))[0].numpy()
        np.testing.assert_array_equal(got_pad, np.load(tmp_path / pad))
