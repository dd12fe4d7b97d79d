"""A model-free engine for the pipeline's bookkeeping: scripted answers, fixed losses, recorded calls.

`FakeEngine` implements the engine contract (`dualfocus.engine.base`: the base class checks the
requests as for the real engines) without tensors: a generation is the tokens of the text that
`answer(prompt)` gives for the request's decoded prompt, and a score is `loss(labelled text)`.
Every call is recorded with its requests and results, so a test can check what the pipeline
asked, in which order, with which hints and parents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dualfocus.constants import IGNORE_INDEX
from dualfocus.engine.base import Engine, Generation, Handle, Score
from dualfocus.focus.protocols import BOX_REQUEST, COMBINE


@dataclass(frozen=True)
class _Shape:
    """What the base class reads of a model: its positions and image size in tokens."""

    max_positions: int = 4096
    num_image_tokens: int = 4


class FakeEngine(Engine):
    def __init__(self, tokenizer, answer: Callable[[str], str], loss: Callable[[str], float] = lambda text: 1.0,
                 max_positions: int = 4096):
        super().__init__(_Shape(max_positions), tokenizer, image_processor=None)
        self.answer, self.loss = answer, loss
        self.calls: list[tuple[str, list, list]] = []  # (verb, requests, results)

    def text(self, ids) -> str:
        return self.tokenizer.decode([t for t in ids if t >= 0])

    def _generate(self, requests):
        call = object()
        out = []
        for row, req in enumerate(requests):
            text = self.answer(self.text(req.token_ids))
            ids = self.tokenizer(" " + text, add_special_tokens=False).input_ids + [self.eos_token_id]
            out.append(Generation(ids[: req.params.max_new_tokens], Handle(call, row)))
        self.calls.append(("generate", requests, out))
        return out

    def _loglikelihood(self, requests):
        out = []
        for req in requests:
            labelled = [t for t, lab in zip(req.input_ids, req.labels) if lab != IGNORE_INDEX]
            out.append(Score(self.loss(self.text(labelled)), len(labelled) - (req.labels[0] != IGNORE_INDEX)))
        self.calls.append(("loglikelihood", requests, out))
        return out

    def verbs(self) -> list[tuple[str, int]]:
        return [(verb, len(requests)) for verb, requests, _ in self.calls]


def by_pass(script: Mapping[str, tuple[str, str, str]]) -> Callable[[str], str]:
    """question -> (macro, box, micro) texts, as an `answer` function reading the last user turn."""

    def answer(prompt: str) -> str:
        turn = prompt.rsplit("USER:", 1)[-1]
        for question, (macro, box, micro) in script.items():
            if f"{BOX_REQUEST}: {question}" in turn:
                return box
            if question in turn:
                return micro if COMBINE in turn else macro
        raise AssertionError(f"no scripted answer for {turn!r}")

    return answer


def by_text(losses: Mapping[str, float], default: float = 1.0) -> Callable[[str], float]:
    """The loss of the first key found in the labelled text."""
    return lambda text: next((v for key, v in losses.items() if key in text), default)
