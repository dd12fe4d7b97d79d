"""Shared pytest fixtures."""

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    """A directory with a tiny Llama-style tokenizer (LLaVA-1.5 file layout), trained once per session."""
    from dualfocus.tiny.tokenizer import train_llama_tokenizer

    return train_llama_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_tokenizer_dir):
    """A tiny LLaVA-1.5 checkpoint in the original layout (like liuhaotian/llava-v1.5-7b): config.json,
    model.safetensors without the tower, the tokenizer; its CLIP tower in `<dir>-clip` beside it.

    Session-wide and shared: copy it before changing anything in it.
    """
    from dualfocus.tiny.checkpoint import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_llava") / "llava", tokenizer_dir=tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def focus_checkpoint(tmp_path_factory, tiny_tokenizer_dir):
    """A tiny LLaVA trained to follow the DualFocus protocol on `focus_model.CASES` (about 10 s, once),
    in the original layout. Session-wide and shared: copy it before changing anything in it.
    """
    from focus_model import train_focus_checkpoint

    return train_focus_checkpoint(tmp_path_factory.mktemp("focus_llava") / "llava", tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def focus_loaded(focus_checkpoint):
    """`load_pretrained_model(focus_checkpoint)` on CPU: (tokenizer, model, image_processor). Do not modify."""
    from dualfocus.model.builder import load_pretrained_model

    tokenizer, model, image_processor, _ = load_pretrained_model(str(focus_checkpoint), None, None, device="cpu")
    return tokenizer, model, image_processor


@pytest.fixture()
def one_thread():
    """Two shared CPUs: more threads than cores slow these tiny matmuls by 10x or more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
