"""The ``dualfocus`` lmms-eval model: a checkpoint on one of our engines, the DualFocus loop for
``generate_until``, the engine's scoring for ``loglikelihood``.

    lmms-eval --model dualfocus --model_args pretrained=CKPT,batch_size=8,trace_file=OUT/trace.jsonl ...

``model_args`` (all optional but ``pretrained``; a value given there wins over lmms-eval's own
``--batch_size`` / ``--device``):

    pretrained          checkpoint directory or hub id (anything `load_pretrained_model` loads)
    model_base          base LLM for LoRA / projector-only checkpoints
    mode                dualfocus (macro, box, crop, micro, choice) | macro (plain LLaVA, one pass)
    selection           original | candidate | macro | micro (the choice rule, see docs/protocol.md)
    engine              fast (default: batched, shared prefixes) | reference
    batch_size          questions per pipeline call (and scoring requests per engine call)
    conv_mode           conversation template (vicuna_v1)
    device, dtype       cpu, cuda, cuda:N, auto; fp16 | bf16 | fp32 (default: fp16 on GPU, fp32 on CPU)
    max_new_tokens      answer passes, when the task does not say (the task's value wins)
    box_max_new_tokens  the box pass, whatever the task's answer length (a box needs ~25 tokens)
    trace_file          the JSONL side file of traces (default ./dualfocus_trace.jsonl)

Under accelerate (several ranks) each rank loads the model on its local GPU and writes its own
trace file (``trace.rank<k>.jsonl``); lmms-eval splits the requests.
"""

from __future__ import annotations

import logging

from lmms_eval import utils as lmms_utils
from lmms_eval.api.instance import GenerationResult
from lmms_eval.api.model import lmms

from dualfocus.engine import ENGINE_NAMES, build_engine
from dualfocus.integrations.lmms_eval import generate, likelihood
from dualfocus.integrations.lmms_eval.trace import TraceWriter, rank_path

log = logging.getLogger(__name__)


class DualFocusLMMs(lmms):
    is_simple = True

    def __init__(self, pretrained: str, model_base: str | None = None, mode: str = "dualfocus",
                 selection: str = "original", engine: str = "fast", batch_size: int | str = 8,
                 conv_mode: str = "vicuna_v1", device: str | None = None, dtype: str | None = None,
                 max_new_tokens: int = 128, box_max_new_tokens: int = 128,
                 trace_file: str = "dualfocus_trace.jsonl", max_batch_size=None, **unknown) -> None:
        super().__init__()
        if unknown:
            raise ValueError(f"dualfocus: unknown model_args {sorted(unknown)}; see "
                             "dualfocus.integrations.lmms_eval.model for the accepted ones")
        from dualfocus.focus.pipeline import FocusConfig

        self.config = FocusConfig(mode=mode, selection=selection, conv_mode=conv_mode, max_new_tokens=int(max_new_tokens),
                                  box_max_new_tokens=int(box_max_new_tokens))  # validated before loading
        self.batch_size_per_gpu = parse_batch_size(batch_size)
        self.engine = load_engine(pretrained, model_base, engine, device, dtype)
        self.trace_file = trace_file
        self._writer: TraceWriter | None = None

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """lmms-eval's constructor hook; ``model_args`` win over its ``--batch_size`` / ``--device``."""
        args = lmms_utils.simple_parse_args_string(arg_string)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **extra)

    @property
    def device(self):
        return self.engine.device

    @property
    def writer(self) -> TraceWriter:
        if self._writer is None:  # rank and world size are set by the evaluator after __init__
            self._writer = TraceWriter(rank_path(self.trace_file, self.rank, self.world_size))
            log.info("dualfocus: traces go to %s", self._writer.path)
        return self._writer

    def doc(self, task: str, split: str, doc_id: int):
        return self.task_dict[task][split][doc_id]

    def generate_until(self, requests) -> list[str]:
        return generate.generate_until(requests, self.doc, self.engine, self.config, self.batch_size_per_gpu,
                                       self.writer, progress=self.rank == 0)

    def loglikelihood(self, requests) -> list[GenerationResult]:
        """``(logprob, is_greedy)`` per request, each wrapped in a `GenerationResult`: lmms-eval 0.7.3's
        evaluator str()s any output it does not recognise (``api.instance.unwrap_generation_output``),
        a bare pair included, which breaks every loglikelihood and multiple_choice task; a
        GenerationResult's ``text`` reaches the task's scoring as it is."""
        pairs = likelihood.loglikelihood(requests, self.doc, self.engine, self.config.conv_mode,
                                         self.batch_size_per_gpu)
        return [GenerationResult(text=pair) for pair in pairs]

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("dualfocus: multi-round tasks are not supported (DualFocus answers one "
                                  "question per image); pick a single-round task")


def parse_batch_size(value) -> int:
    """lmms-eval's ``--batch_size`` is a string; ``auto`` is not supported here."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"dualfocus: batch_size must be a positive integer, got {value!r}") from None
    if size < 1:
        raise ValueError(f"dualfocus: batch_size must be a positive integer, got {value!r}")
    return size


def load_engine(pretrained: str, model_base, engine: str, device, dtype):
    """The checkpoint on the named engine, on `device` (default: this rank's GPU, else CPU)."""
    from dualfocus.eval.shards import task_device
    from dualfocus.model.builder import load_pretrained_model

    if engine not in ENGINE_NAMES:
        raise ValueError(f"dualfocus: unknown engine {engine!r}; choose one of {ENGINE_NAMES}")
    device = task_device(device)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        pretrained, model_base, None, device="cuda" if device == "auto" else device,
        device_map="auto" if device == "auto" else None, torch_dtype=dtype)
    return build_engine(engine, model, tokenizer, image_processor)
