"""The DualFocus loop, once, for every benchmark and both engines.

Per batch of questions:
  1. macro + box passes, as one `generate` call (same group: they share the image prefix);
  2. each box text -> a crop (`dualfocus.boxes`); a bad box keeps the macro answer;
  3. micro pass on [full image, crop], continuing the box pass (its handle);
  4. the protocol decides, scoring the two candidates from the micro pass when it must.
Every step is recorded in a `FocusResult`; one bad question never stops the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from PIL import Image

from dualfocus import boxes
from dualfocus.constants import DEFAULT_IMAGE_TOKEN
from dualfocus.conversation import SeparatorStyle, conv_templates
from dualfocus.engine.base import Engine, GenerationRequest, SamplingParams, ScoringRequest
from dualfocus.focus.protocols import SELECTIONS, FocusQuery, Protocol
from dualfocus.focus.scoring import scoring_example

MODES = ("dualfocus", "macro")
IMAGE_TOKEN_IN_BOX = "image_token_in_box_text"  # fallback: the box text holds "<image>"


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
    choice: str = ""  # the protocol's reason for the final answer
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


class DualFocus:
    """Runs the method on an engine; `run` takes (query, PIL image) pairs."""

    def __init__(self, engine: Engine, protocol: Protocol, config: FocusConfig = FocusConfig()):
        self.engine, self.protocol, self.config = engine, protocol, config
        template = conv_templates[config.conv_mode]
        engine.stop_str = template.sep2 if template.sep_style == SeparatorStyle.TWO else template.sep
        self._params = {name: config.params() for name in ("macro", "micro")}
        self._params["box"] = config.params(config.box_max_new_tokens)
        for name, text in config.forced_outputs:  # " text" as an answer follows "ASSISTANT:", then EOS
            ids = engine.tokenizer(" " + text, add_special_tokens=False).input_ids + [engine.eos_token_id]
            self._params[name] = config.params(forced=tuple(ids))

    def prompt(self, messages: Sequence[tuple[int, str | None]]) -> str:
        conv = conv_templates[self.config.conv_mode].copy()
        for role, text in messages:
            conv.append_message(conv.roles[role], text)
        conv.append_message(conv.roles[1], None)
        return conv.get_prompt()

    def run(self, items: Sequence[tuple[FocusQuery, Image.Image]]) -> list[FocusResult]:
        cfg, proto = self.config, self.protocol
        results = [FocusResult(q.question_id, mode=cfg.mode, selection=cfg.selection) for q, _ in items]
        # 1. macro (+ box) passes
        requests = []
        for i, (q, image) in enumerate(items):
            macro = GenerationRequest(self.prompt([(0, proto.macro_prompt(q))]), [image], self._params["macro"], i)
            requests.append(macro)
            if cfg.mode == "dualfocus":
                box = GenerationRequest(self.prompt([(0, proto.box_prompt(q))]), [image], self._params["box"], i)
                requests.append(box)
        gens = self.engine.generate(requests)
        step = 2 if cfg.mode == "dualfocus" else 1
        for i, ((q, _), res) in enumerate(zip(items, results)):
            res.macro_raw = gens[step * i].text
            res.macro_answer = proto.parse_answer(res.macro_raw, q)
        if cfg.mode == "macro":
            for (q, _), res in zip(items, results):
                self._finish(res, q, proto.decide(q, res.macro_answer, None, "macro"))
            return results
        # 2. crops
        micro_items = []
        for i, ((_, image), res) in enumerate(zip(items, results)):
            box_gen = gens[2 * i + 1]
            res.box_text = box_gen.text
            if DEFAULT_IMAGE_TOKEN in box_gen.text:  # replayed as history it would be an image marker
                res.fallback = IMAGE_TOKEN_IN_BOX
                continue
            try:
                box = boxes.parse_box(box_gen.text)
                region = boxes.focus_region(box, image.width, image.height, pad=cfg.pad, square=cfg.square)
                crop = boxes.crop(image, region)
            except boxes.BoxError as e:
                res.fallback = e.reason
                continue
            res.box, res.crop = list(box), list(region)
            micro_items.append((i, crop, box_gen.handle))
        # 3. micro passes
        micro_requests = [
            GenerationRequest(
                self.prompt(proto.micro_messages(items[i][0], results[i].box_text)),
                [items[i][1], crop], self._params["micro"], i, parent=handle,
            )
            for i, crop, handle in micro_items
        ]
        micro_gens = self.engine.generate(micro_requests) if micro_requests else []
        micro_of = {}
        for (i, crop, _), gen in zip(micro_items, micro_gens):
            q, res = items[i][0], results[i]
            res.micro_raw = gen.text
            res.micro_answer = proto.parse_answer(gen.text, q)
            micro_of[i] = (crop, gen)
        # 4. choose (scoring the candidates where the protocol asks)
        decisions, scoring, owners = {}, [], []
        for i, ((q, image), res) in enumerate(zip(items, results)):
            decision = proto.decide(q, res.macro_answer, res.micro_answer, cfg.selection, box_error=res.fallback)
            decisions[i] = decision
            if not decision.needs_scoring:
                continue
            crop, gen = micro_of[i]
            try:
                for cand in decision.candidates:
                    ids, labels = scoring_example(proto, q, res.box_text, cand, self.engine.tokenizer,
                                                  cfg.conv_mode, cfg.selection)
                    scoring.append(ScoringRequest(ids.tolist(), labels.tolist(), [image, crop], parent=gen.handle))
                owners.append(i)
            except ValueError as e:  # a candidate that cannot be tokenized/masked: macro stands
                del scoring[len(owners) * 2 :]
                res.error = f"scoring: {e}"
                decisions[i] = proto.decide(q, res.macro_answer, None, cfg.selection, box_error="scoring_failed")
        scores = self.engine.loglikelihood(scoring) if scoring else []
        for k, i in enumerate(owners):
            results[i].candidates = list(decisions[i].candidates)
            results[i].losses = [scores[2 * k].loss, scores[2 * k + 1].loss]
        for i, ((q, _), res) in enumerate(zip(items, results)):
            try:
                self._finish(res, q, decisions[i], res.losses)
            except ValueError as e:  # a NaN loss (fp16 overflow): no choice; the macro answer stands
                res.error = f"choose: {e}"
                self._finish(res, q, proto.decide(q, res.macro_answer, None, cfg.selection, box_error="scoring_failed"))
        return results

    def _finish(self, res: FocusResult, q: FocusQuery, decision, losses=None) -> None:
        res.answer, res.choice = self.protocol.pick(decision, losses)
        res.text = self.protocol.final_text(res.answer, q)
