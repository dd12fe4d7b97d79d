"""The tiny tokenizer, load_tokenizer's two legacy modes vs sentencepiece, and tokenizer_image_token.

tests/test_fidelity.py proves the same behaviour against transformers 4.31.0 itself."""

import json
import time
import types

import pytest
import sentencepiece as spm
import torch

from dualfocus.constants import IMAGE_TOKEN_INDEX
from dualfocus.conversation import conv_templates
from dualfocus.mm_utils import tokenizer_image_token
from dualfocus.model.tokenizer import LlamaTokenizer, TokenizerFileError, load_tokenizer
from dualfocus.tiny.tokenizer import train_llama_tokenizer, write_tokenizer_configs

BOS = 1


@pytest.fixture(scope="module")
def sp(tiny_tokenizer_dir):
    return spm.SentencePieceProcessor(model_file=str(tiny_tokenizer_dir / "tokenizer.model"))


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return load_tokenizer(tiny_tokenizer_dir)  # legacy: false, as LLaVA-1.5's config says


@pytest.fixture(scope="module")
def legacy_tok(tiny_tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("legacy_tok")
    (out / "tokenizer.model").write_bytes((tiny_tokenizer_dir / "tokenizer.model").read_bytes())
    return load_tokenizer(write_tokenizer_configs(out, legacy=True))


def _strip_first(pieces_ids, sp):
    """legacy: false after a special token: the first piece loses its "▁"."""
    first = sp.id_to_piece(pieces_ids[0])
    return ([sp.piece_to_id(first[1:])] if len(first) > 1 else []) + pieces_ids[1:]


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


def test_load_tokenizer_returns_our_sentencepiece_llama_tokenizer(tok, legacy_tok):
    assert isinstance(tok, LlamaTokenizer) and (tok.legacy, legacy_tok.legacy) == (False, True)
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
def test_text_without_special_tokens_tokenizes_as_sentencepiece_in_both_modes(tok, legacy_tok, sp, text):
    assert tok(text).input_ids == legacy_tok(text).input_ids == [BOS] + sp.encode(text)


def test_text_after_a_special_token_legacy_true_gets_the_dummy_prefix(legacy_tok, sp):
    ids = legacy_tok("red</s>USER: <image>").input_ids
    assert ids == [BOS] + sp.encode("red") + [2] + sp.encode("USER: <image>")
    tokens = legacy_tok.convert_ids_to_tokens(ids)
    assert tokens[tokens.index("</s>") + 1] == "▁USER"


def test_text_after_a_special_token_legacy_false_loses_the_first_pieces_prefix(tok, sp):
    ids = tok("red</s>USER: <image>").input_ids
    assert ids == [BOS] + sp.encode("red") + [2] + _strip_first(sp.encode("USER: <image>"), sp)
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[tokens.index("</s>") + 1] == "USER"  # in the tiny vocabulary, as "US" "ER" in Llama-2's
    assert tok("a</s> USER").input_ids[-2:] == sp.encode(" USER")[-2:]  # a leading space keeps its "▁"
    assert tok("a▁b").input_ids == tok("a b").input_ids  # "▁" in the text is a space


def test_legacy_false_without_the_piece_gives_unk(tmp_path, sp):
    """A vocabulary trained without "</s>USER" text has "▁USER" but no "USER": <unk>, as 4.31 gave."""
    out = write_tokenizer_configs(train_llama_tokenizer(tmp_path / "t", legacy=True), legacy=False)
    ids = load_tokenizer(out)("x</s>USER").input_ids
    assert ids[-2:] == [2, 0]


def test_decode_copies_special_tokens_and_skips_them_on_request(tok):
    ids = tok("Hello</s>USER: hi").input_ids
    assert tok.decode(ids, skip_special_tokens=True) == "HelloUSER: hi"
    assert tok.decode(ids) == "<s> Hello</s>USER: hi"


def test_missing_tokenizer_model_is_named(tmp_path):
    with pytest.raises(TokenizerFileError, match="no tokenizer.model"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"x")
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TokenizerFileError, match="tokenizer_config.json"):
        load_tokenizer(tmp_path)


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
        [BOS] + sp.encode(c0) + [IMAGE_TOKEN_INDEX] + sp.encode(a) + [2] + _strip_first(sp.encode(b), sp)
        + [IMAGE_TOKEN_INDEX]
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


@pytest.mark.parametrize("legacy", [False, True])
def test_saved_and_reloaded_tokenizer_keeps_its_behaviour(tiny_tokenizer_dir, tmp_path, legacy):
    src = tmp_path / "src"
    src.mkdir()
    (src / "tokenizer.model").write_bytes((tiny_tokenizer_dir / "tokenizer.model").read_bytes())
    tok = load_tokenizer(write_tokenizer_configs(src, legacy=legacy))
    tok.save_pretrained(tmp_path / "out")
    again = load_tokenizer(tmp_path / "out")
    for text in TEXTS + ["x</s>USER: y", "a<s>b"]:
        assert again(text).input_ids == tok(text).input_ids
    assert (again.pad_token, again.padding_side, again.model_max_length, again.legacy) == ("<unk>", "right", 2048,
                                                                                          legacy)
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["tokenizer_class"] == "LlamaTokenizer"


def test_added_tokens_survive_saving_and_strip_spaces_around_them(tok, tmp_path, sp):
    """4.31 stripped the spaces on both sides of an added token it held no AddedToken for (<im_patch>)."""
    import copy

    added = copy.deepcopy(tok)
    assert added.add_tokens(["<im_patch>"], special_tokens=True) == 1
    ids = added("a <im_patch> b").input_ids
    assert ids == [BOS] + sp.encode("a") + [1000] + _strip_first(sp.encode("b"), sp)
    added.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "added_tokens.json").read_text()) == {"<im_patch>": 1000}
    assert load_tokenizer(tmp_path)("a <im_patch> b").input_ids == ids
