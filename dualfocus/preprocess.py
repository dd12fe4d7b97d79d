"""LLaVA's training-time conversation tokenization and label masking.

Used by training and by the evaluation's scoring of answer candidates. `preprocess` dispatches on
the template as LLaVA's ``train.py`` does (PLAIN, LLAMA_2, version "v1*", "mpt", else the v0
"###" format) and reproduces LLaVA's masking exactly, off-by-ones included:

* v1 / llama_2: the conversation is cut into rounds at ``sep2`` ("</s>"). Each round is measured on
  its own, BOS included; that extra token stands for the "</s>" the split removed, so the "</s>"
  after each answer is *labelled*. The instruction part ends with "ASSISTANT: " (or "[/INST] ") and
  is measured minus 2: its own BOS and the trailing "▁" that, inside the conversation, merges into
  the answer's first token.
* plain: "<image>" + caption + "\\n"; BOS and the image are masked, the caption and "\\n" labelled.

One deliberate difference: where LLaVA prints "WARNING: tokenization mismatch" and silently masks
the whole sample, `LabelMaskingError` is raised, naming the conversation and both lengths.

``sources`` are lists of conversations, each a list of ``{"from": "human" | "gpt", "value": str}``
with "<image>" already placed in the text (LLaVA's ``preprocess_multimodal`` step). They are not
modified.
"""

from __future__ import annotations

import copy

import torch

from dualfocus.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX
from dualfocus.conversation import Conversation, SeparatorStyle
from dualfocus.mm_utils import tokenizer_image_token

__all__ = ["IGNORE_INDEX", "LabelMaskingError", "preprocess"]


class LabelMaskingError(ValueError):
    """The rounds of a conversation do not add up to its tokenization (LLaVA's "tokenization mismatch")."""


def _name(record_id) -> str:
    return f"conversation {record_id!r}" if record_id is not None else "conversation"


def _apply_template(sources, conv: Conversation, record_id) -> list[str]:
    """Each source -> the template's prompt, after dropping a leading non-human turn (as LLaVA)."""
    roles = {"human": conv.roles[0], "gpt": conv.roles[1]}
    conversations = []
    for source in sources:
        try:
            if roles[source[0]["from"]] != conv.roles[0]:
                source = source[1:]  # skip a first turn that is not from the human
            conv = conv.copy()
            conv.messages = []
            for j, sentence in enumerate(source):
                role = roles[sentence["from"]]
                if role != conv.roles[j % 2]:
                    raise ValueError(f"turn {j} is from {sentence['from']!r}; turns must alternate human/gpt")
                conv.append_message(role, sentence["value"])
        except KeyError as e:
            raise ValueError(f"{_name(record_id)}: unknown speaker {e} (expected 'human' or 'gpt')") from e
        except ValueError as e:
            raise ValueError(f"{_name(record_id)}: {e}") from e
        conversations.append(conv.get_prompt())
    return conversations


def _token_len(text: str, tokenizer, has_image: bool) -> int:
    return len(tokenizer_image_token(text, tokenizer) if has_image else tokenizer(text).input_ids)


def _tokenize(text: str, tokenizer, has_image: bool) -> tuple[torch.Tensor, int]:
    """Token ids of a whole conversation and LLaVA's total_len (tokens that are not padding)."""
    if has_image:
        ids = tokenizer_image_token(text, tokenizer, return_tensors="pt")
    else:
        ids = tokenizer(
            text, return_tensors="pt", max_length=tokenizer.model_max_length, truncation=True
        ).input_ids[0]
    pad = tokenizer.pad_token_id
    total_len = int(ids.ne(pad).sum()) if pad is not None else len(ids)
    return ids, total_len


def _check(cur_len: int, total_len: int, tokenizer, record_id) -> None:
    if cur_len < tokenizer.model_max_length and cur_len != total_len:
        raise LabelMaskingError(
            f"tokenization mismatch in {_name(record_id)}: its rounds add up to {cur_len} tokens "
            f"but the whole conversation is {total_len} tokens"
        )


def _preprocess_rounds(sources, tokenizer, conv, has_image, record_id, sep: str) -> dict:
    """v1 and llama_2 masking: rounds split at sep2, instruction = up to and including ``sep``."""
    input_ids, labels = [], []
    for conversation in _apply_template(sources, conv, record_id):
        ids, total_len = _tokenize(conversation, tokenizer, has_image)
        target = ids.clone()
        cur_len = 1
        target[:cur_len] = IGNORE_INDEX  # BOS
        for rou in conversation.split(conv.sep2):
            if rou == "":
                break
            parts = rou.split(sep)
            if len(parts) != 2:
                break
            instruction = parts[0] + sep
            round_len = _token_len(rou, tokenizer, has_image)  # + BOS, standing for the removed sep2
            instruction_len = _token_len(instruction, tokenizer, has_image) - 2  # - BOS - trailing "▁"
            target[cur_len : cur_len + instruction_len] = IGNORE_INDEX
            cur_len += round_len
        target[cur_len:] = IGNORE_INDEX
        _check(cur_len, total_len, tokenizer, record_id)
        input_ids.append(ids)
        labels.append(target)
    return dict(input_ids=input_ids, labels=labels)


def preprocess_v1(sources, tokenizer, conv: Conversation, has_image=True, record_id=None) -> dict:
    if conv.sep_style != SeparatorStyle.TWO:
        raise ValueError(f"preprocess_v1 needs a TWO-separator template, got {conv.sep_style}")
    return _preprocess_rounds(sources, tokenizer, conv, has_image, record_id, conv.sep + conv.roles[1] + ": ")


def preprocess_llama_2(sources, tokenizer, conv: Conversation, has_image=True, record_id=None) -> dict:
    if conv.sep_style != SeparatorStyle.LLAMA_2:
        raise ValueError(f"preprocess_llama_2 needs a LLAMA_2 template, got {conv.sep_style}")
    return _preprocess_rounds(sources, tokenizer, conv, has_image, record_id, "[/INST] ")


def preprocess_mpt(sources, tokenizer, conv: Conversation, record_id=None) -> dict:
    """LLaVA's MPT masking: system+user+gpt, then user+gpt pairs, split at sep (always image-aware)."""
    if conv.sep_style != SeparatorStyle.MPT:
        raise ValueError(f"preprocess_mpt needs an MPT template, got {conv.sep_style}")
    sep = conv.sep + conv.roles[1]
    sep_len = len(tokenizer_image_token(conv.sep, tokenizer))
    input_ids, labels = [], []
    for conversation in _apply_template(sources, conv, record_id):
        ids, total_len = _tokenize(conversation, tokenizer, has_image=True)
        target = ids.clone()
        rounds = conversation.split(conv.sep)
        re_rounds = [conv.sep.join(rounds[:3])]  # system + user + gpt
        for k in range(3, len(rounds), 2):
            re_rounds.append(conv.sep.join(rounds[k : k + 2]))  # user + gpt
        cur_len = 0
        for rou in re_rounds:
            if rou == "":
                break
            parts = rou.split(sep)
            if len(parts) != 2:
                break
            round_len = len(tokenizer_image_token(rou, tokenizer)) + sep_len
            instruction_len = len(tokenizer_image_token(parts[0] + sep, tokenizer))
            target[cur_len : cur_len + instruction_len] = IGNORE_INDEX
            cur_len += round_len
        target[cur_len:] = IGNORE_INDEX
        _check(cur_len, total_len, tokenizer, record_id)
        input_ids.append(ids)
        labels.append(target)
    return dict(input_ids=input_ids, labels=labels)


def preprocess_plain(sources, tokenizer, conv: Conversation, record_id=None) -> dict:
    """LLaVA's pretraining format: "<image>" + caption + sep; only the caption and sep are labelled."""
    input_ids, labels = [], []
    for source in sources:
        if len(source) != 2 or DEFAULT_IMAGE_TOKEN not in source[0]["value"]:
            raise ValueError(
                f"{_name(record_id)}: the plain template takes one human turn with {DEFAULT_IMAGE_TOKEN} "
                f"and one caption, got {len(source)} turns"
            )
        ids = tokenizer_image_token(
            DEFAULT_IMAGE_TOKEN + source[1]["value"] + conv.sep, tokenizer, return_tensors="pt"
        )
        target = ids.clone()
        target[: len(tokenizer_image_token(DEFAULT_IMAGE_TOKEN, tokenizer))] = IGNORE_INDEX
        input_ids.append(ids)
        labels.append(target)
    return dict(input_ids=input_ids, labels=labels)


def _add_speaker_and_signal(header: str, source, conv: Conversation) -> str:
    """v0 format: "### Role: value\\n" per turn (values rewritten in place), then a final "### "."""
    conversation = header
    for sentence in source:
        who = sentence["from"].lower()
        role = conv.roles[0] if who == "human" else conv.roles[1] if who == "gpt" else "unknown"
        sentence["value"] = "### " + role + ": " + sentence["value"] + "\n"
        conversation += sentence["value"]
    return conversation + "### "


def preprocess_default(sources, tokenizer, conv: Conversation, has_image=True, record_id=None) -> dict:
    """LLaVA's v0 masking: the header and each human turn (but its first 2 tokens) are masked."""
    sources = copy.deepcopy(sources)
    header = f"{conv.system}\n\n"
    input_ids, labels = [], []
    for source in sources:
        conversation = _add_speaker_and_signal(header, source, conv)
        ids, _ = _tokenize(conversation, tokenizer, has_image)
        target = ids.clone()
        lens = []
        for text in [header] + [s["value"] for s in source]:
            if has_image:
                lens.append(len(tokenizer_image_token(text, tokenizer)))
            else:
                lens.append(_tokenize(text, tokenizer, has_image=False)[1])
        cur = lens[0]
        target[:cur] = IGNORE_INDEX
        for n, sentence in zip(lens[1:], source):
            if sentence["from"] == "human":
                target[cur + 2 : cur + n] = IGNORE_INDEX
            cur += n
        input_ids.append(ids)
        labels.append(target)
    return dict(input_ids=input_ids, labels=labels)


def preprocess(sources, tokenizer, conv: Conversation, has_image: bool = True, record_id=None) -> dict:
    """Tokenize conversations with ``conv``'s template and mask everything but the answers.

    Returns ``dict(input_ids=[LongTensor (T,)], labels=[LongTensor (T,)])``, one per source, with
    `IGNORE_INDEX` where no loss is taken and `IMAGE_TOKEN_INDEX` at each "<image>" when
    ``has_image``. Raises `LabelMaskingError` where LLaVA would print "tokenization mismatch".
    """
    if conv.sep_style == SeparatorStyle.PLAIN:
        return preprocess_plain(sources, tokenizer, conv, record_id=record_id)
    if conv.sep_style == SeparatorStyle.LLAMA_2:
        return preprocess_llama_2(sources, tokenizer, conv, has_image=has_image, record_id=record_id)
    if conv.version.startswith("v1"):
        return preprocess_v1(sources, tokenizer, conv, has_image=has_image, record_id=record_id)
    if conv.version == "mpt":
        return preprocess_mpt(sources, tokenizer, conv, record_id=record_id)
    return preprocess_default(sources, tokenizer, conv, has_image=has_image, record_id=record_id)
