"""The engines, by name: "fast" (token trees, the default) and "reference" (the specification)."""

from __future__ import annotations

ENGINE_NAMES = ("fast", "reference")


def build_engine(name: str, model, tokenizer, image_processor):
    """The engine called ``name`` over a loaded model (imported on demand: the fast one pulls in more)."""
    if name == "fast":
        from dualfocus.engine.fast import FastEngine as engine_class
    elif name == "reference":
        from dualfocus.engine.reference import ReferenceEngine as engine_class
    else:
        raise ValueError(f"unknown engine {name!r}; choose one of {ENGINE_NAMES}")
    return engine_class(model, tokenizer, image_processor)
