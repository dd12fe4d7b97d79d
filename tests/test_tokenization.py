"""The tiny tokenizer, load_tokenizer vs sentencepiece, and tokenizer_image_token (LLaVA's legacy ids)."""

import json
import time
import types

import pytest
import sentencepiece as spm
import torch

from dualfocus.constants import IMAGE_TOKEN_INDEX
from dualfocus.conversation import conv_templates
from dualfocus.mm_utils import tokenizer_image_token
from dualfocus.tiny.tokenizer import load_tokenizer, train_llama_tokenizer

BOS = 1


@pytest.fixture(scope="module")
def sp(tiny_tokenizer_dir):
    return spm.SentencePieceProcessor(model_file=str(tiny_tokenizer_dir / "tokenizer.model"))


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return load_tokenizer(tiny_tokenizer_dir)


def _vicuna_prompt(*questions):
    conv = conv_templates["vicuna_v1"].copy()
    for i, q in enumerate(questions):
        conv.append_message(conv.roles[0], q)
        conv.append_message(conv.roles[1], "[0.12, 0.34, 0.56, 0.78]" if i < len(questions) - 1 else None)
    return conv.get_prompt()


def test_training_is_fast_and_deterministic(tmp_path, tiny_tokenizer_dir):
    start = time.perf_counter()
    out = train_llama_tokenizer(tmp_path / "again")
    assert time.perf_counter() - start < 2.0
    assert (out / "tokenizer.model").read_bytes() == (tiny_tokenizer_dir / "tokenizer.model").read_bytes()


def test_sentencepiece_model_is_llama_like(sp):
    assert sp.get_piece_size() == 1000
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert sp.id_to_piece(3) == "<0x00>"  # byte fallback pieces follow the specials
    assert sp.encode("2024", out_type=str) == ["▁", "2", "0", "2", "4"]  # split digits, dummy prefix
    assert sp.encode("a  b", out_type=str)[-2:] == ["▁", "▁b"]  # whitespace kept as is
    assert sp.encode("é", out_type=str) == ["▁", "<0xC3>", "<0xA9>"]  # bytes for unseen characters
    assert sp.decode(sp.encode("USER: <image>\nHi")) == "USER: <image>\nHi"


def test_files_are_laid_out_like_llava_1_5(tiny_tokenizer_dir):
    cfg = json.loads((tiny_tokenizer_dir / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "LlamaTokenizer"
    assert (cfg["add_bos_token"], cfg["add_eos_token"], cfg["legacy"]) == (True, False, False)
    assert (cfg["model_max_length"], cfg["padding_side"], cfg["pad_token"]) == (2048, "right", None)
    special = json.loads((tiny_tokenizer_dir / "special_tokens_map.json").read_text())
    assert special["pad_token"] == "<unk>"
    assert special["bos_token"]["content"] == "<s>"


def test_load_tokenizer_returns_transformers_5_llama_tokenizer(tok):
    from transformers import LlamaTokenizer

    assert isinstance(tok, LlamaTokenizer)  # tokenizers-backed in transformers 5 (use_fast is ignored)
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id) == (1, 2, 0, 0)
    assert (tok.padding_side, tok.model_max_length) == ("right", 2048)
    assert tok("").input_ids == [BOS]


TEXTS = [
    "A chat between a curious user and an artificial intelligence assistant. USER: ",
    "\nWhat is the colour of the car? ASSISTANT:",
    "\nPlease combine the information from these two images and answer this question. ASSISTANT:",
    " hello",  # leading space: sentencepiece gives "▁" + "▁he..."
    "  two leading spaces",
    "trailing space ",
    "\n\n",
    "[0.12, 0.34, 0.56, 0.78]",
    "Answer with the option's letter from the given choices directly.",
    "é 中 ünïcode",
    "[INST] <<SYS>>\nYou are a helpful language and vision assistant.\n<</SYS>>\n\n",
]


@pytest.mark.parametrize("text", TEXTS)
def test_text_tokenizes_exactly_as_sentencepiece(tok, sp, text):
    assert tok(text).input_ids == [BOS] + sp.encode(text)


def test_text_after_a_special_token_gets_the_dummy_prefix(tok, sp):
    ids = tok("red</s>USER: <image>").input_ids
    assert ids == [BOS] + sp.encode("red") + [2] + sp.encode("USER: <image>")
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[tokens.index("</s>") + 1] == "▁USER"


def test_plain_transformers_5_load_differs_from_sentencepiece(tiny_tokenizer_dir, sp):
    """Why load_tokenizer exists: AutoTokenizer alone (legacy: false) drops two "▁" that LLaVA relied on."""
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir), use_fast=False)
    assert raw.convert_ids_to_tokens(raw("x</s>USER").input_ids)[-3:] == ["</s>", "US", "ER"]
    assert raw(" hello").input_ids != [BOS] + sp.encode(" hello")


def test_image_token_one_image(tok, sp):
    prompt = _vicuna_prompt("<image>\nWhat is the colour of the car?")
    before, after = prompt.split("<image>")
    ids = tokenizer_image_token(prompt, tok)
    assert ids == [BOS] + sp.encode(before) + [IMAGE_TOKEN_INDEX] + sp.encode(after)
    # The "\n" after the image is its own chunk start: dummy "▁" then the newline byte (Llama's 29871, 13).
    pieces = [sp.id_to_piece(i) for i in ids[ids.index(IMAGE_TOKEN_INDEX) + 1 :][:2]]
    assert pieces == ["▁", "<0x0A>"]
    assert ids.count(BOS) == 1


def test_image_token_two_images(tok, sp):
    prompt = _vicuna_prompt(
        "<image>\nWhat is the colour of the car? Please provide the bounding box coordinate of the region "
        "this question asks about.",
        "<image>\nPlease combine the information from these two images and answer this question.",
    )
    c0, c1, c2 = prompt.split("<image>")
    assert "</s>" in c1  # the first answer's end is text inside a chunk: a special token there
    a, b = c1.split("</s>")
    expected = (
        [BOS] + sp.encode(c0) + [IMAGE_TOKEN_INDEX] + sp.encode(a) + [2] + sp.encode(b) + [IMAGE_TOKEN_INDEX]
    ) + sp.encode(c2)
    assert tokenizer_image_token(prompt, tok) == expected
    tensor = tokenizer_image_token(prompt, tok, return_tensors="pt")
    assert tensor.dtype == torch.long and tensor.tolist() == expected


def test_image_token_edge_cases(tok):
    assert tokenizer_image_token("<image>", tok) == [BOS, IMAGE_TOKEN_INDEX]
    assert tokenizer_image_token("<image><image>", tok, image_token_index=-7) == [BOS, -7, -7]
    with pytest.raises(ValueError, match="Unsupported tensor type"):
        tokenizer_image_token("<image>", tok, return_tensors="np")


def test_image_token_algorithm_without_bos():
    """LLaVA's rule: the first token of every later chunk is dropped only when the first chunk starts with BOS."""

    class Tok:
        bos_token_id = 9

        def __init__(self, add_bos):
            self.add_bos = add_bos

        def __call__(self, text):
            return types.SimpleNamespace(input_ids=([9] if self.add_bos else []) + [ord(c) for c in text])

    assert tokenizer_image_token("ab<image>c", Tok(True)) == [9, 97, 98, -200, 99]
    assert tokenizer_image_token("ab<image>c", Tok(False)) == [97, 98, -200, 99]


def test_random_text_tokenizes_exactly_as_sentencepiece(tok, sp):
    import random

    rng = random.Random(0)
    alphabet = list("abcXYZ .,:?019[]<>é\n") + ["USER", " ASSISTANT", "the ", "  ", "\n\n", "<image>"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        assert tok(text).input_ids == [BOS] + sp.encode(text), repr(text)


def test_saved_and_reloaded_tokenizer_keeps_the_legacy_behaviour(tok, sp, tmp_path):
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    for text in TEXTS:
        assert again(text).input_ids == [BOS] + sp.encode(text)
    assert (again.pad_token, again.padding_side, again.model_max_length) == ("<unk>", "right", 2048)
