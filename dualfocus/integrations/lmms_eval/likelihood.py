"""`loglikelihood` for lmms-eval: continuations scored on the engine's `loglikelihood` verb.

The conversation is LLaVA's single turn, as lmms-eval's own llava model builds it: the context
(after one "<image>" per image, unless the context places them) as the user turn, the
continuation as the assistant's answer in ``conv_mode``'s template, and only the tokens after the
open "ASSISTANT:" labelled (the continuation and the template's stop string, e.g. "</s>"). This is
the single-pass model; DualFocus's two passes answer generate_until requests only.

``logprob`` is the sum of the labelled tokens' log-probabilities (the engine returns their mean
loss and count). ``is_greedy`` is always False: the engine keeps the labelled log-probs, not the
argmax, so multiple-choice tasks (which compare log-probs) are exact, and ``acc`` of a
``loglikelihood`` task is not available.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dualfocus.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX
from dualfocus.conversation import conv_templates
from dualfocus.engine.base import Engine, ScoringRequest
from dualfocus.focus.scoring import ScoringError
from dualfocus.mm_utils import tokenizer_image_token


def user_turn(context: str, n_images: int) -> str:
    """The context with one "<image>" line per image in front, unless it places them itself."""
    if n_images == 0 or DEFAULT_IMAGE_TOKEN in context:
        return context
    return " ".join([DEFAULT_IMAGE_TOKEN] * n_images) + "\n" + context


def scoring_ids(context: str, continuation: str, n_images: int, tokenizer, conv_mode: str) -> tuple[list, list]:
    """(input_ids, labels) for one continuation; -200 once per image, -100 where not scored."""
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], user_turn(context, n_images))
    conv.append_message(conv.roles[1], None)
    prefix_ids = tokenizer_image_token(conv.get_prompt(), tokenizer)
    conv.messages[-1][1] = continuation
    full_ids = tokenizer_image_token(conv.get_prompt(), tokenizer)
    n = len(prefix_ids)
    if full_ids[:n] != prefix_ids or len(full_ids) == n:
        raise ScoringError(f"the continuation {continuation!r} does not extend the context's tokens "
                           f"(template {conv_mode!r})")
    return full_ids, [IGNORE_INDEX] * n + full_ids[n:]


def read_scoring(args: Sequence, doc_of: Callable, tokenizer, conv_mode: str) -> ScoringRequest:
    """lmms-eval's ``(context, continuation or doc_to_target, doc_to_visual, doc_id, task, split)``."""
    context, target, doc_to_visual, doc_id, task, split = args
    doc = doc_of(task, split, doc_id)
    continuation = (target if isinstance(target, str) else str(target(doc))).lstrip()  # template adds the space
    images = [im.convert("RGB") for im in (doc_to_visual(doc) or []) if im is not None]
    ids, labels = scoring_ids(context, continuation, len(images), tokenizer, conv_mode)
    return ScoringRequest(ids, labels, images)


def loglikelihood(requests: Sequence, doc_of: Callable, engine: Engine, conv_mode: str,
                  batch_size: int) -> list[tuple[float, bool]]:
    """lmms-eval's verb: ``(sum of log-probs, False)`` per request, in order.

    Requests go to the engine in chunks of ``batch_size`` in lmms-eval's order, which keeps the
    choices of one document together, so the fast engine shares their context.
    """
    scoring = [read_scoring(req.args, doc_of, engine.tokenizer, conv_mode) for req in requests]
    out = []
    for start in range(0, len(scoring), batch_size):
        for score in engine.loglikelihood(scoring[start : start + batch_size]):
            out.append((-score.loss * score.n_tokens, False))
    return out
