"""The benchmarks, one module each, registered by name.

Each module in `MODULES` is the one home of its benchmark (see `dualfocus.benchmarks.base`): its
`Protocol` subclass (reading a record, wording overrides) next to its registered `Benchmark`
adapter, which holds that protocol and knows the files, the gold answers, the data layout and the
official scoring. Importing this package imports them, and the registry is what every list of
benchmarks reads: the runner's ``--benchmark``, ``serve.cli``'s ``--protocol``, the launch scripts
(``python -m dualfocus.benchmarks defaults NAME``) and the demo.

    get_benchmark("mmbench", all_rounds=True, single_pred_prompt=True, lang="en")
    get_protocol("seed")
"""

from __future__ import annotations

import importlib

from dualfocus.benchmarks.base import (
    REGISTRY,
    UNREADABLE,
    Benchmark,
    Gold,
    Layout,
    jsonable,
    read_question_lines,
    register,
    score_answer,
)
from dualfocus.focus.protocols import Protocol, RecordError
from dualfocus.mm_utils import ImageLoadError

__all__ = [
    "BENCHMARK_NAMES", "Benchmark", "Gold", "ImageLoadError", "Layout", "RecordError", "UNREADABLE", "get_benchmark",
    "get_protocol", "jsonable", "read_question_lines", "register", "score_answer",
]

# Registration: a benchmark module is listed here once; importing it registers its adapter.
MODULES = ("seed", "mmbench", "gqa", "textvqa", "vqa", "vstar")
for _module in MODULES:
    importlib.import_module(f"dualfocus.benchmarks.{_module}")

BENCHMARK_NAMES = tuple(REGISTRY)


def get_benchmark(name: str, **options) -> Benchmark:
    """The adapter registered as ``name`` (`BENCHMARK_NAMES`; "vqa" is a generic LLaVA jsonl).

    ``options``: MMBench's ``all_rounds``, ``single_pred_prompt``, ``lang``.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {BENCHMARK_NAMES}")
    return REGISTRY[name](**options)


def get_protocol(name: str, **options) -> Protocol:
    """The DualFocus protocol of benchmark ``name`` (MMBench's options: ``single_pred_prompt``, ``lang``)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {BENCHMARK_NAMES}")
    return REGISTRY[name].protocol_class(**options)
