"""The model behind a run, loaded on first use: an empty or finished chunk loads nothing.

`LazyPipeline` is a `DualFocus` pipeline to the runner (``run``, ``config``, ``load``); loading is
the run's concern, never a question's: any failure is a `ModelLoadError` that stops the run.
"""

from __future__ import annotations

import os

from dualfocus.engine import ENGINE_NAMES, build_engine
from dualfocus.eval.config import EvalConfig
from dualfocus.eval.shards import task_device
from dualfocus.files import EvalRunError, one_line
from dualfocus.focus.protocols import Protocol


class ModelLoadError(EvalRunError):
    """The checkpoint could not be loaded: nothing can be answered, so the run stops before it starts."""


class LazyPipeline:
    """A DualFocus pipeline whose model is loaded on first use (``load()``, or the first ``run``)."""

    def __init__(self, protocol: Protocol, config: EvalConfig):
        if config.engine not in ENGINE_NAMES:
            raise ValueError(f"unknown engine {config.engine!r}; choose one of {ENGINE_NAMES}")
        if config.static_decode != "off" and config.engine != "fast":
            raise ValueError(f"--static-decode {config.static_decode} needs --engine fast (the reference engine has "
                             "no static decode)")
        self.config = config.focus_config()  # validated now, before any model is loaded
        self.protocol, self.options = protocol, config
        self.model_path = os.path.expanduser(config.model_path)
        self.device_used: str | None = None
        self._pipeline = None

    def load(self) -> None:
        """Load the model once; any failure is the run's, not a question's (`ModelLoadError`)."""
        if self._pipeline is not None:
            return
        try:
            self._pipeline = self._load()
        except Exception as e:  # noqa: BLE001 - every cause is fatal here; re-raised with it chained
            base = self.options.model_base
            where = self.model_path + (f" (base {base})" if base else "")
            raise ModelLoadError(f"cannot load the checkpoint {where}: {type(e).__name__}: {one_line(e)}; "
                                 "check --model-path / --model-base, then rerun") from e

    def run(self, items):
        self.load()
        return self._pipeline.run(items)

    def _load(self):
        from dualfocus.focus.pipeline import DualFocus
        from dualfocus.model.builder import load_pretrained_model

        device = task_device(self.options.device)
        tokenizer, model, image_processor, _ = load_pretrained_model(
            self.model_path, self.options.model_base, None, device="cuda" if device == "auto" else device,
            device_map="auto" if device == "auto" else None, torch_dtype=self.options.dtype)
        self.device_used = device
        engine = build_engine(self.options.engine, model, tokenizer, image_processor, self.options.static_decode)
        return DualFocus(engine, self.protocol, self.config)
