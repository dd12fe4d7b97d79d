"""Ask one question about one image with DualFocus, from the terminal, and see each step.

    python -m dualfocus.serve.cli --model-path CKPT --image photo.jpg \\
        --question "What color is the car?" --options red green blue yellow --save-vis focus.png

Prints the macro answer, the box the model wrote, the parsed box, the crop in pixels, the micro
answer, the candidate losses when the two answers had to be scored, and the choice. With
--save-vis it also saves a picture: the image with the box and the crop region drawn, the crop
beside it, the answers and the choice below (`dualfocus.serve.visualize`).

With --options the question is multiple choice, asked as SEED-Bench asks it (options "A. red",
..., then "Answer with the option's letter from the given choices directly."); without, as a
free-form question (protocol "vqa"; "textvqa" for a TextVQA-style question text with its OCR
line). Prompts, parsing and the choice are the benchmarks' (`dualfocus.benchmarks`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dualfocus.benchmarks import REGISTRY, get_benchmark, get_protocol
from dualfocus.engine import ENGINE_NAMES, build_engine
from dualfocus.eval.cli import FlagParser
from dualfocus.focus.pipeline import MODES, DualFocus, FocusConfig, FocusResult
from dualfocus.focus.protocols import SELECTION_HELP, SELECTIONS, FocusQuery

PROTOCOLS = tuple(name for name, cls in REGISTRY.items() if cls.typed_questions)  # not MMBench: TSV rows
ENGINES = ENGINE_NAMES


def add_model_arguments(p: argparse.ArgumentParser, model_path_default: str | None = None) -> None:
    """The model and method flags, shared with the web page (`dualfocus.serve.web`)."""
    p.add_argument("--model-path", required=model_path_default is None, default=model_path_default,
                   help="checkpoint directory (original LLaVA layout or llava-hf)"
                   + (f"; default: {model_path_default}" if model_path_default else ""))
    p.add_argument("--model-base", default=None, help="base model for LoRA / projector-only checkpoints")
    p.add_argument("--conv-mode", default="vicuna_v1", help="conversation template (the released scripts: vicuna_v1)")
    p.add_argument("--engine", choices=ENGINES, default="fast")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when available)")
    p.add_argument("--mode", choices=MODES, default="dualfocus", help="macro: plain LLaVA, one pass")
    p.add_argument("--selection", choices=SELECTIONS, default="original", help=SELECTION_HELP)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy, as the released evaluation")
    p.add_argument("--max-new-tokens", type=int, default=128)


def build_parser() -> argparse.ArgumentParser:
    p = FlagParser(prog="python -m dualfocus.serve.cli", description=__doc__)
    add_model_arguments(p)
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--question", required=True, help="the question (newlines allowed)")
    p.add_argument("--options", nargs="+", default=None, metavar="OPTION",
                   help="answer options, in order (they get the letters A, B, C, ...)")
    p.add_argument("--protocol", choices=PROTOCOLS, default=None,
                   help="whose prompts to use (default: seed with --options, else vqa)")
    p.add_argument("--save-vis", default=None, metavar="PNG", help="save a picture of the focus here")
    return p


def make_query(question: str, options: Sequence[str] | None, protocol: str) -> FocusQuery:
    """The benchmark record this question would be, read by that benchmark's protocol."""
    benchmark = get_benchmark(protocol)
    return benchmark.to_query(benchmark.typed_record(question, options))


def format_steps(result: FocusResult, image_size: tuple[int, int]) -> list[str]:
    """One line per step of the method, as printed."""
    lines = [f"macro answer: {result.macro_answer}   (raw: {result.macro_raw!r})"]
    if result.mode == "macro":
        lines.append("box: - (mode macro: one pass)")
    else:
        lines.append(f"box text: {result.box_text!r}")
        if result.box is None:
            lines += [f"parsed box: unusable ({result.fallback}): the micro pass is skipped",
                      "crop pixels: -", "micro answer: - (no micro pass)"]
        else:
            x1, y1, x2, y2 = result.crop
            lines += [f"parsed box: {list(result.box)}",
                      f"crop pixels: {list(result.crop)} ({x2 - x1}x{y2 - y1} of {image_size[0]}x{image_size[1]})",
                      f"micro answer: {result.micro_answer}   (raw: {result.micro_raw!r})"]
    if result.losses is not None:
        pairs = zip(("macro", "micro"), result.candidates, result.losses)
        lines.append("candidate losses: " + ", ".join(f"{c!r} ({who}) {x:.4f}" for who, c, x in pairs))
    else:
        lines.append("candidate losses: - (nothing to score)")
    if result.error:
        lines.append(f"error: {result.error}")
    lines += [f"choice: {result.choice}", f"answer: {result.text}"]
    return lines


def fail(message: str, code: int) -> int:
    """One line on stderr, no traceback; returns the exit code."""
    print(f"python -m dualfocus.serve.cli: error: {message}", file=sys.stderr)
    return code


def load_model(args: argparse.Namespace) -> tuple:
    """(tokenizer, model, image_processor) from the model flags, on --device (cuda when available)."""
    import torch

    from dualfocus.model.builder import load_pretrained_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer, model, image_processor, _ = load_pretrained_model(args.model_path, args.model_base, None,
                                                                  device=device)
    return tokenizer, model, image_processor


def make_engine(name: str, tokenizer, model, image_processor):
    """An engine over an already loaded model (engines hold no weights of their own)."""
    return build_engine(name, model, tokenizer, image_processor)


def focus_config(args: argparse.Namespace, **overrides) -> FocusConfig:
    """The method's settings from the flags; `overrides` (e.g. selection=...) win."""
    settings = dict(mode=args.mode, selection=args.selection, conv_mode=args.conv_mode,
                    temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    return FocusConfig(**{**settings, **overrides})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    protocol = args.protocol or ("seed" if args.options else "vqa")
    try:  # both checked before the model loads
        query = make_query(args.question, args.options, protocol)
        config = focus_config(args)
    except ValueError as e:
        return fail(str(e), 2)
    from dualfocus.mm_utils import ImageLoadError, load_image

    try:
        image = load_image(args.image)
    except ImageLoadError as e:
        return fail(f"--image {e}; give a readable image file (PNG, JPEG, ...)", 1)
    from dualfocus.engine.base import ContextLengthError
    from dualfocus.model.builder import CheckpointError

    try:
        result = answer(args, query, image, protocol, config)
    except CheckpointError as e:
        return fail(" ".join(f"--model-path {e}".split()), 1)  # the hub's reasons span lines
    except ContextLengthError as e:
        return fail(f"--question is too long for this model: {e}", 1)
    print(f"question: {query.text}")
    print(f"image: {args.image} ({image.width}x{image.height})  engine: {args.engine}  protocol: {protocol}")
    for line in format_steps(result, image.size):
        print(line)
    if args.save_vis:
        from dualfocus.serve.visualize import save_visualization

        print(f"picture: {save_visualization(image, result, query.text, args.save_vis)}")
    return 0


def answer(args: argparse.Namespace, query: FocusQuery, image, protocol: str, config: FocusConfig) -> FocusResult:
    """Load the checkpoint and run DualFocus on the one question."""
    engine = make_engine(args.engine, *load_model(args))
    return DualFocus(engine, get_protocol(protocol), config).run([(query, image)])[0]


if __name__ == "__main__":
    sys.exit(main())
