"""The engines, by name: "fast" (token trees, the default) and "reference" (the specification)."""

from __future__ import annotations

from dualfocus.engine.options import ENGINE_NAMES, STATIC_DECODE

__all__ = ["ENGINE_NAMES", "STATIC_DECODE", "build_engine"]


def build_engine(name: str, model, tokenizer, image_processor, static_decode: str = "off"):
    """The engine called ``name`` over a loaded model (imported on demand: the fast one pulls in more).

    ``static_decode`` is the fast engine's (`STATIC_DECODE`); the reference engine takes only "off".
    """
    if name == "fast":
        from dualfocus.engine.fast import FastEngine

        return FastEngine(model, tokenizer, image_processor, static_decode=static_decode)
    if name == "reference":
        if static_decode != "off":
            raise ValueError(f"static_decode={static_decode!r} is the fast engine's; the reference engine has none")
        from dualfocus.engine.reference import ReferenceEngine

        return ReferenceEngine(model, tokenizer, image_processor)
    raise ValueError(f"unknown engine {name!r}; choose one of {ENGINE_NAMES}")
