"""The DualFocus loop, once, for every benchmark and both engines.

Per batch of questions, each carried by a `Question` through named steps:
  1. `macro_and_box`: the macro and box passes, as one `generate` call (grouped per question:
     they share the image prefix); the box request carries a draft of the box's format tokens
     (focus.drafts; the same tokens in fewer forwards, recorded in `extra["box_forwards"]`);
  2. `crops`: each box text -> a crop (`dualfocus.boxes`); a bad box keeps the macro answer;
  3. `micro`: the micro pass on [full image, crop], continuing the box pass (its handle);
  4. `decide_and_score`: the protocol decides, and names two candidates to score when it must;
     they are scored continuing the micro pass;
  5. `choose`: the decided answer, or the candidate with the lower loss.
Every step is recorded in a `FocusResult`; one bad question never stops the others. A scoring
failure (a candidate that cannot be tokenised, a NaN loss) keeps the macro answer with the
reason `scoring_failed` and the error; the micro pass's trace stays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from PIL import Image

from dualfocus import boxes
from dualfocus.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from dualfocus.conversation import conv_templates
from dualfocus.engine.base import Engine, GenerationRequest, Handle, SamplingParams, ScoringRequest
from dualfocus.focus.drafts import BoxDrafter
from dualfocus.focus.protocols import SELECTIONS, Decision, FocusQuery, Protocol
from dualfocus.focus.scoring import ScoringError, scoring_example
from dualfocus.focus.text import Chat
from dualfocus.preprocess import LabelMaskingError

MODES = ("dualfocus", "macro")
IMAGE_TOKEN_IN_BOX = "image_token_in_box_text"  # fallback: the box text holds "<image>"
SCORING_FAILED = "scoring_failed"  # choice: the candidates could not be scored; the macro answer stands
CANDIDATE_ERRORS = (ScoringError, LabelMaskingError)  # a candidate that cannot be tokenised or masked


@dataclass(frozen=True)
class FocusConfig:
    mode: str = "dualfocus"  # "macro": plain LLaVA, one pass
    selection: str = "original"  # see Protocol.decide and focus.scoring
    conv_mode: str = "vicuna_v1"
    temperature: float = 0.0
    top_p: float | None = None
    num_beams: int = 1
    max_new_tokens: int = 128  # each pass, as the original
    box_max_new_tokens: int | None = None  # default: max_new_tokens
    seed: int = 0
    square: bool = True  # crop policy: square around the box centre...
    pad: int = boxes.ENLARGE_PIXELS  # ...plus this many pixels on each side
    ignore_eos: bool = False  # benchmarks only: force every pass to its max length
    # Benchmarks only: pass name ("macro", "box", "micro") -> the text that pass must emit, so
    # random-weight models at real shapes take every path (box parsed, both answers valid).
    forced_outputs: tuple[tuple[str, str], ...] = ()
    # The box pass carries a draft of its format tokens (focus.drafts): fewer forwards, the same tokens.
    draft_box: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {MODES}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; choose one of {SELECTIONS}")
        if self.conv_mode not in conv_templates:
            raise ValueError(f"unknown conv_mode {self.conv_mode!r}; choose one of {sorted(conv_templates)}")
        if self.num_beams != 1:
            raise ValueError("beam search is not supported: use num_beams=1 (greedy or sampling)")

    def params(self, max_new_tokens: int | None = None, forced: tuple[int, ...] | None = None) -> SamplingParams:
        return SamplingParams(max_new_tokens or self.max_new_tokens, self.temperature, self.top_p, self.seed,
                              self.ignore_eos, forced)


@dataclass
class FocusResult:
    """One question's answer and the trace of how it was reached (goes into `metadata`)."""

    question_id: object
    text: str = ""  # the final answer as the benchmark writes it
    answer: str = ""  # the final parsed answer (a letter for multiple choice)
    macro_raw: str = ""
    macro_answer: str = ""
    box_text: str | None = None
    box: list[float] | None = None  # normalised x1, y1, x2, y2
    crop: list[int] | None = None  # pixels: left, top, right, bottom (end exclusive)
    micro_raw: str | None = None
    micro_answer: str | None = None
    candidates: list[str] | None = None
    losses: list[float] | None = None
    choice: str = ""  # why the final answer is this one: the protocol's reason, or SCORING_FAILED
    fallback: str | None = None  # why the micro pass did not run
    error: str | None = None  # a step that failed for this question only
    mode: str = "dualfocus"
    selection: str = "original"
    extra: dict = field(default_factory=dict)

    def metadata(self) -> dict:
        out = asdict(self)
        for key in ("question_id", "text", "extra"):
            out.pop(key)
        return out


@dataclass
class Question:
    """One question on its way through the steps."""

    query: FocusQuery
    image: Image.Image
    result: FocusResult
    group: int  # its passes share a prefix
    box_handle: Handle | None = None
    crop: Image.Image | None = None
    micro_handle: Handle | None = None
    decision: Decision | None = None
    scoring: list[ScoringRequest] = field(default_factory=list)


class DualFocus:
    """Runs the method on an engine; `run` takes (query, PIL image) pairs."""

    def __init__(self, engine: Engine, protocol: Protocol, config: FocusConfig = FocusConfig()):
        self.engine, self.protocol, self.config = engine, protocol, config
        self.chat = Chat(engine.tokenizer, config.conv_mode)
        self._params = {name: config.params() for name in ("macro", "micro")}
        self._params["box"] = config.params(config.box_max_new_tokens)
        for name, text in config.forced_outputs:
            self._params[name] = config.params(forced=self.chat.answer_ids(text))
        self._box_draft = BoxDrafter.from_tokenizer(engine.tokenizer) \
            if config.draft_box and config.mode == "dualfocus" else None

    def run(self, items: Sequence[tuple[FocusQuery, Image.Image]]) -> list[FocusResult]:
        cfg = self.config
        questions = [Question(q, image, FocusResult(q.question_id, mode=cfg.mode, selection=cfg.selection), i)
                     for i, (q, image) in enumerate(items)]
        self.macro_and_box(questions)
        if cfg.mode == "dualfocus":
            self.crops(questions)
            self.micro([qn for qn in questions if qn.crop is not None])
            self.decide_and_score(questions)
        else:
            for qn in questions:
                qn.decision = self.protocol.decide(qn.query, qn.result.macro_answer, None, "macro")
        self.choose(questions)
        return [qn.result for qn in questions]

    # -- the steps --------------------------------------------------------------------------------
    def macro_and_box(self, questions: list[Question]) -> None:
        box_too = self.config.mode == "dualfocus"
        requests = []
        for qn in questions:
            requests.append(self._request("macro", [(0, self.protocol.macro_prompt(qn.query))], [qn.image],
                                          group=qn.group))
            if box_too:  # continued by the micro turn (with the crop) and the scoring
                requests.append(self._request("box", [(0, self.protocol.box_prompt(qn.query))], [qn.image],
                                              group=qn.group, expect_turns=1, draft=self._box_draft))
        gens = iter(self.engine.generate(requests))
        for qn in questions:
            res = qn.result
            res.macro_raw = self.chat.answer_text(next(gens).token_ids)
            res.macro_answer = self.protocol.parse_answer(res.macro_raw, qn.query)
            if box_too:
                box = next(gens)
                res.box_text, qn.box_handle = self.chat.answer_text(box.token_ids), box.handle
                res.extra["box_tokens"], res.extra["box_forwards"] = len(box.token_ids), box.forwards

    def crops(self, questions: list[Question]) -> None:
        """A crop per usable box; otherwise `fallback` says why there is none."""
        cfg = self.config
        for qn in questions:
            res = qn.result
            if DEFAULT_IMAGE_TOKEN in res.box_text:  # replayed as history it would be an image marker
                res.fallback = IMAGE_TOKEN_IN_BOX
                continue
            try:
                box = boxes.parse_box(res.box_text)
                region = boxes.focus_region(box, qn.image.width, qn.image.height, pad=cfg.pad, square=cfg.square)
                qn.crop = boxes.crop(qn.image, region)
            except boxes.BoxError as e:
                res.fallback = e.reason
                continue
            res.box, res.crop = list(box), list(region)

    def micro(self, questions: list[Question]) -> None:
        """The micro pass of each question with a crop, continuing its box pass."""
        requests = []
        for qn in questions:
            ids = self.chat.prompt_ids(self.protocol.micro_messages(qn.query, qn.result.box_text))
            # The replayed box turn (before the crop's marker) may be labelled when scoring (focus.scoring).
            crop_marker = len(ids) - 1 - ids[::-1].index(IMAGE_TOKEN_INDEX)
            requests.append(GenerationRequest(ids, [qn.image, qn.crop], self._params["micro"],
                                              parent=qn.box_handle, keep_logprobs=crop_marker))
        for qn, gen in zip(questions, self.engine.generate(requests) if requests else []):
            qn.result.micro_raw = self.chat.answer_text(gen.token_ids)
            qn.result.micro_answer = self.protocol.parse_answer(qn.result.micro_raw, qn.query)
            qn.micro_handle = gen.handle

    def decide_and_score(self, questions: list[Question]) -> None:
        """The protocol's decision; the two candidates scored where it asks for it."""
        cfg = self.config
        for qn in questions:
            res = qn.result
            qn.decision = self.protocol.decide(qn.query, res.macro_answer, res.micro_answer, cfg.selection,
                                               box_error=res.fallback)
            if qn.decision.needs_scoring:
                try:
                    qn.scoring = [self._scoring_request(qn, cand) for cand in qn.decision.candidates]
                except CANDIDATE_ERRORS as e:
                    self._scoring_failed(qn, f"scoring: {e}")
        scored = [qn for qn in questions if qn.scoring]
        scores = iter(self.engine.loglikelihood([req for qn in scored for req in qn.scoring]) if scored else [])
        for qn in scored:
            qn.result.candidates = list(qn.decision.candidates)
            qn.result.losses = [next(scores).loss for _ in qn.scoring]

    def choose(self, questions: list[Question]) -> None:
        """The final answer; a NaN loss (fp16 overflow) cannot choose: the macro answer stands."""
        for qn in questions:
            res = qn.result
            if qn.decision.needs_scoring and any(math.isnan(x) for x in res.losses):
                self._scoring_failed(qn, f"choose: candidate loss is NaN: {res.losses!r}")
            res.answer, res.choice = self.protocol.pick(qn.decision, res.losses)
            res.text = self.protocol.final_text(res.answer, qn.query)

    # -- helpers ----------------------------------------------------------------------------------
    def _request(self, name: str, messages, images, **hints) -> GenerationRequest:
        return GenerationRequest(self.chat.prompt_ids(messages), images, self._params[name], **hints)

    def _scoring_request(self, qn: Question, candidate: str) -> ScoringRequest:
        ids, labels = scoring_example(self.protocol, qn.query, qn.result.box_text, candidate, self.chat.tokenizer,
                                      self.config.conv_mode, self.config.selection)
        return ScoringRequest(ids.tolist(), labels.tolist(), [qn.image, qn.crop], parent=qn.micro_handle)

    def _scoring_failed(self, qn: Question, error: str) -> None:
        qn.result.error = error
        qn.decision = Decision(SCORING_FAILED, answer=qn.result.macro_answer)
