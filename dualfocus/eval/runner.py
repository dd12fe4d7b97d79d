"""Run DualFocus over a benchmark's question file: shard, resume, batch, record errors, summarise.

The pieces, each a plain function:

- `resolve_shard` / `resolve_device`: which chunk of the question file this process answers, and
  on which device, from the arguments or else the environment (Slurm, torchrun);
- `split_list` / `get_chunk`: LLaVA's contiguous chunking (ceil(n / k) questions per chunk);
- `AnswerWriter` (`dualfocus.eval.answers`): the answer file, locked, opened for appending; a
  half-written last line (a run killed mid-write) is cut off first; every record is one flushed line;
- `run_benchmark`: the loop over batches with a tqdm progress bar; a question that fails (its
  image, its row, or the pipeline on it) becomes an answer record with an `error` field; a model
  that cannot load stops the run before the first question;
- `summarize`: counts, errors, fallback rate, and, where the gold answers are known, the accuracy
  of the macro answer, the micro answer, the final answer and the oracle choice, all read from the
  trace each record keeps in `metadata`;
- `run_eval`: all of the above with a model loaded from a checkpoint; the CLIs call it.

Resume: a rerun with the same answer file skips the questions already answered and asks again
those that have an error record (their error lines are removed first, atomically, so a question
never counts twice; `skip_failed` keeps them as answered). Records are matched to questions per
(question id, round id), by prompt where an id repeats (TextVQA: one id per image), so nothing
finished is asked twice and no line is duplicated.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dualfocus.benchmarks import (
    BENCHMARK_NAMES,
    Benchmark,
    ImageLoadError,
    RecordError,
    get_benchmark,
    score_answer,
)
from dualfocus.engine import ENGINE_NAMES, build_engine
from dualfocus.eval.answers import (  # noqa: F401 - re-exported: the runner's public names
    AnswerWriter,
    answer_key,
    match_records,
    read_answer_file,
    repair_last_line,
)
from dualfocus.eval.files import EvalRunError

log = logging.getLogger(__name__)

# Environment variables that give the shard, in order of precedence (after explicit arguments).
SHARD_ENV = (("SLURM_PROCID", "SLURM_NTASKS"), ("RANK", "WORLD_SIZE"), ("LOCAL_RANK", "WORLD_SIZE"))
# ... and the local GPU index.
DEVICE_ENV = ("SLURM_LOCALID", "LOCAL_RANK")


# -- sharding and device -----------------------------------------------------------------------
def split_list(lst: Sequence, n: int) -> list[Sequence]:
    """LLaVA's split: contiguous chunks of ceil(len / n) items (fewer than n chunks when len < n)."""
    if n < 1:
        raise ValueError(f"number of chunks must be >= 1, got {n}")
    chunk_size = math.ceil(len(lst) / n)
    if chunk_size == 0:
        return []
    return [lst[i : i + chunk_size] for i in range(0, len(lst), chunk_size)]


def get_chunk(lst: Sequence, n: int, k: int) -> Sequence:
    """Chunk k of n; empty (not an IndexError, as in LLaVA) when there are more chunks than items."""
    if not 0 <= k < n:
        raise ValueError(f"chunk index {k} is not in [0, {n})")
    chunks = split_list(lst, n)
    return chunks[k] if k < len(chunks) else lst[:0]


def resolve_shard(num_chunks: int | None = None, chunk_idx: int | None = None,
                  env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(num_chunks, chunk_idx): the arguments when given, else the environment, else (1, 0).

    Precedence: explicit arguments; ``SLURM_NTASKS``/``SLURM_PROCID`` (srun, one task per GPU);
    ``WORLD_SIZE``/``RANK`` (torchrun, across nodes); ``WORLD_SIZE``/``LOCAL_RANK``; one chunk.
    Giving only one of the two arguments is an error (the other cannot be guessed safely).
    """
    if (num_chunks is None) != (chunk_idx is None):
        raise ValueError("give both --num-chunks and --chunk-idx, or neither (then the environment decides)")
    if num_chunks is None:
        env = os.environ if env is None else env
        for rank_var, size_var in SHARD_ENV:
            if env.get(rank_var) not in (None, "") and env.get(size_var) not in (None, ""):
                num_chunks, chunk_idx = int(env[size_var]), int(env[rank_var])
                break
        else:
            num_chunks, chunk_idx = 1, 0
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"chunk {chunk_idx} of {num_chunks} does not exist")
    return num_chunks, chunk_idx


def resolve_device(device: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The device to load the model on: the argument when given, else one GPU per local rank.

    ``SLURM_LOCALID``, else ``LOCAL_RANK``, picks ``cuda:<rank % visible GPUs>`` (a task that sees
    one GPU, e.g. under ``--gpus-per-task``, gets ``cuda:0``); no rank: ``cuda``; no CUDA: ``cpu``.
    ``auto`` spreads one model over every visible GPU (accelerate's device map).
    """
    if device:
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    env = os.environ if env is None else env
    for var in DEVICE_ENV:
        if env.get(var) not in (None, ""):
            return f"cuda:{int(env[var]) % torch.cuda.device_count()}"
    return "cuda"


# -- the loop -------------------------------------------------------------------------------------
@dataclass
class Question:
    """One row of the chunk, read as far as it could be."""

    row: dict
    key: tuple[str, int]
    query: Any = None  # FocusQuery, or None when the row is unreadable
    error: str | None = None
    prompt: str = ""  # the record's `prompt`: what tells apart questions that share an id


def read_question(benchmark: Benchmark, row: dict) -> Question:
    qid = benchmark.question_id(row)
    question = Question(row, (str(qid), benchmark.round_id(row)))
    try:
        question.query = benchmark.to_query(row)
    except RecordError as e:
        question.error = f"bad record: {e}"
    question.prompt = question.query.prompt if question.query is not None else benchmark.fallback_prompt(row)
    return question


def error_record(benchmark: Benchmark, question: Question, error: str, model_id: str, config) -> dict:
    """An answer record for a question that could not be answered: LLaVA's fields, `error`, empty text."""
    import shortuuid

    q = question.query
    return {
        "question_id": benchmark.question_id(question.row),
        "prompt": q.prompt if q is not None else benchmark.fallback_prompt(question.row),
        "text": "",
        "error": error,
        "answer_id": shortuuid.uuid(),
        "model_id": model_id,
        **benchmark.answer_fields(question.row, q),
        "metadata": with_extra(
            {"error": error, "mode": getattr(config, "mode", None), "selection": getattr(config, "selection", None)},
            q.extra if q is not None else {}),
    }


def answer_record(benchmark: Benchmark, question: Question, result, model_id: str) -> dict:
    """LLaVA's answer record, the DualFocus trace and the benchmark's extra fields in `metadata`."""
    import shortuuid

    q = question.query
    return {
        "question_id": benchmark.question_id(question.row),
        "prompt": q.prompt,
        "text": result.text,
        "answer_id": shortuuid.uuid(),
        "model_id": model_id,
        **benchmark.answer_fields(question.row, q),
        "metadata": with_extra(result.metadata(), q.extra),
    }


def with_extra(trace: dict, extra: Mapping) -> dict:
    """The trace plus the record's extra fields; an extra field named like a trace field gets a
    ``record_`` prefix (MMBench's gold ``answer`` -> ``record_answer``: the trace's ``answer`` stays)."""
    out = dict(trace)
    for key, value in extra.items():
        out[f"record_{key}" if key in trace else key] = value
    return out


def answer_batch(pipeline, items: list) -> list:
    """`pipeline.run(items)`; if the batch raises, each item alone, so that only a bad one fails.

    Returns one entry per item: a FocusResult, or the exception that item raised on its own.
    """
    try:
        results = pipeline.run(items)
        if len(results) != len(items):
            raise RuntimeError(f"the pipeline returned {len(results)} results for {len(items)} questions")
        return results
    except Exception as e:  # noqa: BLE001 - recorded per question below, never swallowed silently
        if len(items) == 1:
            log.warning("question %r failed", items[0][0].question_id, exc_info=True)
            return [e]
        log.warning("a batch of %d failed (%s: %s); answering its questions one by one",
                    len(items), type(e).__name__, e)
    return [answer_batch(pipeline, [item])[0] for item in items]


class TooManyErrors(EvalRunError):
    """`max_consecutive_errors` questions in a row failed: a cause shared by all (a wrong folder)."""


class ModelLoadError(EvalRunError):
    """The checkpoint could not be loaded: nothing can be answered, so the run stops before it starts."""


def run_benchmark(pipeline, benchmark: Benchmark, rows: Sequence[dict], answers_file: str, *,
                  image_folder: str = "", model_id: str = "", batch_size: int = 8, progress: bool = True,
                  annotations: Any = None, max_consecutive_errors: int = 64, skip_failed: bool = False) -> dict:
    """Answer `rows` (one chunk of the question file) into `answers_file`; returns the summary.

    `pipeline` is a `DualFocus` (anything with ``run([(query, image), ...]) -> [FocusResult]`` and
    a ``config``; a ``load()`` method, when it has one, is called once before the first question
    and its failure stops the run). Questions already answered are skipped; error records of an
    earlier run are removed and their questions asked again, unless `skip_failed` (then they count
    as answered). One bad question never stops the run; `max_consecutive_errors` failing in a row
    do (a wrong image folder, a model that fails on everything): the answers so far are kept.
    0 never stops.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    questions = [read_question(benchmark, row) for row in rows]
    started = time.perf_counter()
    with AnswerWriter(answers_file, retry_failed=not skip_failed) as writer:
        matched = match_records([(q.key, q.prompt) for q in questions], writer.existing)
        todo = [q for q, record in zip(questions, matched) if record is None]
        retried = sum(r is not None for r in match_records([(q.key, q.prompt) for q in todo], writer.dropped))
        if todo and hasattr(pipeline, "load"):
            pipeline.load()
        run = _Run(pipeline, benchmark, writer, image_folder, model_id, max_consecutive_errors, skip_failed)
        with _progress_bar(len(questions), len(questions) - len(todo), progress, benchmark.name) as run.bar:
            for start in range(0, len(todo), batch_size):
                run.answer(todo[start : start + batch_size])
        summary = summarize(benchmark, questions, read_answer_file(writer.path), annotations)
    elapsed = time.perf_counter() - started
    summary.update(answers_file=answers_file, new=run.new, skipped=len(questions) - len(todo), retried=retried,
                   resumed_from=len(writer.existing), repaired_bytes=writer.repaired, elapsed_s=round(elapsed, 3),
                   questions_per_s=round(run.new / elapsed, 3) if elapsed > 0 else None)
    return summary


@dataclass
class _Run:
    """One run's loop state: what answers a batch and where its records go."""

    pipeline: Any
    benchmark: Benchmark
    writer: AnswerWriter
    image_folder: str
    model_id: str
    max_consecutive_errors: int
    skip_failed: bool = False
    new: int = 0
    failing: int = 0
    bar: Any = None

    def answer(self, batch: list[Question]) -> None:
        """Answer a batch and append its records in question order (resume matches on them)."""
        records = self.records(batch)
        for record in records:
            self.writer.write(record)
            self.new += 1
            self.bar.update(1)
            self.failing = self.failing + 1 if "error" in record else 0
        if self.max_consecutive_errors and self.failing >= self.max_consecutive_errors:
            raise TooManyErrors(
                f"{self.failing} questions in a row failed, the last with: {records[-1]['error']}; stopping. "
                f"The answers so far are in {self.writer.path}: fix the cause, then rerun the same command "
                + ("without --skip-failed (it would keep these errors as answers)" if self.skip_failed else
                   "(answered questions are skipped, failed ones asked again)"))

    def records(self, batch: list[Question]) -> list[dict]:
        bench, config = self.benchmark, getattr(self.pipeline, "config", None)
        records: list[dict | None] = [None] * len(batch)
        items, owners = [], []
        for i, question in enumerate(batch):
            if question.error is not None:
                records[i] = error_record(bench, question, question.error, self.model_id, config)
                continue
            try:
                image = bench.load_image(question.query, self.image_folder)
            except ImageLoadError as e:
                records[i] = error_record(bench, question, f"image: {e}", self.model_id, config)
                continue
            items.append((question.query, image))
            owners.append(i)
        results = answer_batch(self.pipeline, items) if items else []
        for i, result in zip(owners, results):
            if isinstance(result, Exception):
                error = f"pipeline: {type(result).__name__}: {result}"
                records[i] = error_record(bench, batch[i], error, self.model_id, config)
            else:
                records[i] = answer_record(bench, batch[i], result, self.model_id)
        return records


def _progress_bar(total: int, done: int, enabled: bool, name: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, disable=not enabled, unit="q", desc=name, dynamic_ncols=True,
                file=sys.stderr)


# -- the summary ------------------------------------------------------------------------------------
ABLATIONS = ("macro", "micro", "final", "oracle")


def summarize(benchmark: Benchmark, questions: Sequence[Question], records: Sequence[Mapping],
              annotations: Any = None) -> dict:
    """Counts and, where gold answers are known, the accuracy (%) of each answer in the trace.

    macro: the first pass alone (plain LLaVA); micro: the micro answer where there is one, else the
    macro answer (what a micro-only system would say); final: the answer written; oracle: right
    when either the macro or the micro answer is right (the ceiling of any choice rule). Error
    records count as wrong. ``fallback_rate``: the share of answered questions without a micro pass.
    """
    matched = match_records([(q.key, q.prompt) for q in questions], records)
    answered, errors, fallbacks, ok, step_errors = 0, 0, 0, 0, 0
    choices: Counter = Counter()
    scores = {name: 0.0 for name in ABLATIONS}
    with_gold = 0
    for question, record in zip(questions, matched):
        if record is None:
            continue
        answered += 1
        meta = record.get("metadata") or {}
        if record.get("error"):
            errors += 1
        else:
            ok += 1
            fallbacks += meta.get("fallback") is not None and meta.get("mode") != "macro"
            step_errors += bool(meta.get("error"))  # a step failed but an answer stands (e.g. scoring)
            choices[str(meta.get("choice", "")).split(":")[0]] += 1
        if question.query is None:
            continue
        gold = benchmark.gold(question.row, question.query, annotations)
        if gold is None:
            continue
        with_gold += 1
        if record.get("error"):
            continue
        macro = meta.get("macro_answer")
        micro = meta.get("micro_answer") if meta.get("micro_answer") is not None else macro
        macro_s, micro_s = score_answer(macro, gold), score_answer(micro, gold)
        scores["macro"] += macro_s
        scores["micro"] += micro_s
        scores["final"] += score_answer(meta.get("answer"), gold)
        scores["oracle"] += max(macro_s, micro_s)
    return {
        "benchmark": benchmark.name,
        "questions": len(questions),
        "answered": answered,
        "errors": errors,
        "step_errors": step_errors,
        "fallbacks": fallbacks,
        "fallback_rate": round(fallbacks / ok, 4) if ok else None,
        "choices": dict(choices),
        "stray_records": len(records) - answered,  # in the file but not questions of this chunk
        "with_gold": with_gold,
        "accuracy": {name: round(100.0 * s / with_gold, 2) for name, s in scores.items()} if with_gold else None,
    }


def format_summary(summary: Mapping) -> str:
    """The summary as the lines printed at the end of a run."""
    lines = [
        f"{summary['benchmark']}: {summary['answered']}/{summary['questions']} questions answered "
        f"({summary.get('new', 0)} now, {summary.get('resumed_from', 0)} from an earlier run), "
        f"{summary['errors']} error(s)",
    ]
    if summary.get("retried"):
        lines.append(f"{summary['retried']} question(s) asked again after an error in an earlier run")
    if summary.get("step_errors"):
        lines.append(f"{summary['step_errors']} answer(s) kept the macro answer after a failed step "
                     "(metadata.error says which)")
    if summary.get("chunk"):
        lines.append(f"chunk {summary['chunk']}: {summary['answers_file']}")
    if summary["fallback_rate"] is not None:
        lines.append(f"fallback rate (no micro pass): {100 * summary['fallback_rate']:.1f}% "
                     f"({summary['fallbacks']} question(s))")
    if summary["choices"]:
        lines.append("choices: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["choices"].items())))
    if summary["accuracy"] is not None:
        acc = summary["accuracy"]
        lines.append(f"accuracy over {summary['with_gold']} question(s) with known answers: "
                     + ", ".join(f"{name} {acc[name]:.2f}%" for name in ABLATIONS))
    if summary.get("questions_per_s"):
        lines.append(f"{summary['questions_per_s']:.2f} questions/s over {summary['elapsed_s']:.1f} s")
    return "\n".join(lines)


# -- with a model ---------------------------------------------------------------------------------------
def run_eval(
    benchmark: str,
    model_path: str,
    question_file: str,
    answers_file: str,
    image_folder: str = "",
    model_base: str | None = None,
    conv_mode: str = "vicuna_v1",
    num_chunks: int | None = None,
    chunk_idx: int | None = None,
    temperature: float = 0.0,
    top_p: float | None = None,
    num_beams: int = 1,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    mode: str = "dualfocus",
    engine: str = "fast",
    selection: str = "original",
    device: str | None = None,
    dtype: str | None = None,
    annotation_file: str | None = None,
    summary_file: str | None = None,
    progress: bool = True,
    max_consecutive_errors: int = 64,
    skip_failed: bool = False,
    **benchmark_options,
) -> dict:
    """Answer one chunk of a benchmark's question file with DualFocus, appending to the answer file.

    The chunk is --chunk-idx of --num-chunks (LLaVA's contiguous split); without them it comes
    from the environment: SLURM_PROCID/SLURM_NTASKS, else RANK/WORLD_SIZE, else
    LOCAL_RANK/WORLD_SIZE, else the whole file. The device is --device, else cuda:SLURM_LOCALID or
    cuda:LOCAL_RANK (modulo the visible GPUs), else cuda, else cpu; "auto" spreads one model over
    all GPUs. A rerun resumes: questions already answered are skipped, questions with an error
    record are asked again (--skip-failed keeps them as answered), a half-written last line is cut
    off; one runner at a time may write an answer file. The model is loaded once, before the first
    question: a checkpoint that cannot load stops the run (exit status 1). A question whose image or
    row is bad, or that makes the pipeline fail, becomes an answer line with an "error" field and
    the run goes on, unless --max-consecutive-errors questions in a row fail (0: never stop). The summary (counts, errors,
    fallback rate, and with known answers the macro / micro / final / oracle accuracy read from
    the trace in each record's metadata) is printed and returned.
    """
    bench = get_benchmark(benchmark, **benchmark_options)
    num_chunks, chunk_idx = resolve_shard(num_chunks, chunk_idx)
    rows = read_chunk(bench, question_file, num_chunks, chunk_idx)
    annotations = bench.load_annotations(annotation_file) if annotation_file else None
    from dualfocus.mm_utils import get_model_name_from_path

    model_path = os.path.expanduser(model_path)
    model_id = get_model_name_from_path(model_path)
    pipeline = _LazyPipeline(bench, model_path, model_base, engine, device, dtype, dict(
        mode=mode, selection=selection, conv_mode=conv_mode, temperature=temperature, top_p=top_p,
        num_beams=num_beams, max_new_tokens=max_new_tokens))
    summary = run_benchmark(pipeline, bench, rows, answers_file, image_folder=image_folder, model_id=model_id,
                            batch_size=batch_size, progress=progress, annotations=annotations,
                            max_consecutive_errors=max_consecutive_errors, skip_failed=skip_failed)
    summary.update(chunk=f"{chunk_idx}/{num_chunks}", model_id=model_id, device=pipeline.device_used,
                   mode=mode, selection=selection, engine=engine)
    print(format_summary(summary), flush=True)
    if summary_file:
        from dualfocus.eval.scoring_common import write_json_atomic

        write_json_atomic(summary_file, summary)
    return summary


def read_chunk(bench: Benchmark, question_file: str, num_chunks: int, chunk_idx: int) -> list[dict]:
    """The rows of one chunk of the question file, as asked (MMBench --all-rounds: every rotation)."""
    if not os.path.isfile(os.path.expanduser(question_file)):
        raise EvalRunError(f"no question file {question_file}; check --question-file")
    return bench.expand(list(get_chunk(bench.read_questions(question_file), num_chunks, chunk_idx)))


class _LazyPipeline:
    """A DualFocus pipeline whose model is loaded on first use: an empty or finished chunk loads nothing."""

    def __init__(self, benchmark: Benchmark, model_path, model_base, engine, device, dtype, config: dict):
        from dualfocus.focus.pipeline import FocusConfig

        if engine not in ("fast", "reference"):
            raise ValueError(f"unknown engine {engine!r}; choose fast or reference")
        self.config = FocusConfig(**config)  # validated now, before any model is loaded
        self.benchmark, self.model_path, self.model_base = benchmark, model_path, model_base
        self.engine_name, self.device, self.dtype = engine, device, dtype
        self.device_used = None
        self._pipeline = None

    def load(self) -> None:
        """Load the model once; any failure is the run's, not a question's (`ModelLoadError`)."""
        if self._pipeline is not None:
            return
        try:
            self._pipeline = self._load()
        except Exception as e:  # noqa: BLE001 - every cause is fatal here; re-raised with it chained
            where = self.model_path + (f" (base {self.model_base})" if self.model_base else "")
            raise ModelLoadError(f"cannot load the checkpoint {where}: {type(e).__name__}: {one_line(e)}; "
                                 "check --model-path / --model-base, then rerun") from e

    def run(self, items):
        self.load()
        return self._pipeline.run(items)

    def _load(self):
        from dualfocus.focus.pipeline import DualFocus
        from dualfocus.model.builder import load_pretrained_model

        device = resolve_device(self.device)
        device_map = "auto" if device == "auto" else None
        tokenizer, model, image_processor, _ = load_pretrained_model(
            self.model_path, self.model_base, None, device="cuda" if device == "auto" else device,
            device_map=device_map, torch_dtype=self.dtype)
        self.device_used = device
        engine = build_engine(self.engine_name, model, tokenizer, image_processor)
        return DualFocus(engine, self.benchmark.protocol, self.config)


def one_line(error: BaseException, limit: int = 400) -> str:
    """An exception's message on one line (transformers' errors span several), at most `limit` chars."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the CLIs ---------------------------------------------------------------------------------------------
def build_parser(benchmark: str | None, description: str | None = None):
    """LLaVA's flags (names and spelling kept), plus DualFocus's; MMBench adds its three."""
    import argparse

    parser = argparse.ArgumentParser(description=description or run_eval.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if benchmark is None:
        parser.add_argument("--benchmark", default="vqa", choices=BENCHMARK_NAMES,
                            help="question-file format and DualFocus protocol (default: vqa, a generic LLaVA jsonl)")
    add = parser.add_argument
    add("--model-path", required=True, help="checkpoint directory (or hub id)")
    add("--model-base", default=None, help="base LLM for LoRA / projector-only checkpoints")
    add("--image-folder", default="", help="folder the question file's image paths are relative to")
    add("--question-file", required=True)
    add("--answers-file", required=True, help="answer jsonl; appended to and resumed")
    add("--conv-mode", default="vicuna_v1")
    add("--num-chunks", type=int, default=None, help="default: from the environment, else 1")
    add("--chunk-idx", type=int, default=None, help="default: from the environment, else 0")
    add("--temperature", type=float, default=0.0, help="0: greedy (as the released scripts)")
    add("--top_p", type=float, default=None)
    add("--num_beams", type=int, default=1, help="only 1 (beam search is not supported)")
    add("--max_new_tokens", type=int, default=128, help="per pass")
    add("--batch-size", type=int, default=8, help="questions per pipeline call")
    add("--mode", default="dualfocus", choices=("dualfocus", "macro"), help="macro: plain LLaVA, one pass")
    add("--engine", default="fast", choices=ENGINE_NAMES)
    add("--selection", default="original", choices=("original", "candidate", "macro", "micro"))
    add("--device", default=None, help="cpu, cuda, cuda:N or auto; default: from the local rank")
    add("--dtype", default=None, choices=("fp16", "bf16", "fp32"), help="default: fp16 on GPU, fp32 on CPU")
    add("--annotation-file", default=None, help="gold answers for the summary's accuracies (optional)")
    add("--summary-file", default=None, help="also write the summary here as JSON")
    add("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add("--max-consecutive-errors", type=int, default=64,
        help="stop when this many questions in a row fail (answers kept; a rerun asks them again); 0: never")
    add("--skip-failed", action="store_true",
        help="on resume, keep earlier error records as answers instead of asking those questions again")
    if benchmark == "mmbench":
        add("--all-rounds", action="store_true", help="ask every rotation of the options (round_id = k)")
        add("--single-pred-prompt", action=argparse.BooleanOptionalAction, default=True,
            help="append the answer-with-the-letter instruction (default, as DualFocus's original always "
                 "did and LLaVA's scripts always ask)")
        add("--lang", default="en", choices=("en", "cn"))
    return parser


def main(benchmark: str | None, argv: Sequence[str] | None = None) -> dict:
    """Parse a CLI's arguments and call `run_eval`."""
    parser = build_parser(benchmark)
    args = vars(parser.parse_args(argv))
    name = args.pop("benchmark", benchmark)
    try:
        return run_eval(name, **args)
    except (EvalRunError, OSError, ValueError) as e:  # a cause the user fixes: one line, no traceback
        raise SystemExit(f"{parser.prog}: error: {_cli_message(e)}") from None


def _cli_message(error: Exception) -> str:
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"no such file: {error.filename}"
    return one_line(error, limit=2000)
