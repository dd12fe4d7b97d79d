"""Drafts for the box pass: the structure tokens of "[0.xx, 0.xx, 0.xx, 0.xx]" after the digits.

The box pass writes about 26 tokens, of which only the 8 digits after "0." carry information; the
rest ("▁[", "0", ".", ",", "▁", "]") follow from the format. `BoxDrafter` proposes them after
what the model has written so far; the engine feeds the proposal in the same forward as the
model's next token and keeps the longest prefix that equals the model's own greedy choices
(engine.base: `GenerationRequest.draft`), so a wrong draft costs columns, never a different answer.

Both the tiny tokenizer and Llama-2's split " [0.12, 0.34, 0.56, 0.78]" as
    ▁ | ▁[ | 0 | . | 1 | 2 | , | ▁ | 0 | . | 3 | 4 | , | ▁ | 0 | . | 5 | 6 | , | ▁ | 0 | . | 7 | 8 | ] | </s>
(digits one token each); the drafter is built from the tokenizer's own pieces and refuses one
that splits the box otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SAMPLE = "[0.12, 0.34, 0.56, 0.78]"
# One character per token class: '_' space piece, '[' open, 'D' digit, '.' dot, ',' comma, ']' close, 'x' other.
SAMPLE_CLASSES = "_[D.DD,_D.DD,_D.DD,_D.DD]"
NUMBER = r"D\.DD"  # the two-digit numbers LLaVA's boxes use
LOOK_BACK = 32  # tokens of history that decide a draft (a whole box is 25)


class DraftFormatError(ValueError):
    """The tokenizer does not split a box into the pieces the drafter drafts."""


class BoxDrafter:
    """ids generated so far -> the structure tokens that follow in a box (possibly none).

    Rules on the classes of the last tokens (a regex each, anchored at the end):
      "_"  (the answer's leading space)     -> "▁[" "0" "."
      "["                                   -> "0" "."
      ","                                   -> "▁" "0" "."
      ",_"                                  -> "0" "."
      "[D.DD" or ",_D.DD"                   -> "," "▁" "0" "."   (numbers 1-3: fewer than 3 commas since "[")
                                            -> "]"                (the 4th; EOS follows, the model says it)
    Anything else drafts nothing: the engine decodes plainly until a rule matches again.
    """

    def __init__(self, pieces: dict[str, int], digits: dict[int, str]):
        self.pieces = pieces  # class char -> the id drafted for it ('D' -> the id of "0")
        self.classes = {**{i: "D" for i in digits}, **{v: k for k, v in pieces.items() if k != "D"}}
        p = pieces
        self.number_end = re.compile(rf"(?:\[|,_){NUMBER}$")
        self.next_number, self.close = (p[","], p["_"], p["D"], p["."]), (p["]"],)
        self.rules = [
            (re.compile(r"^_$"), (p["["], p["D"], p["."])),
            (re.compile(r"(?:\[|,_)$"), (p["D"], p["."])),
            (re.compile(r",$"), (p["_"], p["D"], p["."])),
        ]

    @classmethod
    def from_tokenizer(cls, tokenizer) -> BoxDrafter:
        """Read the pieces off the tokenizer's own ids for " " + SAMPLE (as `Chat.answer_ids` renders it)."""
        ids = tokenizer(" " + SAMPLE, add_special_tokens=False).input_ids
        pieces = tokenizer.convert_ids_to_tokens(ids)
        classes = "".join(_piece_class(t) for t in pieces)
        if classes != SAMPLE_CLASSES:
            raise DraftFormatError(f"the tokenizer splits {SAMPLE!r} as {pieces}, not one piece per digit and "
                                   f"sign ({SAMPLE_CLASSES}); turn box drafting off (FocusConfig.draft_box=False)")
        by_class = {c: i for c, i in zip(classes, ids) if c != "D"}
        digits = {tokenizer.convert_tokens_to_ids(str(d)): str(d) for d in range(10)}
        if len(digits) != 10 or tokenizer.unk_token_id in digits:
            raise DraftFormatError("the tokenizer lacks a piece for some digit 0-9")
        by_class["D"] = tokenizer.convert_tokens_to_ids("0")
        return cls(by_class, digits)

    def __call__(self, ids: Sequence[int]) -> tuple[int, ...]:
        history = "".join(self.classes.get(int(t), "x") for t in ids[-LOOK_BACK:])
        if self.number_end.search(history):
            opened = history[history.rfind("[") :] if "[" in history else history
            return self.close if opened.count(",") >= 3 else self.next_number
        for pattern, draft in self.rules:
            if pattern.search(history):
                return draft
        return ()


def _piece_class(piece: str) -> str:
    if piece == "▁":
        return "_"
    if piece in ("▁[", "["):
        return "["
    if len(piece) == 1 and piece.isdigit():
        return "D"
    return piece if piece in (".", ",", "]") else "x"
