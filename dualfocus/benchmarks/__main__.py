"""What the launch scripts ask the registry (scripts/eval/_common.sh), so that no shell file lists
benchmarks or their files.

    python -m dualfocus.benchmarks names
    python -m dualfocus.benchmarks defaults NAME        shell assignments: the benchmark's data layout
    python -m dualfocus.benchmarks score NAME --result-file MERGED --question-file Q --bench-dir DIR \\
        --upload PATH_WITHOUT_SUFFIX                     its official scorer and submission file
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from dualfocus.benchmarks import BENCHMARK_NAMES, REGISTRY, get_benchmark
from dualfocus.benchmarks.base import Layout

SCRIPT_NAMES = tuple(name for name, cls in REGISTRY.items() if cls.layout is not None)


def layout_of(name: str) -> Layout:
    if name not in SCRIPT_NAMES:
        raise SystemExit(f"unknown benchmark '{name}' (one of: {', '.join(SCRIPT_NAMES)})")
    return REGISTRY[name].layout


def shell_defaults(name: str) -> str:
    """Bash assignments (shell-quoted) that `_common.sh`'s `df_benchmark` evaluates."""
    layout = layout_of(name)
    values = {"BENCH_FOLDER": layout.folder, "DEFAULT_SPLIT": layout.split, "QUESTION_SUFFIX": layout.suffix,
              "IMAGES_IN_FILE": "1" if layout.images is None else "", "IMAGE_SUBDIR": layout.images or "",
              "RUNNER": layout.runner[0], "WHOLE_SPLIT": layout.whole_split or ""}
    lines = [f"{key}={shlex.quote(value)}" for key, value in values.items()]
    lines.append("RUNNER_FLAGS=(" + " ".join(shlex.quote(flag) for flag in layout.runner[1:]) + ")")
    return "\n".join(lines)


def score(args: argparse.Namespace) -> dict:
    annotation = layout_of(args.name).annotation_file(args.bench_dir)
    return get_benchmark(args.name).score_run(args.result_file, args.question_file, annotation, args.upload)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dualfocus.benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("names", help="the registered benchmarks, one a line")
    commands.add_parser("defaults", help="the data layout as shell assignments").add_argument("name")
    scoring = commands.add_parser("score", help="the official scorer on merged answers")
    scoring.add_argument("name")
    for flag in ("--result-file", "--question-file", "--bench-dir", "--upload"):
        scoring.add_argument(flag, required=True)
    args = parser.parse_args(argv)
    if args.command == "names":
        print("\n".join(BENCHMARK_NAMES))
    elif args.command == "defaults":
        print(shell_defaults(args.name))
    else:
        score(args)


if __name__ == "__main__":
    main(sys.argv[1:])
