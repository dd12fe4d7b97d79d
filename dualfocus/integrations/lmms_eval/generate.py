"""`generate_until` for lmms-eval: the DualFocus loop over every request lmms-eval hands over.

Requests are grouped by what changes the pipeline (the task's generation settings and the
protocol), and each group runs through `dualfocus.focus.pipeline.DualFocus` in batches of
``batch_size`` questions on one engine, so the fast engine shares prefixes across a batch. A
request that cannot be asked (bad document, no image) or that fails in the pipeline answers ""
and its trace line carries the error; the other requests go on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from PIL import Image

from dualfocus.engine.base import Engine
from dualfocus.eval.runner import answer_batch
from dualfocus.files import one_line
from dualfocus.focus.pipeline import DualFocus, FocusConfig
from dualfocus.focus.protocols import FocusQuery, Protocol, RecordError
from dualfocus.integrations.lmms_eval.queries import GENERIC_FREE, GENERIC_MC, PROTOCOL_KEY, request_query
from dualfocus.integrations.lmms_eval.trace import TraceWriter, trace_record
from dualfocus.mm_utils import ImageLoadError


@dataclass
class Ask:
    """One generate_until request, read: where it comes from and what the pipeline will be asked."""

    task: str
    split: str
    doc_id: int
    config: FocusConfig
    until: tuple[str, ...] = ()
    protocol_name: str | None = None
    query: FocusQuery | None = None
    protocol: Protocol | None = None
    image: Image.Image | None = None
    error: str | None = None
    answer: str = ""
    trace: dict = field(default_factory=dict)


def focus_config(base: FocusConfig, gen_kwargs: Mapping) -> FocusConfig:
    """The base config with the task's answer length and sampling (lmms-eval's generation kwargs).

    As lmms-eval's llava model: a temperature above 0 samples, 0 is greedy (``do_sample`` is not read).
    """
    temperature = float(gen_kwargs.get("temperature") or 0)
    top_p = gen_kwargs.get("top_p")
    return dataclasses.replace(
        base,
        max_new_tokens=int(gen_kwargs.get("max_new_tokens") or base.max_new_tokens),
        temperature=max(temperature, 0.0),
        top_p=float(top_p) if temperature > 0 and top_p is not None else None,
        num_beams=int(gen_kwargs.get("num_beams") or 1),
    )


def read_request(args: Sequence, doc_of: Callable, base: FocusConfig) -> Ask:
    """lmms-eval's ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)`` -> an `Ask`."""
    context, gen_kwargs, doc_to_visual, doc_id, task, split = args
    gen_kwargs = dict(gen_kwargs or {})
    until = gen_kwargs.get("until") or ()
    ask = Ask(task, split, doc_id, base, tuple([until] if isinstance(until, str) else until))
    try:
        ask.config = focus_config(base, gen_kwargs)
        doc = doc_of(task, split, doc_id)
        ask.query, ask.protocol = request_query(context, gen_kwargs, doc, question_id=f"{task}/{doc_id}")
        ask.protocol_name = gen_kwargs.get(PROTOCOL_KEY) or (GENERIC_MC if ask.query.options else GENERIC_FREE)
        ask.image = first_image(doc_to_visual(doc), task, doc_id)
    except (RecordError, ImageLoadError, ValueError, OSError) as e:
        ask.error = f"{type(e).__name__}: {one_line(e)}"
    return ask


def first_image(visuals, task: str, doc_id) -> Image.Image:
    """The document's image as RGB; DualFocus asks about one image (the first of several)."""
    images = [v for v in (visuals or []) if isinstance(v, Image.Image)]
    if not images:
        raise ImageLoadError(f"{task} doc {doc_id}: doc_to_visual gave no image; DualFocus needs one per question")
    return images[0].convert("RGB")


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """The text up to the first of the task's stop strings (lmms-eval's `until`)."""
    for stop in until:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text


def run_asks(asks: Sequence[Ask], engine: Engine, batch_size: int, progress: bool = False) -> None:
    """Answer every readable ask in place: grouped by (config, protocol), batched, traced."""
    from tqdm import tqdm

    groups: dict[tuple, list[Ask]] = {}
    for ask in asks:
        if ask.error is None:
            groups.setdefault((ask.config, ask.protocol_name), []).append(ask)
    bar = tqdm(total=sum(map(len, groups.values())), disable=not progress, desc="DualFocus", unit="q")
    for group in groups.values():
        pipeline = DualFocus(engine, group[0].protocol, group[0].config)
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            results = answer_batch(pipeline, [(a.query, a.image) for a in batch])
            for ask, result in zip(batch, results):
                settle(ask, result)
            bar.update(len(batch))
    bar.close()


def settle(ask: Ask, result) -> None:
    """Record one pipeline result (a FocusResult, or the exception it raised alone) on its ask."""
    if isinstance(result, Exception):
        ask.error = f"{type(result).__name__}: {one_line(result)}"
        return
    ask.answer = cut_at_stop(result.text, ask.until)
    ask.trace = trace_record(ask.task, ask.split, ask.doc_id, ask.protocol_name, ask.query, result)


def generate_until(requests: Sequence, doc_of: Callable, engine: Engine, base: FocusConfig,
                   batch_size: int, writer: TraceWriter, progress: bool = False) -> list[str]:
    """lmms-eval's verb: one answer text per request, in order; traces written to `writer`."""
    asks = [read_request(req.args, doc_of, base) for req in requests]
    run_asks(asks, engine, batch_size, progress)
    for ask in asks:
        if ask.error is not None:
            ask.trace = trace_record(ask.task, ask.split, ask.doc_id, ask.protocol_name, ask.query,
                                     error=ask.error)
    writer.write([ask.trace for ask in asks])
    return [ask.answer for ask in asks]
