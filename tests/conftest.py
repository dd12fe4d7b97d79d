"""Shared pytest fixtures."""

import pytest


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    """A directory with a tiny Llama-style tokenizer (LLaVA-1.5 file layout), trained once per session."""
    from dualfocus.tiny.tokenizer import train_llama_tokenizer

    return train_llama_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))
