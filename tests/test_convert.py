"""Original LLaVA layout <-> transformers' llava-hf layout: the CLI, loading, and a lossless round trip."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlavaForConditionalGeneration

from dualfocus.constants import IMAGE_TOKEN_INDEX
from dualfocus.mm_utils import tokenizer_image_token
from dualfocus.model.builder import detect_layout, load_pretrained_model
from dualfocus.model.checkpoint_io import load_state_dict, weight_files
from dualfocus.model.convert import main, original_to_hf
from dualfocus.model.hf_layout import _LLAVA_FIELDS
from dualfocus.tiny.checkpoint import TinySpec, build_tiny_checkpoint, tiny_llava

IDS = [1, 10, 20, IMAGE_TOKEN_INDEX, 30, 40, 50]
PIXELS = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(11))
PROMPT = "A chat. USER: <image>\nWhat is  the colour of the car? ASSISTANT: red</s>USER: Yes ASSISTANT:"


def load(path):
    return load_pretrained_model(str(path), None, None, device="cpu")


def logits(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor([IDS]), images=PIXELS).logits


@pytest.fixture(scope="module")
def hf_dir(tiny_checkpoint, tmp_path_factory):
    """`python -m dualfocus.model.convert` of the tiny original checkpoint (default target: hf)."""
    out = tmp_path_factory.mktemp("convert") / "llava-hf"
    subprocess.run([sys.executable, "-m", "dualfocus.model.convert", "--src", str(tiny_checkpoint), "--dst", str(out)],
                   check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def original(tiny_checkpoint):
    return load(tiny_checkpoint)


def test_cli_writes_a_llava_hf_checkpoint(hf_dir, original):
    tokenizer, model, _, _ = original
    cfg = json.loads((hf_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaForConditionalGeneration"] and cfg["model_type"] == "llava"
    assert cfg["image_token_index"] == model.config.vocab_size
    assert detect_layout(hf_dir, None) == "hf"
    # transformers' own loader reads it, and its logits equal ours (HF input: one <image> id per feature).
    hf = LlavaForConditionalGeneration.from_pretrained(str(hf_dir)).eval()
    hf_ids = [t for i in IDS for t in ([cfg["image_token_index"]] * 4 if i == IMAGE_TOKEN_INDEX else [i])]
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor([hf_ids]), pixel_values=PIXELS).logits
    vocab = model.config.vocab_size
    assert (theirs[..., :vocab] - logits(model)).abs().max().item() <= 1e-4


def test_llava_hf_loads_as_the_original(hf_dir, original):
    tokenizer, model, processor, context_len = original
    hf_tokenizer, loaded, hf_processor, hf_context_len = load(hf_dir)
    assert loaded.config.vocab_size == model.config.vocab_size
    assert loaded.lm_head.weight.shape == model.lm_head.weight.shape
    assert torch.equal(logits(loaded), logits(model))
    assert tokenizer_image_token(PROMPT, hf_tokenizer) == tokenizer_image_token(PROMPT, tokenizer)
    assert hf_processor.crop_size == processor.crop_size and hf_context_len == context_len


def test_llava_hf_tokenizer_config_with_added_tokens_decoder_tokenizes_as_llava(hf_dir, original, tmp_path):
    """llava-hf ships tokenizer.model with `<image>` (and `<pad>`) in tokenizer_config.json's
    added_tokens_decoder: they load at their ids, and prompts tokenize as the original's."""
    tokenizer = original[0]
    ckpt = tmp_path / "llava-hf"
    shutil.copytree(hf_dir, ckpt)
    cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
    n = tokenizer.vocab_size
    cfg["added_tokens_decoder"] = {str(n): {"content": "<image>", "special": True},
                                   str(n + 1): {"content": "<pad>", "special": True}}
    cfg["pad_token"] = "<pad>"
    (ckpt / "tokenizer_config.json").write_text(json.dumps(cfg))
    special = json.loads((ckpt / "special_tokens_map.json").read_text())
    (ckpt / "special_tokens_map.json").write_text(json.dumps({**special, "pad_token": "<pad>"}))
    (ckpt / "added_tokens.json").unlink(missing_ok=True)
    hf_tokenizer = load(ckpt)[0]
    assert (hf_tokenizer.convert_tokens_to_ids("<image>"), hf_tokenizer.pad_token_id) == (n, n + 1)
    assert tokenizer_image_token(PROMPT, hf_tokenizer) == tokenizer_image_token(PROMPT, tokenizer)
    assert hf_tokenizer(" hello").input_ids == tokenizer(" hello").input_ids


def test_a_tokenizer_without_tokenizer_model_is_named(hf_dir, tmp_path):
    """transformers 5 saves tokenizer.json alone; without the sentencepiece model there is nothing to
    tokenize as the released stack did, so the loader says which file is missing."""
    from dualfocus.model.tokenizer import TokenizerFileError

    ckpt = tmp_path / "llava-hf"
    shutil.copytree(hf_dir, ckpt, ignore=shutil.ignore_patterns("tokenizer.model"))
    with pytest.raises(TokenizerFileError, match="no tokenizer.model"):
        load(ckpt)


def test_round_trip_is_lossless(hf_dir, tiny_checkpoint, original, tmp_path):
    back = tmp_path / "back"
    main(["--src", str(hf_dir), "--dst", str(back)])  # default target from an hf source: original
    assert detect_layout(back, None) == "original"

    before = load_state_dict(weight_files(tiny_checkpoint))
    after = load_state_dict(weight_files(back))
    clip = load_file(tiny_checkpoint.parent / "llava-clip" / "model.safetensors")
    tower = "model.vision_tower.vision_tower."
    assert set(after) == set(before) | {tower + k for k in clip}  # the tower now travels inside
    for key, tensor in before.items():
        assert torch.equal(after[key], tensor), key
    for key, tensor in clip.items():
        assert torch.equal(after[tower + key], tensor), key

    cfg_before = json.loads((tiny_checkpoint / "config.json").read_text())
    cfg_after = json.loads((back / "config.json").read_text())
    llama_fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
                    "rope_parameters", "bos_token_id", "eos_token_id", "pad_token_id")
    for field in (*_LLAVA_FIELDS, *llama_fields, "model_type"):
        if field == "mm_vision_config":  # None before (read from the tower dir); now the checkpoint carries it
            assert cfg_after[field]["hidden_size"] == 32 and cfg_after[field]["num_hidden_layers"] == 2
            continue
        assert cfg_after.get(field) == cfg_before.get(field), field

    tokenizer, model, _, _ = original
    back_tokenizer, loaded, _, _ = load(back)
    assert torch.equal(logits(loaded), logits(model))
    assert tokenizer_image_token(PROMPT, back_tokenizer) == tokenizer_image_token(PROMPT, tokenizer)


def test_non_default_llava_fields_survive_the_round_trip(tiny_checkpoint, tmp_path):
    from dualfocus.model.convert import hf_to_original

    _, model, _, _ = load(tiny_checkpoint)
    fields = dict(image_aspect_ratio="square", tokenizer_model_max_length=77, tokenizer_padding_side="left",
                  mm_vision_tower="some/where")
    for k, v in fields.items():
        setattr(model.config, k, v)
    back = hf_to_original(original_to_hf(model))
    for k, v in fields.items():
        assert getattr(back.config, k) == v, k


@pytest.mark.parametrize("select", [("cls_patch", -2, 5), ("patch", -1, 4)])
def test_feature_selection_maps_to_llava_hf(select):
    """cls_patch <-> llava-hf "full" (CLS kept), and the selected layer, give the same logits."""
    feature, layer, n_tokens = select
    model = tiny_llava(TinySpec(select_feature=feature, select_layer=layer), seed=3)
    hf = original_to_hf(model).eval()
    hf_ids = [t for i in IDS for t in ([hf.config.image_token_id] * n_tokens if i == IMAGE_TOKEN_INDEX else [i])]
    with torch.no_grad():
        ours = logits(model)
        theirs = hf(input_ids=torch.tensor([hf_ids]), pixel_values=PIXELS).logits
    assert ours.shape[1] == len(IDS) - 1 + n_tokens
    assert (theirs[..., : model.config.vocab_size] - ours).abs().max().item() <= 1e-4


def test_only_mlp2x_gelu_converts(tmp_path, tiny_tokenizer_dir):
    model = tiny_llava(TinySpec(projector="linear"))
    with pytest.raises(ValueError, match="only the mlp2x_gelu projector, not 'linear'"):
        original_to_hf(model)
    ckpt = build_tiny_checkpoint(tmp_path / "linear", spec=TinySpec(projector="linear"), tokenizer_dir=tiny_tokenizer_dir)
    with pytest.raises(ValueError, match="mlp2x_gelu"):
        main(["--src", str(ckpt), "--dst", str(tmp_path / "out")])
