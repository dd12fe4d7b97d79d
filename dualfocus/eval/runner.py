"""Run DualFocus over a benchmark's question file: shard, resume, batch, record errors, summarise.

The loop, and `run_eval` (the loop with a model loaded from a checkpoint; the CLIs call it). Its
parts live beside it, one job each: `shards` (which chunk, which device), `answers` (the answer
file: keys, reading, the locked writer, record building), `summary` (counts and accuracies),
`lazy_model` (the model, loaded on first use), `config` (the options), `cli` (the flags).

- `run_benchmark`: the loop over batches with a tqdm progress bar; a question that fails (its
  image, its row, or the pipeline on it) becomes an answer record with an `error` field; a model
  that cannot load stops the run before the first question.

Resume: a rerun with the same answer file skips the questions already answered and asks again
those that have an error record (their error lines are removed first, atomically, so a question
never counts twice; `skip_failed` keeps them as answered). Records are matched to questions per
(question id, round id), by prompt where an id repeats (TextVQA: one id per image), so nothing
finished is asked twice and no line is duplicated.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dualfocus.benchmarks import Benchmark, ImageLoadError, RecordError, get_benchmark
from dualfocus.eval.answers import (  # noqa: F401 - re-exported: the runner's public names
    AnswerWriter,
    answer_record,
    match_records,
    question_key,
    read_answer_file,
    repair_last_line,
)
from dualfocus.eval.config import split_options
from dualfocus.eval.lazy_model import LazyPipeline, ModelLoadError  # noqa: F401 - re-exported
from dualfocus.eval.shards import (  # noqa: F401 - re-exported: the runner's public names
    get_chunk,
    resolve_shard,
    split_list,
)
from dualfocus.eval.summary import format_summary, summarize
from dualfocus.files import EvalRunError

log = logging.getLogger(__name__)


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
    question = Question(row, question_key(qid, benchmark.round_id(row)))
    try:
        question.query = benchmark.to_query(row)
    except RecordError as e:
        question.error = f"bad record: {e}"
    question.prompt = question.query.prompt if question.query is not None else benchmark.fallback_prompt(row)
    return question


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
        """One record per question, in order: answered in one pipeline call where the rows and images
        can be read, an error record where they cannot or where the pipeline failed on it."""
        records: list[dict | None] = [None] * len(batch)
        items, owners = [], []
        for i, question in enumerate(batch):
            if question.error is not None:
                records[i] = self.error_record(question, question.error)
                continue
            try:
                items.append((question.query, self.benchmark.load_image(question.query, self.image_folder)))
                owners.append(i)
            except ImageLoadError as e:
                records[i] = self.error_record(question, f"image: {e}")
        results = answer_batch(self.pipeline, items) if items else []
        for i, result in zip(owners, results):
            if isinstance(result, Exception):
                records[i] = self.error_record(batch[i], f"pipeline: {type(result).__name__}: {result}")
            else:
                records[i] = answer_record(self.benchmark, batch[i].row, batch[i].query, model_id=self.model_id,
                                           trace=result.metadata(), text=result.text)
        return records

    def error_record(self, question: Question, error: str) -> dict:
        """A question that could not be answered: LLaVA's fields, `error`, empty text."""
        config = getattr(self.pipeline, "config", None)
        trace = {"error": error, "mode": getattr(config, "mode", None), "selection": getattr(config, "selection", None)}
        return answer_record(self.benchmark, question.row, question.query, model_id=self.model_id, trace=trace,
                             error=error)


def _progress_bar(total: int, done: int, enabled: bool, name: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, disable=not enabled, unit="q", desc=name, dynamic_ncols=True,
                file=sys.stderr)


# -- with a model ---------------------------------------------------------------------------------------
def run_eval(benchmark: str, *args, **options) -> dict:
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
    the run goes on, unless --max-consecutive-errors questions in a row fail (0: never stop). The
    summary (counts, errors, fallback rate, and with known answers the macro / micro / final /
    oracle accuracy read from the trace in each record's metadata) is printed and returned.

    Arguments: `EvalConfig`'s fields (model_path, question_file, answers_file may be positional),
    then the benchmark's own options (MMBench: all_rounds, single_pred_prompt, lang).
    """
    config, benchmark_options = split_options(args, options)  # EvalConfig's fields; the rest: the benchmark's
    bench = get_benchmark(benchmark, **benchmark_options)
    num_chunks, chunk_idx = resolve_shard(config.num_chunks, config.chunk_idx)
    rows = read_chunk(bench, config.question_file, num_chunks, chunk_idx)
    annotations = bench.load_annotations(config.annotation_file) if config.annotation_file else None
    from dualfocus.mm_utils import get_model_name_from_path

    pipeline = LazyPipeline(bench.protocol, config)
    model_id = get_model_name_from_path(pipeline.model_path)
    summary = run_benchmark(pipeline, bench, rows, config.answers_file, image_folder=config.image_folder,
                            model_id=model_id, batch_size=config.batch_size, progress=config.progress,
                            annotations=annotations, max_consecutive_errors=config.max_consecutive_errors,
                            skip_failed=config.skip_failed)
    summary.update(chunk=f"{chunk_idx}/{num_chunks}", model_id=model_id, device=pipeline.device_used,
                   mode=config.mode, selection=config.selection, engine=config.engine)
    print(format_summary(summary), flush=True)
    if config.summary_file:
        from dualfocus.benchmarks.scoring import write_json_atomic

        write_json_atomic(config.summary_file, summary)
    return summary


def read_chunk(bench: Benchmark, question_file: str, num_chunks: int, chunk_idx: int) -> list[dict]:
    """The rows of one chunk of the question file, as asked (MMBench --all-rounds: every rotation)."""
    if not os.path.isfile(os.path.expanduser(question_file)):
        raise EvalRunError(f"no question file {question_file}; check --question-file")
    return bench.expand(list(get_chunk(bench.read_questions(question_file), num_chunks, chunk_idx)))
