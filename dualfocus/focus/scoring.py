"""Token ids and labels for scoring one answer candidate (the "PPL selection" of DualFocus).

The loss of a candidate is the mean cross-entropy over its labelled tokens (labels shifted by one,
`IGNORE_INDEX` skipped), as the original's ``LlavaLlamaForCausalLM.forward(..., reduction='none')``
computes it; the images are the full image and the crop, one per "<image>" in order.

Two rules, chosen by ``selection``:

"original" reproduces the released
evaluation. It formats the micro conversation with the benchmark's scoring wording
(`Protocol.score_messages`: box request, box answer, ``score_prompt``, and for MMBench an empty
assistant turn) in ``conv_mode``'s template, cuts everything before the first "<image>" (the system
prompt and "USER: "), and hands that string to LLaVA's *training* ``preprocess`` as ONE human turn
with the candidate as the gpt turn, under the module default template (vicuna_v1). The masking
then splits at "</s>": the box answer and its "</s>" are labelled as if they were an answer, and
so are the candidate and its "</s>" (for MMBench, whose cut prompt ends with "ASSISTANT:", the
second round reads "... ASSISTANT: ASSISTANT: candidate</s>" and the inner "ASSISTANT:" is labelled
too). Both candidates share the box-answer part, so the choice is decided by the candidate tokens,
but the mean is diluted by the shared tokens.

"candidate" scores what the model would actually write: the real micro conversation in
``conv_mode``'s template (`Protocol.micro_messages`, then the candidate as the assistant answer),
with only the candidate's tokens and the template's stop string after it (e.g. "</s>") labelled.
"""

from __future__ import annotations

import torch

from dualfocus.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX
from dualfocus.conversation import conv_templates, default_conversation
from dualfocus.focus.protocols import FocusQuery, Protocol
from dualfocus.mm_utils import tokenizer_image_token
from dualfocus.preprocess import preprocess

__all__ = ["SCORING_SELECTIONS", "ScoringError", "answer_example", "original_scoring_prompt", "scoring_example"]

SCORING_SELECTIONS = ("original", "candidate")  # "macro" and "micro" never score


class ScoringError(ValueError):
    """A candidate that cannot be scored (empty, or its tokens do not extend the prompt's)."""


def _template(conv_mode: str):
    try:
        return conv_templates[conv_mode].copy()
    except KeyError:
        raise ValueError(f"unknown conv_mode {conv_mode!r}; choose one of {sorted(conv_templates)}") from None


def original_scoring_prompt(
    protocol: Protocol, q: FocusQuery, box_text: str, conv_mode: str = "vicuna_v1"
) -> str:
    """The human turn the original scores under: the scoring conversation from its first "<image>"."""
    conv = _template(conv_mode)
    for role, text in protocol.score_messages(q, box_text):
        conv.append_message(conv.roles[role], text)
    prompt = conv.get_prompt()
    return prompt[prompt.index(DEFAULT_IMAGE_TOKEN) :]


def scoring_example(
    protocol: Protocol,
    q: FocusQuery,
    box_text: str,
    candidate: str,
    tokenizer,
    conv_mode: str = "vicuna_v1",
    selection: str = "original",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, labels)``, both LongTensor (T,), for one candidate; -200 at each "<image>"."""
    if selection not in SCORING_SELECTIONS:
        raise ValueError(
            f"selection {selection!r} does not score candidates; choose one of {SCORING_SELECTIONS}"
        )
    if not candidate:
        raise ScoringError(f"question {q.question_id!r}: empty candidate")
    if selection == "candidate":
        return _candidate_example(protocol, q, box_text, candidate, tokenizer, conv_mode)
    human = original_scoring_prompt(protocol, q, box_text, conv_mode)
    source = [{"from": "human", "value": human}, {"from": "gpt", "value": candidate}]
    out = preprocess([source], tokenizer, default_conversation, has_image=True, record_id=q.question_id)
    return out["input_ids"][0], out["labels"][0]


def _candidate_example(protocol, q, box_text, candidate, tokenizer, conv_mode):
    return answer_example(protocol.micro_messages(q, box_text), candidate, tokenizer, conv_mode, q.question_id)


def answer_example(messages, candidate: str, tokenizer, conv_mode: str = "vicuna_v1",
                   question_id=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, labels)`` of ``candidate`` as the assistant's answer after ``messages`` (role, text):
    only the candidate's tokens and the template's stop string after it are labelled."""
    conv = _template(conv_mode)
    for role, text in messages:
        conv.append_message(conv.roles[role], text)
    conv.append_message(conv.roles[1], None)
    prefix = conv.get_prompt()
    conv.messages[-1][1] = candidate
    full = conv.get_prompt()
    prefix_ids = tokenizer_image_token(prefix, tokenizer)
    full_ids = tokenizer_image_token(full, tokenizer)
    n = len(prefix_ids)
    if not full.startswith(prefix) or full_ids[:n] != prefix_ids or len(full_ids) == n:
        raise ScoringError(
            f"question {question_id!r}: the tokens of the answered conversation do not extend the "
            f"prompt's (template {conv_mode!r}, candidate {candidate!r})"
        )
    input_ids = torch.tensor(full_ids, dtype=torch.long)
    labels = input_ids.clone()
    labels[:n] = IGNORE_INDEX
    return input_ids, labels
