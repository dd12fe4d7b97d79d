"""The eval run's options, once: each field's default and help; the CLI is built from them.

`EvalConfig` holds what `run_eval` needs; the generation options take their defaults from
`FocusConfig`, so a default lives in one place. A field's `metadata` says how the CLI shows it:
``help``; ``flag`` when LLaVA spells it with underscores (``--max_new_tokens``; the dashed spelling
is accepted too); ``choices``; ``action`` for a switch. A benchmark's own options (MMBench's
three) are a dataclass of the same kind in `BENCHMARK_OPTIONS`.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

from dualfocus.engine.options import ENGINE_NAMES, STATIC_DECODE
from dualfocus.focus.pipeline import MODES, FocusConfig
from dualfocus.focus.protocols import SELECTION_HELP, SELECTIONS

_FOCUS = FocusConfig()
# The fields of EvalConfig that are FocusConfig's (the pipeline's), passed on as they are.
FOCUS_FIELDS = ("mode", "selection", "conv_mode", "temperature", "top_p", "num_beams", "max_new_tokens")
DTYPES = ("fp16", "bf16", "fp32")


def option(default=MISSING, help: str = "", **cli):  # `help`: argparse's word
    """A dataclass field with its CLI help (and ``flag``, ``choices``, ``action`` when needed)."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class EvalConfig:
    """One chunk of one benchmark, answered by one model (see `dualfocus.eval.runner.run_eval`)."""

    model_path: str = option(help="checkpoint directory (or hub id)")
    question_file: str = option(help="the benchmark's question file")
    answers_file: str = option(help="answer jsonl; appended to and resumed")
    image_folder: str = option("", help="folder the question file's image paths are relative to")
    model_base: str | None = option(None, help="base LLM for LoRA / projector-only checkpoints")
    conv_mode: str = option(_FOCUS.conv_mode, help="conversation template")
    num_chunks: int | None = option(None, help="default: from the environment, else 1")
    chunk_idx: int | None = option(None, help="default: from the environment, else 0")
    temperature: float = option(_FOCUS.temperature, help="0: greedy (as the released scripts)")
    top_p: float | None = option(_FOCUS.top_p, help="nucleus sampling (with a temperature above 0)", flag="--top_p")
    num_beams: int = option(_FOCUS.num_beams, help="only 1 (beam search is not supported)", flag="--num_beams")
    max_new_tokens: int = option(_FOCUS.max_new_tokens, help="per pass", flag="--max_new_tokens")
    batch_size: int = option(8, help="questions per pipeline call")
    mode: str = option(_FOCUS.mode, help="macro: plain LLaVA, one pass", choices=MODES)
    engine: str = option("fast", help="fast: shared prefixes in one KV cache; reference: one question at a time",
                         choices=ENGINE_NAMES)
    static_decode: str = option(
        "off", help="fast engine: decode steps of fixed shape (eager), captured as CUDA graphs (graph; auto: graph on "
                    "one CUDA device, else off); off by default until measured on a GPU", choices=STATIC_DECODE)
    selection: str = option(_FOCUS.selection, help=SELECTION_HELP, choices=SELECTIONS)
    device: str | None = option(None, help="cpu, cuda, cuda:N or auto; default: from the local rank")
    dtype: str | None = option(None, help="default: fp16 on GPU, fp32 on CPU", choices=DTYPES)
    annotation_file: str | None = option(None, help="gold answers for the summary's accuracies (optional)")
    summary_file: str | None = option(None, help="also write the summary here as JSON")
    progress: bool = option(True, help="no progress bar", flag="--no-progress", action="store_false")
    max_consecutive_errors: int = option(
        64, help="stop when this many questions in a row fail (answers kept; a rerun asks them again); 0: never")
    skip_failed: bool = option(
        False, help="on resume, keep earlier error records as answers instead of asking those questions again")

    def focus_config(self) -> FocusConfig:
        """The pipeline's part (validated there: an unknown conv_mode fails before any model loads)."""
        return FocusConfig(**{name: getattr(self, name) for name in FOCUS_FIELDS})


@dataclass(frozen=True)
class MMBenchOptions:
    """LLaVA's model_vqa_mmbench flags."""

    all_rounds: bool = option(False, help="ask every rotation of the options (round_id = k)")
    single_pred_prompt: bool = option(
        True, help="append the answer-with-the-letter instruction (default, as DualFocus's original always did and "
                   "LLaVA's scripts always ask)", action="boolean_optional")
    lang: str = option("en", help="the language of the option prompt", choices=("en", "cn"))


# benchmark name -> the dataclass of its own options (passed to `get_benchmark`)
BENCHMARK_OPTIONS = {"mmbench": MMBenchOptions}


def split_options(args: tuple, options: dict) -> tuple[EvalConfig, dict]:
    """`run_eval`'s arguments -> (EvalConfig, the benchmark's own options): a keyword that is not an
    EvalConfig field goes to the benchmark (which rejects one it does not know)."""
    names = {f.name for f in fields(EvalConfig)}
    config = EvalConfig(*args, **{k: v for k, v in options.items() if k in names})
    return config, {k: v for k, v in options.items() if k not in names}
