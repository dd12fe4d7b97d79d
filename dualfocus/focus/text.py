"""Text <-> token ids for the DualFocus passes (the engines speak token ids only).

`Chat` renders a conversation in a template and tokenises it (one IMAGE_TOKEN_INDEX per
"<image>"), and turns generated ids back into an answer as LLaVA does: special tokens skipped,
stripped, a trailing stop string of the template dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from dualfocus.conversation import SeparatorStyle, conv_templates
from dualfocus.mm_utils import tokenizer_image_token

Messages = Sequence[tuple[int, str | None]]  # (role index: 0 user, 1 assistant; text)


class Chat:
    def __init__(self, tokenizer, conv_mode: str = "vicuna_v1"):
        if conv_mode not in conv_templates:
            raise ValueError(f"unknown conv_mode {conv_mode!r}; choose one of {sorted(conv_templates)}")
        self.tokenizer, self.conv_mode = tokenizer, conv_mode
        template = conv_templates[conv_mode]
        self.stop_str = template.sep2 if template.sep_style == SeparatorStyle.TWO else template.sep

    def prompt(self, messages: Messages) -> str:
        """The conversation, then the assistant's open turn."""
        conv = conv_templates[self.conv_mode].copy()
        for role, text in messages:
            conv.append_message(conv.roles[role], text)
        conv.append_message(conv.roles[1], None)
        return conv.get_prompt()

    def prompt_ids(self, messages: Messages) -> list[int]:
        return tokenizer_image_token(self.prompt(messages), self.tokenizer)

    def answer_text(self, token_ids: Sequence[int]) -> str:
        """Generated ids -> the answer, as LLaVA post-processes it."""
        text = self.tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()
        if self.stop_str and text.endswith(self.stop_str):
            text = text[: -len(self.stop_str)]
        return text.strip()

    def answer_ids(self, text: str) -> tuple[int, ...]:
        """The ids a pass emits to answer `text`: " text" follows "ASSISTANT:", then EOS."""
        return (*self.tokenizer(" " + text, add_special_tokens=False).input_ids, self.tokenizer.eos_token_id)
