"""A tiny Llama-style sentencepiece tokenizer for tests and the zoom model.

`train_llama_tokenizer` trains, in well under a second and deterministically, a BPE sentencepiece
model configured like Llama's (unk=0 "<unk>", bos=1 "<s>", eos=2 "</s>", byte fallback, split
digits, a dummy "▁" prefix, no normalisation, whitespace kept as is) on a small built-in English
corpus that covers the LLaVA/DualFocus prompt wording. It writes the three files the released
LLaVA-1.5 checkpoints ship (`tokenizer.model`, `tokenizer_config.json`, `special_tokens_map.json`),
``"legacy": false`` as LLaVA-1.5's config says unless asked otherwise.

Loading is `dualfocus.model.tokenizer.load_tokenizer`, the loader every checkpoint goes through.
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


def _words_after_specials() -> list[str]:
    """The words that follow "</s>" / "<s>" in each template's two-round prompt ("</s>USER:")."""
    words = set()
    for conv in conv_templates.values():
        if "</s>" not in (conv.sep, conv.sep2):
            continue  # only templates that end answers with "</s>" put text after a special token
        conv = conv.copy()
        conv.messages = [[conv.roles[i % 2], "x"] for i in range(4)]
        for special in ("</s>", "<s>"):
            words.update(part.split()[0] for part in conv.get_prompt().split(special)[1:] if part.strip())
    return sorted(f"</s>{w}" for w in words if not w[0].isspace())


def train_llama_tokenizer(out_dir, vocab_size: int = 1000, extra_text=(), *, legacy: bool = False) -> Path:
    """Train a Llama-style sentencepiece BPE model into ``out_dir`` and return ``out_dir``.

    ``extra_text`` adds lines to the built-in corpus. Writes ``tokenizer.model``,
    ``tokenizer_config.json`` and ``special_tokens_map.json`` (the released LLaVA-1.5 layout).
    The vocabulary can come out smaller than ``vocab_size`` when the corpus has too few merges.

    ``legacy`` is written to the config. With ``legacy: false`` the text after a special token is
    cut without sentencepiece's dummy "▁" (see `dualfocus.model.tokenizer`), so the corpus also holds
    the templates' "</s>USER:" words: the vocabulary then has "USER" as Llama-2's has "US" and "ER",
    and no prompt turns into ``<unk>``. ``legacy=True`` trains on the plain corpus (the zoom model's).
    """
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus() + ([] if legacy else _words_after_specials() * 3)
                               + [p for t in extra_text for p in str(t).split("\n") if p]),
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
    return write_tokenizer_configs(out, legacy=legacy)


def write_tokenizer_configs(out_dir, *, legacy: bool = False) -> Path:
    """LLaVA-1.5's tokenizer_config.json and special_tokens_map.json, with the given ``legacy``."""
    out = Path(out_dir)
    (out / "tokenizer_config.json").write_text(json.dumps({**_TOKENIZER_CONFIG, "legacy": legacy}, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(_SPECIAL_TOKENS_MAP, indent=2) + "\n")
    return out
