"""DualFocus: macro and micro perspectives for multimodal LLMs, on LLaVA-1.5."""

__version__ = "0.1.0"
