"""LLaVA-compatible conversation templates.

The prompt strings are identical to LLaVA's (haotian-liu/LLaVA ``llava/conversation.py``, v1.2
template set); ``tests/test_conversation.py`` pins every template against literal strings.

Messages are plain strings (``None`` for the turn the model is about to write). LLaVA's Gradio
form, a ``(text, PIL.Image, mode)`` tuple as the first message with its image/"mmtag" rewriting,
``get_images`` and ``to_gradio_chatbot``, is not needed here and not supported: put ``"<image>\\n"``
in the message text yourself.
"""

from __future__ import annotations

import dataclasses
from enum import Enum, auto


class SeparatorStyle(Enum):
    """How the turns of a conversation are joined into a prompt."""

    SINGLE = auto()
    TWO = auto()
    MPT = auto()
    PLAIN = auto()
    LLAMA_2 = auto()


@dataclasses.dataclass
class Conversation:
    """A prompt template plus the messages of one conversation."""

    system: str
    roles: tuple[str, str]
    messages: list[list]  # [[role, text or None], ...]
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    version: str = "Unknown"
    skip_next: bool = False

    def get_prompt(self) -> str:
        style = self.sep_style
        if style == SeparatorStyle.SINGLE:
            ret = self.system + self.sep
            for role, message in self.messages:
                ret += f"{role}: {message}{self.sep}" if message else f"{role}:"
            return ret
        if style == SeparatorStyle.TWO:
            seps = (self.sep, self.sep2)
            ret = self.system + seps[0]
            for i, (role, message) in enumerate(self.messages):
                ret += f"{role}: {message}{seps[i % 2]}" if message else f"{role}:"
            return ret
        if style == SeparatorStyle.MPT:
            ret = self.system + self.sep
            for role, message in self.messages:
                ret += f"{role}{message}{self.sep}" if message else role
            return ret
        if style == SeparatorStyle.LLAMA_2:
            return self._llama_2_prompt()
        if style == SeparatorStyle.PLAIN:
            seps = (self.sep, self.sep2)
            ret = self.system
            for i, (_, message) in enumerate(self.messages):
                if message:
                    if seps[i % 2] is None:  # LLaVA fails here too (str + None); say why
                        raise ValueError("this PLAIN template has no sep2, so it cannot end an answer")
                    ret += message + seps[i % 2]
            return ret
        raise ValueError(f"Invalid style: {style}")

    def _llama_2_prompt(self) -> str:
        # LLaVA: "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{first user message} [/INST]" (the <<SYS>> block only
        # when the system prompt is non-empty), each turn joined by sep ("<s>"), each answer followed by
        # " " + sep2 ("</s>"); finally the leading sep characters are stripped (str.lstrip, as LLaVA does).
        ret = ""
        for i, (role, message) in enumerate(self.messages):
            if i == 0:
                if not message:
                    raise ValueError("first message should not be empty")
                if role != self.roles[0]:
                    raise ValueError("first message should come from the user")
            if not message:
                continue
            if i == 0 and self.system:
                message = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n" + message
            if i % 2 == 0:
                ret += self.sep + f"[INST] {message} [/INST]"
            else:
                ret += " " + message + " " + self.sep2
        return ret.lstrip(self.sep)

    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append([role, message])

    def copy(self) -> Conversation:
        return Conversation(
            system=self.system,
            roles=self.roles,
            messages=[[x, y] for x, y in self.messages],
            offset=self.offset,
            sep_style=self.sep_style,
            sep=self.sep,
            sep2=self.sep2,
            version=self.version,
        )

    def dict(self) -> dict:
        return {
            "system": self.system,
            "roles": self.roles,
            "messages": self.messages,
            "offset": self.offset,
            "sep": self.sep,
            "sep2": self.sep2,
        }


_VICUNA_V0_EXAMPLE = (
    ("Human", "What are the key differences between renewable and non-renewable energy sources?"),
    (
        "Assistant",
        "Renewable energy sources are those that can be replenished naturally in a relatively "
        "short amount of time, such as solar, wind, hydro, geothermal, and biomass. "
        "Non-renewable energy sources, on the other hand, are finite and will eventually be "
        "depleted, such as coal, oil, and natural gas. Here are some key differences between "
        "renewable and non-renewable energy sources:\n"
        "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable "
        "energy sources are finite and will eventually run out.\n"
        "2. Environmental impact: Renewable energy sources have a much lower environmental impact "
        "than non-renewable sources, which can lead to air and water pollution, greenhouse gas emissions, "
        "and other negative effects.\n"
        "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically "
        "have lower operational costs than non-renewable sources.\n"
        "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote "
        "locations than non-renewable sources.\n"
        "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different "
        "situations and needs, while non-renewable sources are more rigid and inflexible.\n"
        "6. Sustainability: Renewable energy sources are more sustainable over the long term, while "
        "non-renewable sources are not, and their depletion can lead to economic and social instability.\n",
    ),
)

_HUMAN_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
_USER_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_MMTAG_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant is able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
    "The visual content will be provided with the following format: <Image>visual content</Image>."
)
_LLAMA_2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe.  Your answers should not include any harmful, unethical, racist, sexist, "
    "toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased "
    "and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of "
    "answering something not correct. If you don't know the answer to a question, please don't "
    "share false information."
)

conv_vicuna_v0 = Conversation(
    system=_HUMAN_SYSTEM,
    roles=("Human", "Assistant"),
    messages=[list(m) for m in _VICUNA_V0_EXAMPLE],
    offset=2,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)

conv_vicuna_v1 = Conversation(
    system=_USER_SYSTEM,
    roles=("USER", "ASSISTANT"),
    version="v1",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)

conv_llama_2 = Conversation(
    system=_LLAMA_2_SYSTEM,
    roles=("USER", "ASSISTANT"),
    version="llama_v2",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.LLAMA_2,
    sep="<s>",
    sep2="</s>",
)

conv_llava_llama_2 = Conversation(
    system="You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language.",
    roles=("USER", "ASSISTANT"),
    version="llama_v2",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.LLAMA_2,
    sep="<s>",
    sep2="</s>",
)

conv_mistral_instruct = Conversation(
    system="",
    roles=("USER", "ASSISTANT"),
    version="llama_v2",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.LLAMA_2,
    sep="",
    sep2="</s>",
)

conv_chatml_direct = Conversation(
    system="<|im_start|>system\nAnswer the questions.",
    roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
    version="mpt",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.MPT,
    sep="<|im_end|>",
)

conv_mpt = Conversation(
    system="<|im_start|>system\n"
    "A conversation between a user and an LLM-based AI assistant. The assistant gives helpful and honest answers.",
    roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
    version="mpt",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.MPT,
    sep="<|im_end|>",
)

conv_llava_plain = Conversation(
    system="",
    roles=("", ""),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.PLAIN,
    sep="\n",
)

conv_llava_v0 = Conversation(
    system=_HUMAN_SYSTEM,
    roles=("Human", "Assistant"),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)

conv_llava_v0_mmtag = Conversation(
    system=_MMTAG_SYSTEM,
    roles=("Human", "Assistant"),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
    version="v0_mmtag",
)

conv_llava_v1 = Conversation(
    system=_HUMAN_SYSTEM,
    roles=("USER", "ASSISTANT"),
    version="v1",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)

conv_llava_v1_mmtag = Conversation(
    system=_MMTAG_SYSTEM,
    roles=("USER", "ASSISTANT"),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
    version="v1_mmtag",
)

# LLaVA (>= 1.1, which DualFocus builds on) defaults to vicuna_v1; the "default" key stays vicuna_v0.
default_conversation = conv_vicuna_v1
conv_templates = {
    "default": conv_vicuna_v0,
    "v0": conv_vicuna_v0,
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "llama_2": conv_llama_2,
    "mistral_instruct": conv_mistral_instruct,
    "chatml_direct": conv_chatml_direct,
    "mistral_direct": conv_chatml_direct,
    "plain": conv_llava_plain,
    "v0_plain": conv_llava_plain,
    "llava_v0": conv_llava_v0,
    "v0_mmtag": conv_llava_v0_mmtag,
    "llava_v1": conv_llava_v1,
    "v1_mmtag": conv_llava_v1_mmtag,
    "llava_llama_2": conv_llava_llama_2,
    "mpt": conv_mpt,
}
