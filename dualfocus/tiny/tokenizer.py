"""A tiny Llama-style sentencepiece tokenizer for tests, and the one tokenizer loader we use.

`train_llama_tokenizer` trains, in well under a second and deterministically, a BPE sentencepiece
model configured like Llama's (unk=0 "<unk>", bos=1 "<s>", eos=2 "</s>", byte fallback, split
digits, a dummy "▁" prefix, no normalisation, whitespace kept as is) on a small built-in English
corpus that covers the LLaVA/DualFocus prompt wording. It writes the three files the released
LLaVA-1.5 checkpoints ship (`tokenizer.model`, `tokenizer_config.json`, `special_tokens_map.json`).

`load_tokenizer` is the exact call the model builder uses.

What transformers 5 returns, and why we pass ``legacy=True``
-------------------------------------------------------------
transformers 5 ignores ``use_fast=False``: ``AutoTokenizer.from_pretrained`` always builds the
tokenizers-backed ``LlamaTokenizer`` (``TokenizersBackend``; ``LlamaTokenizerFast`` is an alias),
converting ``tokenizer.model`` to BPE vocab + merges on the fly (this needs ``protobuf``; no
``trust_remote_code``). Its pre-tokenizer is ``Metaspace(prepend_scheme=...)`` where the scheme is
``"first"`` when ``legacy`` is false (what LLaVA-1.5's ``tokenizer_config.json`` says) and
``"always"`` when ``legacy`` is true.

Two differences from sentencepiece remain in that tokenizer, and `load_tokenizer` removes both:

1. Text after a special token. With ``"first"`` (``legacy: false``), text that follows a special token
   in the same call gets no "▁": ``"A</s>USER"`` -> ``... </s> US ER`` where sentencepiece (and the
   slow transformers-4.31 tokenizer LLaVA-1.5 was trained with) gives ``... </s> ▁USER``. LLaVA's
   label masking measures each round on its own (``"USER: ..."`` -> ``▁USER``), so rounds after the
   first shift and its "tokenization mismatch" check trips.
2. Text that starts with a space. ``Metaspace`` prepends "▁" only when the text does not already
   start with one, so ``" hello"`` -> ``▁he l l o`` where sentencepiece's dummy prefix gives
   ``▁ ▁he l l o``.

`load_tokenizer` passes ``legacy=True`` and swaps the pre-tokenizer for the normalizer the
transformers-4 Llama converter used in legacy mode (``Prepend("▁")`` then ``Replace(" ", "▁")``).
tokenizers splits special tokens off before normalising, so every text segment between special
tokens is then tokenized exactly as ``SentencePieceProcessor.encode(segment)`` does, and
``tokenizer(chunk).input_ids == [bos] + sp.encode(chunk)`` for chunks without special-token text.
``tests/test_tokenization.py`` pins this.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from dualfocus.conversation import conv_templates

# Written like LLaVA-1.5's released tokenizer_config.json (liuhaotian/llava-v1.5-7b): a slow
# LlamaTokenizer, BOS added, EOS not, right padding, 2048 tokens, pad token set in
# special_tokens_map.json to "<unk>" (LLaVA's train.py: tokenizer.pad_token = tokenizer.unk_token).
_TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<s>",
    "clean_up_tokenization_spaces": False,
    "eos_token": "</s>",
    "legacy": False,
    "model_max_length": 2048,
    "pad_token": None,
    "padding_side": "right",
    "sp_model_kwargs": {},
    "tokenizer_class": "LlamaTokenizer",
    "unk_token": "<unk>",
}


def _special(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


_SPECIAL_TOKENS_MAP = {
    "bos_token": _special("<s>"),
    "eos_token": _special("</s>"),
    "pad_token": "<unk>",
    "unk_token": _special("<unk>"),
}

_PROMPT_LINES = (
    "Please provide the bounding box coordinate of the region this question asks about.",
    "Please provide the bounding box coordinate of the region this question asks",
    "Please combine the information from these two images and answer this question.",
    "Answer with the option's letter from the given choices directly.",
    "Answer the question using a single word or phrase.",
    "Answer the question using a single word or phrase. ASSISTANT: Yes",
    "USER: <image>\nWhat is the colour of the car? ASSISTANT: red</s>",
    "USER: <image>\nPlease combine the information from these two images and answer this question. ASSISTANT:",
    "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n<image>\nWhat is this? [/INST] A cat. </s>",
    "<|im_start|>user\nWhat is in the picture?<|im_end|><|im_start|>assistant\nA dog.<|im_end|>",
    "Human: What is this? ###Assistant: A box.###",
    "<Image><image></Image> Received.",
    "A. red\nB. green\nC. blue\nD. yellow",
    "A. circle\nB. square\nC. triangle\nD. rectangle",
    "Options: A, B, C, D. Hint: look at the left, right, top and bottom of the image.",
    "[0.12, 0.34, 0.56, 0.78] [0.0, 0.0, 1.0, 1.0] [0.25, 0.5, 0.75, 0.9]",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 100 256 336 2048 3.14 0.5 1,2,3 (1) (2) {a} <b>",
    "red orange yellow green blue purple pink brown black white gray grey silver gold",
    "circle square triangle rectangle star cube sphere cylinder cone oval line dot arrow",
    "What is the man holding? Which side is the dog on? How many people are there?",
    "Is the sign red or blue? What does the text on the sign say? Where is the cat sitting?",
    "The cat is on the table. The dog is next to the door. There are two people in the picture.",
    "a photo of a street with cars, a bus, trees and a tall building under a blue sky",
    "a small brown dog sitting on the grass in front of a white house",
    "Yes No yes no true false left right top bottom middle center front back above below",
    "The quick brown fox jumps over the lazy dog! Isn't it? \"quoted\" 'single' - dash; colon:",
    "Describe the image in detail. Question: what colour is the shirt? Answer: blue.",
)


def _corpus() -> list[str]:
    """Built-in training text: prompt wording, the templates' system prompts and plain English."""
    lines = list(_PROMPT_LINES)
    for conv in conv_templates.values():
        if conv.system:
            lines.extend(line for line in conv.system.split("\n") if line)
        lines.extend(role for role in conv.roles if role.strip())
    lines.append(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 .,;:!?'\"()[]{}<>/\\|-_+=*&^%$#@~`"
    )
    # One sentence per line: "\n" never enters the character set, so it falls back to the byte
    # piece <0x0A> as in Llama's vocabulary. Repeated so BPE fills the vocabulary.
    sentences = {part for line in lines for part in line.split("\n") if part}
    return sorted(sentences) * 3


def train_llama_tokenizer(out_dir, vocab_size: int = 1000, extra_text=()) -> Path:
    """Train a Llama-style sentencepiece BPE model into ``out_dir`` and return ``out_dir``.

    ``extra_text`` adds lines to the built-in corpus. Writes ``tokenizer.model``,
    ``tokenizer_config.json`` and ``special_tokens_map.json`` (the released LLaVA-1.5 layout).
    The vocabulary can come out smaller than ``vocab_size`` when the corpus has too few merges.
    """
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus() + [p for t in extra_text for p in str(t).split("\n") if p]),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        # Llama's trainer spec, in the parts that change how text is cut into pieces.
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece="<unk>",
        bos_piece="<s>",
        eos_piece="</s>",
        # Deterministic: one thread, every sentence, no shuffling.
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    (out / "tokenizer.model").write_bytes(model.getvalue())
    (out / "tokenizer_config.json").write_text(json.dumps(_TOKENIZER_CONFIG, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(_SPECIAL_TOKENS_MAP, indent=2) + "\n")
    return out


def load_tokenizer(path):
    """Load a LLaVA tokenizer the way the model builder does (see the module docstring).

    ``AutoTokenizer.from_pretrained(path, use_fast=False, legacy=True)`` (transformers 5 returns its
    tokenizers-backed ``LlamaTokenizer`` whatever ``use_fast`` says; no ``trust_remote_code``), then
    sentencepiece's per-segment dummy prefix restored, so every text segment tokenizes exactly as
    ``SentencePieceProcessor.encode`` does, as LLaVA-1.5 was trained.
    """
    from tokenizers import normalizers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=False, legacy=True)
    backend = tokenizer.backend_tokenizer
    # sentencepiece's dummy prefix on every text segment, also one that starts with a space.
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None
    return tokenizer
