"""The trace's codes in words, for people reading a page rather than an answer file.

`FocusResult.fallback` holds why the micro pass did not run (`dualfocus.boxes.BOX_ERROR_REASONS`
and the pipeline's own reasons) and `FocusResult.choice` why the final answer is the one it is
(`dualfocus.focus.protocols`, or the pipeline's ``scoring_failed``); a choice without a micro pass
reads ``no_micro: <fallback>``.
"""

from __future__ import annotations

from dualfocus import boxes
from dualfocus.focus import protocols
from dualfocus.focus.pipeline import IMAGE_TOKEN_IN_BOX, SCORING_FAILED, FocusResult

FALLBACKS = {
    boxes.NO_BOX: "the model wrote no box (fewer than four numbers)",
    boxes.OUT_OF_RANGE: "a box coordinate was outside 0..1",
    boxes.PIXEL_UNITS: "the box was in pixel units, not fractions of the image",
    boxes.INVERTED: "the box's corners were swapped (x2 < x1 or y2 < y1)",
    boxes.DEGENERATE: "the box had no area (x2 = x1 or y2 = y1)",
    boxes.EMPTY_CROP: "no pixels were left in the crop",
    IMAGE_TOKEN_IN_BOX: "the box text held the <image> marker",
}

CHOICES = {
    protocols.MACRO_ONLY: "selection 'macro': the whole image's answer, as plain LLaVA",
    protocols.MICRO_ONLY: "selection 'micro': the crop's answer",
    protocols.AGREE: "both passes gave this answer; nothing to score",
    protocols.MICRO_INVALID: "the crop's answer is not a valid answer, so the whole image's stands",
    protocols.MACRO_INVALID: "the whole image's answer is not a valid answer, so the crop's is taken",
    protocols.BOTH_INVALID: "neither answer is valid; the whole image's stands",
    protocols.SCORED_MACRO: "the answers differed; the whole image's answer had the lower loss",
    protocols.SCORED_MICRO: "the answers differed; the crop's answer had the lower loss",
    protocols.TIE_MACRO: "the answers differed and their losses were equal; the whole image's stands",
    SCORING_FAILED: "the answers differed but could not be scored; the whole image's stands",
}


def fallback_words(reason: str) -> str:
    return FALLBACKS.get(reason, reason)


def choice_words(choice: str) -> str:
    """``no_micro: pixel_units`` -> "no micro pass: the box was in pixel units, ..."."""
    code, _, reason = choice.partition(": ")
    if code == protocols.NO_MICRO:
        why = fallback_words(reason) if reason else "the box could not be used"
        return f"no micro pass ({why}); the whole image's answer stands"
    return CHOICES.get(choice, choice)


def fallback_line(result: FocusResult) -> str | None:
    """Why the micro pass did not run, as a sentence; None when it ran (or in macro mode)."""
    if result.fallback is None:
        return None
    return f"The micro pass was skipped: {fallback_words(result.fallback)}."
