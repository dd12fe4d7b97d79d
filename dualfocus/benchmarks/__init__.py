"""Benchmark adapters: what the runner needs to know about one benchmark's files.

An adapter reads the question file in its official / LLaVA format into rows (plain dicts), turns
a row into a `FocusQuery` through the benchmark's protocol, loads the row's image (a path under
the image folder, or base64 in the row), names the fields an answer record carries besides
LLaVA's six, and, when the answers are known (in the row, or in an annotation file), gives the gold
answer for the run summary. Everything the DualFocus method does differently per benchmark lives in
`dualfocus.focus.protocols`, not here.

    get_benchmark("mmbench", all_rounds=True, single_pred_prompt=True, lang="en")
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from dualfocus.focus.protocols import FocusQuery, Protocol, RecordError, get_protocol, is_empty_cell
from dualfocus.mm_utils import ImageLoadError, load_image

__all__ = [
    "BENCHMARK_NAMES", "Benchmark", "Gold", "ImageLoadError", "RecordError", "get_benchmark", "jsonable",
    "option_texts", "score_answer",
]

BENCHMARK_NAMES = ("seed", "mmbench", "gqa", "textvqa", "vqa")

# A gold answer: an option letter (multiple choice) or a list of accepted answers (free text).
Gold = str | list[str]


class Benchmark:
    """A jsonl question file with `question_id`, `image` (a path under the image folder), `text`.

    Subclasses override what their format does differently. ``protocol_options`` go to
    `get_protocol` (MMBench: ``single_pred_prompt``, ``lang``).
    """

    name = "vqa"

    def __init__(self, **protocol_options):
        self.protocol: Protocol = get_protocol(self.name, **protocol_options)

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
        """An answer text -> a letter for multiple choice (by letter or option text), else [text]."""
        if not self.protocol.multiple_choice:
            return [answer]
        if answer.strip() in query.letters:
            return answer.strip()
        folded = answer.strip().rstrip(".").casefold()
        for letter, option in zip(query.letters, query.option_texts):
            if option.strip().rstrip(".").casefold() == folded:
                return letter
        return answer  # matches no letter: every answer scores 0 against it


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
    from dualfocus.eval.textvqa_eval import normalize_answer, vqa_accuracy

    if len(gold) == 10:
        return vqa_accuracy(answer, gold)
    return float(normalize_answer(answer) in {normalize_answer(g) for g in gold})


def get_benchmark(name: str, **options) -> Benchmark:
    """The adapter for "seed", "mmbench", "gqa", "textvqa" or "vqa" (a generic LLaVA jsonl).

    ``options``: MMBench's ``all_rounds``, ``single_pred_prompt``, ``lang``.
    """
    from dualfocus.benchmarks.gqa import GQABenchmark
    from dualfocus.benchmarks.mmbench import MMBenchBenchmark
    from dualfocus.benchmarks.seed import SeedBenchmark
    from dualfocus.benchmarks.textvqa import TextVQABenchmark
    from dualfocus.benchmarks.vqa import VQABenchmark

    classes = {c.name: c for c in (SeedBenchmark, MMBenchBenchmark, GQABenchmark, TextVQABenchmark, VQABenchmark)}
    if name not in classes:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {tuple(classes)}")
    return classes[name](**options)


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


def option_texts(row: Mapping, letters: Sequence[str] = ("A", "B", "C", "D")) -> list[str]:
    """An MMBench-style row's option cells up to the first empty one."""
    out = []
    for letter in letters:
        if is_empty_cell(row.get(letter)):
            break
        out.append(str(row[letter]))
    return out
