"""The eval CLIs (`python -m dualfocus.eval.model_vqa_*`): flags built from `EvalConfig`'s fields.

Each field is one flag with the field's default and help (see `dualfocus.eval.config`). A
multi-word flag is accepted in both spellings, ``--max_new_tokens`` and ``--max-new-tokens``; the
help shows LLaVA's first. ``--benchmark`` (the generic entry point) chooses from the registry and
adds that benchmark's own flags.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from dataclasses import MISSING, Field, fields

from dualfocus.benchmarks import BENCHMARK_NAMES
from dualfocus.eval import runner
from dualfocus.eval.config import BENCHMARK_OPTIONS, EvalConfig
from dualfocus.files import EvalRunError, one_line

DEFAULT_BENCHMARK = "vqa"  # a generic LLaVA jsonl
_TYPES = {"str": str, "int": int, "float": float}
_ACTIONS = {"boolean_optional": argparse.BooleanOptionalAction}
EPILOG = "Every multi-word flag also takes the other spelling: --max_new_tokens = --max-new-tokens."


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The help lists each flag once, in LLaVA's spelling (the other one is accepted all the same)."""

    def _format_action_invocation(self, action):
        if len(action.option_strings) > 1:
            first = action.option_strings[0]
            action = copy.copy(action)
            action.option_strings = [s for s in action.option_strings if s in (first, "--no-" + first[2:])]
        return super()._format_action_invocation(action)


def build_parser(benchmark: str | None, description: str | None = None, chosen: str | None = None):
    """LLaVA's flags (names and spelling kept), plus DualFocus's, plus `benchmark`'s own (MMBench's three);
    `benchmark` None: a ``--benchmark`` flag, with the flags of `chosen` added."""
    what = runner.run_eval.__doc__.split("\n    Arguments:")[0]  # the API's arguments are not the CLI's
    parser = argparse.ArgumentParser(description=description or what, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    if benchmark is None:
        parser.add_argument("--benchmark", default=DEFAULT_BENCHMARK, choices=BENCHMARK_NAMES,
                            help=f"question-file format and DualFocus protocol (default: {DEFAULT_BENCHMARK}, "
                                 "a generic LLaVA jsonl)")
    add_fields(parser, fields(EvalConfig))
    own = BENCHMARK_OPTIONS.get(benchmark or chosen)
    if own is not None:
        add_fields(parser.add_argument_group(f"{benchmark or chosen} options"), fields(own))
    return parser


def add_fields(parser, dataclass_fields: Sequence[Field]) -> None:
    """One flag per field: its spellings, default, help and kind, all read from the field."""
    for f in dataclass_fields:
        parser.add_argument(*spellings(f), dest=f.name, **_argument(f))


def spellings(f: Field) -> list[str]:
    """LLaVA's spelling (the field's ``flag``, else dashed) first, then the other one."""
    return flag_spellings(f.metadata.get("flag", "--" + f.name.replace("_", "-")))


def flag_spellings(flag: str) -> list[str]:
    """``--max-new-tokens`` -> [it, ``--max_new_tokens``]; a one-word or short flag -> [itself]."""
    if not flag.startswith("--"):
        return [flag]
    words = flag[2:]
    return list(dict.fromkeys([flag, "--" + words.replace("_", "-"), "--" + words.replace("-", "_")]))


class FlagParser(argparse.ArgumentParser):
    """A parser whose multi-word flags take both spellings; the help shows each flag once, as added."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("epilog", EPILOG)
        super().__init__(**kwargs)

    def add_argument(self, *names, **kwargs):
        return super().add_argument(*(s for n in names for s in flag_spellings(n)), **kwargs)


def _argument(f: Field) -> dict:
    meta = f.metadata
    kwargs = {"help": meta.get("help")}
    if f.default is MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = f.default
    action = meta.get("action") or ("store_true" if _kind(f) == "bool" else None)
    if action is not None:
        return {**kwargs, "action": _ACTIONS.get(action, action)}
    return {**kwargs, "type": _TYPES[_kind(f)], **({"choices": meta["choices"]} if "choices" in meta else {})}


def _kind(f: Field) -> str:
    """'int' from ``int | None`` (annotations are strings here: ``from __future__ import annotations``)."""
    return next(t.strip() for t in str(f.type).split("|") if t.strip() != "None")


def main(benchmark: str | None, argv: Sequence[str] | None = None) -> dict:
    """Parse a CLI's arguments and call `run_eval`; a cause the user fixes is one line, no traceback."""
    parser = build_parser(benchmark, chosen=None if benchmark else _chosen_benchmark(argv))
    args = vars(parser.parse_args(argv))
    name = args.pop("benchmark", benchmark)
    try:
        return runner.run_eval(name, **args)
    except (EvalRunError, OSError, ValueError) as e:
        raise SystemExit(f"{parser.prog}: error: {_cli_message(e)}") from None


def _chosen_benchmark(argv: Sequence[str] | None) -> str:
    """--benchmark alone, read first: its own flags join the parser."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--benchmark", default=DEFAULT_BENCHMARK)
    return pre.parse_known_args(argv)[0].benchmark


def _cli_message(error: Exception) -> str:
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"no such file: {error.filename}"
    return one_line(error, limit=2000)
