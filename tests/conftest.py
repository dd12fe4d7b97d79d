"""Shared pytest fixtures."""

import pytest


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
