"""What every benchmark module builds on: the `Benchmark` adapter, its data `Layout`, the registry's
`register`, and the record-reading helpers its protocol uses.

A benchmark module (``seed.py``, ``mmbench.py``, ...) is the one home of one benchmark. It defines,
next to each other,

- its `Protocol` subclass (`dualfocus.focus.protocols`): how a record becomes a `FocusQuery`, and the
  few prompt wordings it overrides;
- its `Benchmark` subclass, registered with `@register`, which holds that protocol
  (``protocol_class``) and knows the files: reading the question file into rows, loading images,
  the answer record's extra fields, gold answers, the data layout the launch scripts use
  (``layout``), and the official scoring / submission output (``score_run``);
- its scorer's functions and the LLaVA-named CLI's ``main``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from dualfocus.focus.protocols import FocusQuery, Protocol, RecordError, option_letter
from dualfocus.mm_utils import ImageLoadError, load_image

# A gold answer: an option letter (multiple choice) or a list of accepted answers (free text).
Gold = str | list[str]

REGISTRY: dict[str, type[Benchmark]] = {}


def register(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator: make a `Benchmark` subclass available by its ``name``."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"benchmark name {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Layout:
    """Where a benchmark's files lie in LLaVA's playground layout (``$DATA_ROOT/<folder>/...``).

    ``images``: the image folder under ``folder`` ("" the folder itself; None: the images travel
    in the question file). ``annotations``: candidate annotation files under ``folder``, the first
    present wins. ``runner``: the ``python -m`` module and its fixed flags. ``whole_split``: a larger
    file LLaVA ships of which ``split`` is a subset (named when ``split`` is missing).
    ``demo_split``: the question file's stem under ``playground/demo/<folder>`` (None: no demo data);
    ``demo_images``: the folder under ``playground/demo`` its image paths are relative to.
    """

    folder: str
    split: str
    suffix: str = ".jsonl"
    images: str | None = ""
    annotations: tuple[str, ...] = ()
    runner: tuple[str, ...] = ("dualfocus.eval.model_vqa_loader",)
    whole_split: str | None = None
    demo_split: str | None = None
    demo_images: str = ""

    def annotation_file(self, bench_dir: str) -> str | None:
        """The first candidate present under ``bench_dir``; else the first named (its scorer says it
        is missing); None when the benchmark needs none."""
        paths = [os.path.join(bench_dir, name) for name in self.annotations]
        return next((p for p in paths if os.path.isfile(p)), paths[0] if paths else None)


class Benchmark:
    """A jsonl question file with `question_id`, `image` (a path under the image folder), `text`.

    Subclasses set ``name``, ``protocol_class`` and ``layout`` and override what their format does
    differently. ``protocol_options`` go to the protocol (MMBench: ``single_pred_prompt``, ``lang``).
    """

    name = ""
    protocol_class: type[Protocol] = Protocol
    layout: Layout | None = None  # None: no launch script (e.g. the generic "vqa" file)

    def __init__(self, **protocol_options):
        self.protocol: Protocol = self.protocol_class(**protocol_options)

    # -- reading --------------------------------------------------------------------------------
    def read_questions(self, path: str) -> list[dict]:
        """The rows of a jsonl question file, in file order (see `read_question_lines`)."""
        return read_question_lines(path)

    def expand(self, rows: list[dict]) -> list[dict]:
        """Rows as asked (MMBench --all-rounds: one per rotation); applied after sharding."""
        return rows

    # -- one row ---------------------------------------------------------------------------------
    def question_id(self, row: Mapping) -> Any:
        return row.get("question_id")

    def round_id(self, row: Mapping) -> int:
        return 0

    def to_query(self, row: Mapping) -> FocusQuery:
        """The protocol's reading of the row; raises `RecordError` for a row it cannot read."""
        if UNREADABLE in row:
            raise RecordError(row[UNREADABLE])
        query = self.protocol.from_record(row)
        if query.image is not None and not isinstance(query.image, str):
            raise RecordError(f"{self.name} record {query.question_id!r}: 'image' is "
                              f"{type(query.image).__name__} {query.image!r:.40}, expected a file name")
        return query

    def fallback_prompt(self, row: Mapping) -> str:
        """The answer record's `prompt` for a row the protocol could not read (scorers match on it)."""
        text = row.get("text")
        return text if isinstance(text, str) else ""

    def load_image(self, query: FocusQuery, image_folder: str = "") -> Image.Image:
        """The question's image, RGB; `ImageLoadError` naming the file (or row) when it cannot be read."""
        if not query.image:
            raise ImageLoadError(f"{self.name} record {query.question_id!r}: no image in the record")
        if query.image_base64:
            return load_image(query.image, from_base64=True, record_id=query.question_id)
        return load_image(os.path.join(os.path.expanduser(image_folder), query.image))

    def answer_fields(self, row: Mapping, query: FocusQuery | None) -> dict:
        """Top-level answer-record fields besides LLaVA's six (MMBench: round_id, options, option_char)."""
        return {}

    # -- gold answers (for the run summary only) -----------------------------------------------
    def load_annotations(self, path: str) -> Any:
        """An index of the benchmark's annotation file, handed back to `gold`."""
        raise ValueError(f"{self.name}: no annotation-file format is known for this benchmark")

    def gold(self, row: Mapping, query: FocusQuery, annotations: Any = None) -> Gold | None:
        """The right answer, when known: the row's `answers` list or `answer`, else the annotations."""
        answers = row.get("answers")
        if isinstance(answers, list) and answers:
            return [str(a) for a in answers]
        answer = row.get("answer")
        if isinstance(answer, str) and answer:
            return self._as_gold(answer, query)
        return None

    def _as_gold(self, answer: str, query: FocusQuery) -> Gold:
        """An answer text -> a letter for multiple choice (by letter or option text), else [text].
        A text that names no option stays as it is: every answer scores 0 against it."""
        if not self.protocol.multiple_choice:
            return [answer]
        return option_letter(answer, query.letters, query.option_texts) or answer

    # -- a question typed by a user (serve.cli, the web page) -----------------------------------
    typed_questions = True  # False: a record needs more than a question and options (MMBench)

    def typed_record(self, question: str, options: Sequence[str] | None) -> dict:
        """The record this benchmark's file would hold for a typed question (free form here)."""
        if options:
            multiple = tuple(n for n, cls in REGISTRY.items() if cls.typed_questions and cls.protocol_class.multiple_choice)
            raise ValueError(f"protocol {self.name!r} is free-form: --options needs --protocol "
                             + " or ".join(multiple))
        return {"question_id": "cli", "text": question}

    # -- official scoring ------------------------------------------------------------------------
    def score_run(self, result_file: str, question_file: str, annotation_file: str | None, upload: str) -> dict:
        """Score merged answers with the benchmark's official rule and write its submission file
        (named from ``upload``, a path without suffix); returns the scores."""
        raise ValueError(f"{self.name}: no official scorer; the run summary holds the accuracy "
                         "when the question file carries the answers")


# A question-file line that is not a JSON object becomes a row with only an id and this field: the
# runner writes an error record for it, the merge expects that id, the other lines are answered.
UNREADABLE = "_unreadable"
_QID_IN_TEXT = re.compile(r'"question_id"\s*:\s*(?:"((?:[^"\\]|\\.)*)"|(-?\d+))')


def read_question_lines(path: str) -> list[dict]:
    """The rows of a jsonl question file, in file order; a line that is not a JSON object becomes
    ``{"question_id": <its id, read from the text if it can be, else "line N">, UNREADABLE: why}``."""
    rows = []
    with open(os.path.expanduser(path), encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                rows.append(_parse_question_line(path, lineno, line))
    return rows


def _parse_question_line(path: str, lineno: int, line: str) -> dict:
    try:
        row = json.loads(line)
        why = None if isinstance(row, dict) else f"a question is a JSON object, got {type(row).__name__}"
    except json.JSONDecodeError as e:
        why = f"not a JSON line ({e.msg})"
    if why is None:
        return row
    found = _QID_IN_TEXT.search(line)
    qid = (found.group(1) if found.group(1) is not None else int(found.group(2))) if found else f"line {lineno}"
    return {"question_id": qid, UNREADABLE: f"{path}:{lineno}: {why}"}


def score_answer(answer: str | None, gold: Gold) -> float:
    """1/0 for a letter; for free text the VQA accuracy with 10 human answers, else exact match
    (after the VQA answer normalisation) against any accepted answer."""
    if answer is None:
        return 0.0
    if isinstance(gold, str):
        return float(answer == gold)
    from dualfocus.benchmarks.vqa_accuracy import normalize_answer, vqa_accuracy

    if len(gold) == 10:
        return vqa_accuracy(answer, gold)
    return float(normalize_answer(answer) in {normalize_answer(g) for g in gold})


def jsonable(value):
    """A value json.dumps writes as strict JSON: NaN -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        return jsonable(value.item())  # numpy / torch scalars
    return value
