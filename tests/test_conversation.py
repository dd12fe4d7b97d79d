"""Snapshot tests: every template's prompt, written out literally (the wording LLaVA-1.5 used)."""

import pytest

from dualfocus.conversation import Conversation, SeparatorStyle, conv_templates, default_conversation

Q1 = "<image>\nWhat is the colour of the car?"
A1 = "[0.12, 0.34, 0.56, 0.78]"
Q2 = "<image>\nPlease combine the information from these two images and answer this question."

HUMAN_SYS = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
USER_SYS = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
MMTAG_SYS = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant is able to "
    "understand the visual content that the user provides, and assist the user with a variety of tasks "
    "using natural language.The visual content will be provided with the following format: "
    "<Image>visual content</Image>."
)
LLAMA_2_SYS = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while "
    "being safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, "
    "dangerous, or illegal content. Please ensure that your responses are socially unbiased and positive "
    "in nature.\n\nIf a question does not make any sense, or is not factually coherent, explain why "
    "instead of answering something not correct. If you don't know the answer to a question, please "
    "don't share false information."
)
LLAVA_LLAMA_2_SYS = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that "
    "the user provides, and assist the user with a variety of tasks using natural language."
)
MPT_SYS = (
    "<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. "
    "The assistant gives helpful and honest answers."
)

V0_1 = HUMAN_SYS + "###Human: <image>\nWhat is the colour of the car?###Assistant:"
V0_2 = (
    HUMAN_SYS + "###Human: <image>\nWhat is the colour of the car?###Assistant: [0.12, 0.34, 0.56, 0.78]"
    "###Human: <image>\nPlease combine the information from these two images and answer this question."
    "###Assistant:"
)
V0_MMTAG_1 = MMTAG_SYS + "###Human: <image>\nWhat is the colour of the car?###Assistant:"
V0_MMTAG_2 = (
    MMTAG_SYS + "###Human: <image>\nWhat is the colour of the car?###Assistant: [0.12, 0.34, 0.56, 0.78]"
    "###Human: <image>\nPlease combine the information from these two images and answer this question."
    "###Assistant:"
)


def _two(system):
    return (
        system + " USER: <image>\nWhat is the colour of the car? ASSISTANT: [0.12, 0.34, 0.56, 0.78]</s>"
        "USER: <image>\nPlease combine the information from these two images and answer this question. ASSISTANT:"
    )


CHATML_1 = (
    "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\n"
    "What is the colour of the car?<|im_end|><|im_start|>assistant\n"
)
CHATML_2 = CHATML_1 + (
    "[0.12, 0.34, 0.56, 0.78]<|im_end|><|im_start|>user\n<image>\nPlease combine the information from "
    "these two images and answer this question.<|im_end|><|im_start|>assistant\n"
)
MPT_1 = (
    MPT_SYS + "<|im_end|><|im_start|>user\n<image>\nWhat is the colour of the car?<|im_end|>"
    "<|im_start|>assistant\n"
)
MPT_2 = MPT_1 + (
    "[0.12, 0.34, 0.56, 0.78]<|im_end|><|im_start|>user\n<image>\nPlease combine the information from "
    "these two images and answer this question.<|im_end|><|im_start|>assistant\n"
)


LLAMA_2_1 = f"[INST] <<SYS>>\n{LLAMA_2_SYS}\n<</SYS>>\n\n<image>\nWhat is the colour of the car? [/INST]"
LLAMA_2_2 = LLAMA_2_1 + (
    " [0.12, 0.34, 0.56, 0.78] </s><s>[INST] <image>\nPlease combine the information from these two images "
    "and answer this question. [/INST]"
)
LLAVA_LLAMA_2_1 = (
    f"[INST] <<SYS>>\n{LLAVA_LLAMA_2_SYS}\n<</SYS>>\n\n<image>\nWhat is the colour of the car? [/INST]"
)
LLAVA_LLAMA_2_2 = LLAVA_LLAMA_2_1 + (
    " [0.12, 0.34, 0.56, 0.78] </s><s>[INST] <image>\nPlease combine the information from these two images "
    "and answer this question. [/INST]"
)
# Empty system: no <<SYS>> block; sep "" so the second turn follows "</s>" directly.
MISTRAL_1 = "[INST] <image>\nWhat is the colour of the car? [/INST]"
MISTRAL_2 = (
    "[INST] <image>\nWhat is the colour of the car? [/INST] [0.12, 0.34, 0.56, 0.78] </s>[INST] <image>\n"
    "Please combine the information from these two images and answer this question. [/INST]"
)
PLAIN_1 = "<image>\nWhat is the colour of the car?\n"

EXPECTED = {
    "default": (V0_1, V0_2),
    "v0": (V0_1, V0_2),
    "v1": (USER_SYS + " USER: <image>\nWhat is the colour of the car? ASSISTANT:", _two(USER_SYS)),
    "vicuna_v1": (USER_SYS + " USER: <image>\nWhat is the colour of the car? ASSISTANT:", _two(USER_SYS)),
    "llama_2": (LLAMA_2_1, LLAMA_2_2),
    "mistral_instruct": (MISTRAL_1, MISTRAL_2),
    "chatml_direct": (CHATML_1, CHATML_2),
    "mistral_direct": (CHATML_1, CHATML_2),
    "plain": (PLAIN_1, None),
    "v0_plain": (PLAIN_1, None),
    "llava_v0": (V0_1, V0_2),
    "v0_mmtag": (V0_MMTAG_1, V0_MMTAG_2),
    "llava_v1": (HUMAN_SYS + " USER: <image>\nWhat is the colour of the car? ASSISTANT:", _two(HUMAN_SYS)),
    "v1_mmtag": (MMTAG_SYS + " USER: <image>\nWhat is the colour of the car? ASSISTANT:", _two(MMTAG_SYS)),
    "llava_llama_2": (LLAVA_LLAMA_2_1, LLAVA_LLAMA_2_2),
    "mpt": (MPT_1, MPT_2),
}


def _prompt(name, turns):
    conv = conv_templates[name].copy()
    conv.messages = []
    for i, text in enumerate(turns):
        conv.append_message(conv.roles[i % 2], text)
    return conv.get_prompt()


def test_every_template_is_pinned():
    assert set(conv_templates) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_one_round_prompt(name):
    assert _prompt(name, [Q1, None]) == EXPECTED[name][0]


@pytest.mark.parametrize("name", sorted(n for n, (_, two) in EXPECTED.items() if two is not None))
def test_two_round_prompt(name):
    assert _prompt(name, [Q1, A1, Q2, None]) == EXPECTED[name][1]


def test_plain_cannot_end_an_answer():
    with pytest.raises(ValueError, match="sep2"):
        _prompt("plain", [Q1, A1, Q2, None])


def test_completed_v1_conversation_ends_with_eos_text():
    assert _prompt("vicuna_v1", [Q1, A1]) == USER_SYS + " USER: " + Q1 + " ASSISTANT: " + A1 + "</s>"


def test_default_conversation_and_v0_example():
    assert default_conversation is conv_templates["vicuna_v1"]
    prompt = conv_templates["v0"].get_prompt()
    assert prompt.startswith(
        HUMAN_SYS + "###Human: What are the key differences between renewable and non-renewable energy "
        "sources?###Assistant: Renewable energy sources are those that can be replenished naturally"
    )
    assert prompt.endswith("their depletion can lead to economic and social instability.\n###")


def test_llama_2_first_message_rules():
    conv = conv_templates["llava_llama_2"].copy()
    conv.append_message(conv.roles[1], "hi")
    with pytest.raises(ValueError, match="from the user"):
        conv.get_prompt()


def test_copy_is_independent_and_dict():
    base = conv_templates["vicuna_v1"]
    conv = base.copy()
    conv.append_message("USER", "hello")
    assert base.messages == [] and conv.messages == [["USER", "hello"]]
    assert conv.sep_style is SeparatorStyle.TWO and conv.version == "v1"
    assert conv.dict() == {
        "system": USER_SYS,
        "roles": ("USER", "ASSISTANT"),
        "messages": [["USER", "hello"]],
        "offset": 0,
        "sep": " ",
        "sep2": "</s>",
    }
    assert isinstance(conv, Conversation)
