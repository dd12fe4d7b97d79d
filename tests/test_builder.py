"""load_pretrained_model: every checkpoint layout loads to the same model; broken ones fail by name.

All variants are built from the same seed, so each must give the reference logits of the
original-layout `tiny_checkpoint`.
"""

import importlib.util
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from dualfocus.constants import IMAGE_TOKEN_INDEX
from dualfocus.model.builder import CheckpointError, load_pretrained_model
from dualfocus.tiny.checkpoint import build_tiny_checkpoint

IDS = torch.tensor([[1, 10, 20, IMAGE_TOKEN_INDEX, 30, 40, 50]])
PIXELS = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(7))
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


def load(path, model_base=None, **kw):
    kw.setdefault("device", "cpu")
    return load_pretrained_model(str(path), str(model_base) if model_base else None, None, **kw)


def logits(model, ids=IDS, pixels=PIXELS):
    with torch.no_grad():
        return model(input_ids=ids, images=pixels).logits


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    _, model, _, _ = load(tiny_checkpoint)
    return logits(model)


def copy_checkpoint(src, dst):
    shutil.copytree(src, dst)
    return dst


def edit_config(path, **fields):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(fields)
    (path / "config.json").write_text(json.dumps(cfg))


# -- original layout ------------------------------------------------------------------------------
def test_original_safetensors(tiny_checkpoint, reference):
    tokenizer, model, processor, context_len = load(tiny_checkpoint)
    assert (tiny_checkpoint / "model.safetensors").is_file()
    assert not any(k.startswith("model.vision_tower.") for k in load_file(tiny_checkpoint / "model.safetensors"))
    assert context_len == 2048
    assert processor.crop_size == {"height": 28, "width": 28}
    assert tokenizer("hello").input_ids[0] == 1 and len(tokenizer) == model.config.vocab_size
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    assert reference.shape == (1, 7 - 1 + 4, model.config.vocab_size)
    # The tower's weights are the CLIP directory's (mm_vision_tower), not random.
    clip = load_file(tiny_checkpoint.parent / "llava-clip" / "model.safetensors")
    tower = model.model.vision_tower.vision_tower.state_dict()
    key = "vision_model.encoder.layers.0.self_attn.q_proj.weight"
    assert torch.equal(tower.get(key, tower.get(key.removeprefix("vision_model."))), clip[key])


def test_original_sharded_safetensors(tmp_path, tiny_tokenizer_dir, reference):
    ckpt = build_tiny_checkpoint(tmp_path / "sharded", tokenizer_dir=tiny_tokenizer_dir, max_shard_bytes=100_000)
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and not (ckpt / "model.safetensors").exists()
    _, model, _, _ = load(ckpt)
    assert torch.equal(logits(model), reference)


def test_original_bin(tmp_path, tiny_tokenizer_dir, reference):
    ckpt = build_tiny_checkpoint(tmp_path / "bin", tokenizer_dir=tiny_tokenizer_dir, safe_serialization=False)
    assert (ckpt / "pytorch_model.bin").is_file() and not (ckpt / "model.safetensors").exists()
    _, model, _, _ = load(ckpt)
    assert torch.equal(logits(model), reference)


def test_original_with_tower_inside_and_mm_vision_tower_nowhere(tmp_path, tiny_tokenizer_dir, reference):
    ckpt = build_tiny_checkpoint(tmp_path / "inside", tokenizer_dir=tiny_tokenizer_dir,
                                 include_vision_tower=True, self_describing=True)
    shutil.rmtree(tmp_path / "inside-clip")
    edit_config(ckpt, mm_vision_tower=str(tmp_path / "nowhere" / "clip-vit-large-patch14-336"))
    keys = load_file(ckpt / "model.safetensors")
    assert "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight" in keys
    assert json.loads((ckpt / "config.json").read_text())["mm_vision_config"]["hidden_size"] == 32
    _, model, processor, _ = load(ckpt)
    assert processor.crop_size == {"height": 28, "width": 28}
    assert torch.equal(logits(model), reference)


def test_model_name_and_directory_name_are_not_consulted(tiny_checkpoint, tmp_path, reference):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "llava-v1.5-7b-lora-mm_projector")
    _, model, _, _ = load_pretrained_model(str(ckpt), None, "llava-v1.5-7b-lora", device="cpu")
    assert torch.equal(logits(model), reference)


def test_full_checkpoint_with_model_base_is_refused(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="full checkpoint; model_base"):
        load(tiny_checkpoint, model_base=tiny_checkpoint)


@pytest.fixture(scope="module")
def vicuna(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint's language model alone, as a plain Llama directory (like lmsys/vicuna-7b-v1.5)."""
    _, model, _, _ = load(tiny_checkpoint)
    cfg = model.config
    llm = LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    ))
    llm.load_state_dict({k: v for k, v in model.state_dict().items()
                         if not k.startswith(("model.vision_tower.", "model.mm_projector."))}, strict=True)
    out = tmp_path_factory.mktemp("vicuna") / "vicuna"
    llm.save_pretrained(str(out))
    for f in TOKENIZER_FILES:
        shutil.copy(tiny_checkpoint / f, out / f)
    return out


# -- LoRA -------------------------------------------------------------------------------------------
def save_like_llava_train(peft_model, out):
    """What LLaVA's train.py does at the end of a LoRA run (safe_save_model_for_hf_trainer's LoRA branch)."""
    named = list(peft_model.named_parameters())
    lora_state = {k: v.detach().clone() for k, v in named if "lora_" in k}
    non_lora = {k: v.detach().clone() for k, v in named if "lora_" not in k and v.requires_grad}
    peft_model.config.save_pretrained(out)
    peft_model.save_pretrained(out, state_dict=lora_state)
    torch.save(non_lora, out / "non_lora_trainables.bin")


@pytest.mark.parametrize("base", ["llava", "vicuna"])
def test_lora_merged_equals_peft_model(base, tiny_checkpoint, vicuna, tmp_path, reference):
    """LoRA on q_proj/v_proj + a trained projector, saved as LLaVA's train.py does, on either base:
    the LLaVA checkpoint itself, or the plain LLM (LLaVA's usual case: the projector comes only
    from non_lora_trainables.bin)."""
    from peft import LoraConfig, get_peft_model

    _, base, _, _ = load(tiny_checkpoint)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: the adapter would be a no-op
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        projector = peft_model.base_model.model.model.mm_projector
        projector.requires_grad_(True)  # trained alongside LoRA, saved in non_lora_trainables.bin
        for p in projector.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    out = tmp_path / "llava-lora"
    out.mkdir()
    save_like_llava_train(peft_model, out)
    non_lora = torch.load(out / "non_lora_trainables.bin", weights_only=True)
    assert sorted(non_lora) == [f"base_model.model.model.mm_projector.{i}.{w}" for i in (0, 2) for w in ("bias", "weight")]
    assert (out / "adapter_config.json").is_file() and not (out / "tokenizer.model").exists()
    expected = logits(peft_model.eval())
    assert (expected - reference).abs().max().item() > 1e-2  # the adapter and projector matter

    tokenizer, merged, _, _ = load(out, model_base=tiny_checkpoint if base == "llava" else vicuna)
    assert tokenizer("hello").input_ids[0] == 1  # taken from model_base
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert type(merged).__name__ == "LlavaLlamaForCausalLM"
    assert (logits(merged) - expected).abs().max().item() <= 1e-5


def test_lora_without_model_base_names_the_adapter_config(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"adapter_config\.json.*model_base"):
        load(tmp_path)


# -- projector only ------------------------------------------------------------------------------
def test_projector_only_on_a_plain_llama_base(tiny_checkpoint, vicuna, tmp_path, reference):
    _, model, _, _ = load(tiny_checkpoint)
    proj = tmp_path / "llava-pretrain"
    proj.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", proj / "config.json")
    torch.save({k: v for k, v in model.state_dict().items() if k.startswith("model.mm_projector.")},
               proj / "mm_projector.bin")

    _, loaded, _, _ = load(proj, model_base=vicuna)
    assert torch.equal(logits(loaded), reference)
    with pytest.raises(CheckpointError, match=r"mm_projector\.bin.*model_base"):
        load(proj)


# -- errors -----------------------------------------------------------------------------------------
def test_missing_config_json(tiny_checkpoint, tmp_path):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"ckpt: missing config\.json"):
        load(ckpt)


def test_missing_directory():
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load("./does-not-exist")


@pytest.fixture()
def no_hub(monkeypatch):
    """Any call to the hub fails the test."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kw: pytest.fail(f"the hub was asked for {repo_id!r}"))


@pytest.mark.parametrize("name", ["checkpoints/zoom-modle", "./checkpoints/zoom-modle", "checkpoints/zoom-modle/",
                                  "a/b/c", "~/no-such-folder/ckpt", "/no-such-folder/ckpt"])
def test_a_path_with_a_typo_is_a_missing_directory_not_a_hub_id(tmp_path, monkeypatch, no_hub, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "zoom-model").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=rf"checkpoint directory {name} does not exist.*; check the path"):
        load(name)


def test_a_typo_names_the_nearest_folder(tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "dualfocus-zoom-tiny").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"\(checkpoints has no dualfocus-zoom-tny; did you mean "
                                                r"checkpoints/dualfocus-zoom-tiny\?\)"):
        load("checkpoints/dualfocus-zoom-tny")


def test_an_org_slash_name_without_such_a_local_folder_goes_to_the_hub(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: (_ for _ in ()).throw(
        OSError(f"offline: {repo_id}\nsecond line")))
    with pytest.raises(CheckpointError, match=r"^liuhaotian/llava-v1\.5-7b: no local directory of that name, and "
                                              r"the Hugging Face hub could not provide it as a model id \(offline: "
                                              r"liuhaotian/llava-v1\.5-7b\); check the path, or the id and the network$"):
        load("liuhaotian/llava-v1.5-7b")


def test_unknown_projector_type(tiny_checkpoint, tmp_path):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    edit_config(ckpt, mm_projector_type="mlp2x_relu")
    with pytest.raises(ValueError, match="mm_projector_type 'mlp2x_relu'"):
        load(ckpt)


def test_weight_of_wrong_shape(tiny_checkpoint, tmp_path):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    state = load_file(ckpt / "model.safetensors")
    state["model.mm_projector.0.weight"] = torch.zeros(64, 31)
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"ckpt: weight model\.mm_projector\.0\.weight has shape \(64, 31\), "
                                              r"the config needs \(64, 32\)"):
        load(ckpt)


def test_missing_weight_is_named(tiny_checkpoint, tmp_path):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    state = load_file(ckpt / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"weights missing for model\.layers\.1\.mlp\.up_proj\.weight"):
        load(ckpt)


def test_vision_tower_that_does_not_exist(tiny_checkpoint, tmp_path):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    missing = str(tmp_path / "no-such-clip")
    edit_config(ckpt, mm_vision_tower=missing)
    with pytest.raises(FileNotFoundError, match=rf"vision tower '{missing}' \(mm_vision_tower in .*config\.json\) does not exist"):
        load(ckpt)


def test_vision_tower_without_config_json_is_named(tiny_checkpoint, tmp_path):
    """Not CLIP-L's defaults and a shape error: the folder and the missing file, by name."""
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    clip = copy_checkpoint(tiny_checkpoint.parent / f"{tiny_checkpoint.name}-clip", tmp_path / "clip")
    (clip / "config.json").unlink()
    edit_config(ckpt, mm_vision_tower=str(clip))
    with pytest.raises(CheckpointError, match=rf"vision tower {clip} \(mm_vision_tower in .*ckpt/config\.json\): "
                                              r"missing config\.json; copy the CLIP tower's config\.json"):
        load(ckpt)


def test_truncated_safetensors(tiny_checkpoint, tmp_path):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    f = ckpt / "model.safetensors"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"model\.safetensors: cannot be read as a safetensors file"):
        load(ckpt)


def test_keys_old_checkpoints_carry_are_ignored(tiny_checkpoint, tmp_path, reference):
    """liuhaotian/llava-v1.5-* (transformers 4.31) store rotary inv_freq and CLIP position_ids buffers."""
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    state = load_file(ckpt / "model.safetensors")
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    state["model.vision_tower.vision_tower.vision_model.embeddings.position_ids"] = torch.arange(5)[None]
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    _, model, _, _ = load(ckpt)
    assert torch.equal(logits(model), reference)


def test_corrupt_bin(tmp_path, tiny_tokenizer_dir):
    ckpt = build_tiny_checkpoint(tmp_path / "bin", tokenizer_dir=tiny_tokenizer_dir, safe_serialization=False)
    (ckpt / "pytorch_model.bin").write_bytes(b"not a torch file" * 100)
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: cannot be read as a weights-only torch checkpoint"):
        load(ckpt)


class _Payload:
    """Unpickling this calls open(marker, "w"): arbitrary code, which weights_only must refuse."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_bin_with_arbitrary_object_is_refused(tmp_path, tiny_tokenizer_dir):
    ckpt = build_tiny_checkpoint(tmp_path / "bin", tokenizer_dir=tiny_tokenizer_dir, safe_serialization=False)
    marker = tmp_path / "pwned"
    state = torch.load(ckpt / "pytorch_model.bin", weights_only=True)
    state["model.norm.weight"] = _Payload(str(marker))
    torch.save(state, ckpt / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: cannot be read as a weights-only"):
        load(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("auto_class", ["AutoConfig", "AutoTokenizer", "AutoModelForCausalLM"])
def test_checkpoint_code_is_never_run(tiny_checkpoint, tmp_path, monkeypatch, auto_class):
    """auto_map + an unknown model_type: transformers would ask "run the custom code? [y/N]"; a user says y."""
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    marker = tmp_path / "pwned"
    (ckpt / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                  "from transformers import PretrainedConfig\n"
                                  "class Evil(PretrainedConfig):\n    model_type = 'evil_llava'\n")
    target = ["evil.Evil", None] if auto_class == "AutoTokenizer" else "evil.Evil"
    edit_config(ckpt, model_type="evil_llava", auto_map={auto_class: target})
    monkeypatch.setattr("builtins.input", lambda *a, **k: "y")
    with pytest.raises(CheckpointError, match=r"ckpt/config\.json: model_type 'evil_llava' with auto_map is a model "
                                              r"that needs its own Python code, which dualfocus never runs"):
        load(ckpt)
    assert not marker.exists()


def test_trust_remote_code_true_is_refused_not_ignored(tiny_checkpoint):
    with pytest.raises(ValueError, match=r"trust_remote_code=True: dualfocus builds its own LLaVA model and never "
                                         r"runs a checkpoint's code; drop the option"):
        load(tiny_checkpoint, trust_remote_code=True)
    with pytest.raises(TypeError, match=r"load_pretrained_model got unknown option\(s\) cache_dir, revision"):
        load(tiny_checkpoint, revision="main", cache_dir="/tmp")


def test_index_naming_a_missing_shard(tmp_path, tiny_tokenizer_dir):
    ckpt = build_tiny_checkpoint(tmp_path / "sharded", tokenizer_dir=tiny_tokenizer_dir, max_shard_bytes=100_000)
    shard = sorted(json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"].values())[-1]
    (ckpt / shard).unlink()
    with pytest.raises(FileNotFoundError, match=rf"index\.json names shard\(s\) that do not exist: {shard}"):
        load(ckpt)


def _sharded_with_last_shard_named(tmp_path, tiny_tokenizer_dir, name):
    ckpt = build_tiny_checkpoint(tmp_path / "sharded", tokenizer_dir=tiny_tokenizer_dir, max_shard_bytes=100_000)
    index_file = ckpt / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    last = sorted(index["weight_map"].values())[-1]
    index["weight_map"] = {k: (name if v == last else v) for k, v in index["weight_map"].items()}
    index_file.write_text(json.dumps(index))
    return ckpt, last


@pytest.mark.parametrize("name", ["../outside/x.safetensors", "/etc/hostname"])
def test_index_naming_a_file_outside_the_checkpoint_is_refused(tmp_path, tiny_tokenizer_dir, name):
    ckpt, last = _sharded_with_last_shard_named(tmp_path, tiny_tokenizer_dir, name)
    outside = tmp_path / "outside"
    outside.mkdir()
    (ckpt / last).rename(outside / "x.safetensors")  # a real shard there: only confinement refuses it
    with pytest.raises(CheckpointError, match=rf"index\.json names weight file '{name}', which is not a plain "
                                              r"file name inside .*sharded; refusing to read outside the checkpoint"):
        load(ckpt)


def test_shard_symlinked_outside_the_checkpoint_is_refused(tmp_path, tiny_tokenizer_dir):
    ckpt, last = _sharded_with_last_shard_named(tmp_path, tiny_tokenizer_dir, "link.safetensors")
    (ckpt / last).rename(tmp_path / "elsewhere.safetensors")
    (ckpt / "link.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(CheckpointError, match=r"names link\.safetensors, a link to .*elsewhere\.safetensors outside "
                                              r".*sharded; refusing to read outside the checkpoint"):
        load(ckpt)


def test_single_weight_file_symlinked_outside_is_refused(tiny_checkpoint, tmp_path):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    (ckpt / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    (ckpt / "model.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(CheckpointError, match=r"ckpt: model\.safetensors, a link to .* outside"):
        load(ckpt)


def test_a_hub_snapshot_loads_and_the_same_layout_elsewhere_is_refused(tiny_checkpoint, tmp_path, monkeypatch,
                                                                        reference):
    """In the hub cache, snapshots/<rev>/model.safetensors -> ../../blobs/<hash> (as huggingface_hub
    writes it) is allowed; the same links outside the cache are not (no decision by folder names)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for cache in ("hub", "elsewhere"):
        repo = tmp_path / cache / "models--org--tiny"
        snap = copy_checkpoint(tiny_checkpoint, repo / "snapshots" / "abc123")
        (repo / "blobs").mkdir()
        (snap / "model.safetensors").rename(repo / "blobs" / "deadbeef")
        (snap / "model.safetensors").symlink_to("../../blobs/deadbeef")
    _, model, _, _ = load(tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123")
    assert torch.equal(logits(model), reference)
    with pytest.raises(CheckpointError, match=r"model\.safetensors, a link to .*elsewhere.*deadbeef outside"):
        load(tmp_path / "elsewhere" / "models--org--tiny" / "snapshots" / "abc123")


# -- options ------------------------------------------------------------------------------------------
def _hide(monkeypatch, package):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == package else real(name, *a, **k))


def test_load_4bit_without_bitsandbytes(tiny_checkpoint, monkeypatch):
    _hide(monkeypatch, "bitsandbytes")
    with pytest.raises(ImportError, match="4/8-bit loading needs bitsandbytes"):
        load(tiny_checkpoint, load_4bit=True)
    with pytest.raises(ImportError, match="bitsandbytes"):
        load(tiny_checkpoint, load_8bit=True)


def test_flash_attn_without_flash_attn(tiny_checkpoint, monkeypatch):
    _hide(monkeypatch, "flash_attn")
    with pytest.raises(ImportError, match="flash_attention_2 needs the flash-attn package"):
        load(tiny_checkpoint, use_flash_attn=True)


def test_cuda_without_cuda_falls_back_to_cpu_fp32(tiny_checkpoint, monkeypatch, reference):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, model, _, _ = load(tiny_checkpoint, device="cuda")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.equal(logits(model), reference)


def test_eager_attention_matches_sdpa(tiny_checkpoint, reference):
    _, model, _, _ = load(tiny_checkpoint, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    assert (logits(model) - reference).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="unknown attention implementation 'flex'"):
        load(tiny_checkpoint, attn_implementation="flex")


def test_torch_dtype_string(tiny_checkpoint):
    _, model, _, _ = load(tiny_checkpoint, torch_dtype="bf16")
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.model.vision_tower.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        load(tiny_checkpoint, torch_dtype="fp8")
