"""V*Bench (Wu & Xie, "V*: Guided Visual Search as a Core Mechanism in Multimodal LLMs", 2023): 191
multiple-choice questions about small details in high-resolution images, in two categories,
``direct_attributes`` (115 questions, 4 options) and ``relative_position`` (76, 2 options).

The public release (Hugging Face dataset ``craigwu/vstar_bench``, test split) ships

- ``test_questions.jsonl``: one line per question, the file we read:
  ``{"image": "direct_attributes/sa_4690.jpg", "text": "What is the material of the glove?\\n(A) rubber
  \\n(B) cotton\\n(C) kevlar\\n(D) leather\\nAnswer with the option's letter from the given choices
  directly.", "category": "direct_attributes", "question_id": ..., "label": "A"}``; ``image`` is
  relative to the dataset folder (our image folder), ``label`` the right letter (options shuffled);
- ``direct_attributes/`` and ``relative_position/``: each image ``<name>.jpg`` with ``<name>.json``
  (``target_object`` list, ``bbox`` list of [x, y, w, h], ``question``, ``options`` with the right one
  first), which the official script (``vstar_bench_eval.py`` in ``penghao-wu/vstar``) reads. We do
  not need them: the jsonl carries the same questions with their letters.

Official scoring (``vstar_bench_eval.py``): a question is right when the chosen option is the right
one; it prints the accuracy per category and the overall accuracy as the mean over all questions
(``np.mean(all_acc)``: pooled, not the mean of the two categories). The official script chooses the
option by ranking the options' likelihoods (the lowest mean token loss of the option as the answer
turn); DualFocus answers with a letter, as the jsonl's instruction asks, and `SeedProtocol`'s rules
read it. Scoring: ``python -m dualfocus.benchmarks.vstar --question-file test_questions.jsonl
--result-file answers/merge.jsonl [--output-json scores.json]``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from dualfocus.benchmarks import records
from dualfocus.benchmarks import scoring as sc
from dualfocus.benchmarks.base import Benchmark, Gold, Layout, read_question_lines, register
from dualfocus.focus.protocols import OPTION_INSTRUCTION, FocusQuery, Protocol

CATEGORIES = ("direct_attributes", "relative_position")
_OPTION = re.compile(r"\(([A-Z])\) ?(.*)", re.DOTALL)


class VStarProtocol(Protocol):
    """``text`` = "question\\n(A) ...\\n(B) ...[\\nAnswer with the option's letter ...]"; SEED's wording."""

    name = "vstar"

    def from_record(self, record: Mapping) -> FocusQuery:
        qid, text = records.question_text(record, "text", self.name)
        lines = text.split("\n")
        options, texts, instruction = records.options_and_instruction(lines[1:], self.name, qid, _OPTION, "({}) ...")
        return FocusQuery(benchmark=self.name, question_id=qid, question=lines[0], text=text, options=options,
                          option_texts=texts, instruction=instruction, prompt=text,
                          image=record.get("image"), extra={"category": record.get("category")})


@register
class VStarBenchmark(Benchmark):
    name = "vstar"
    protocol_class = VStarProtocol
    layout = Layout("vstar_bench", "test_questions", runner=("dualfocus.eval.model_vqa_loader", "--benchmark", "vstar"),
                    demo_split="test_questions", demo_images="vstar_bench")

    def gold(self, row: Mapping, query: FocusQuery, annotations: Any = None) -> Gold | None:
        label = row.get("label")
        return self._as_gold(label, query) if isinstance(label, str) and label else super().gold(row, query)

    def answer_fields(self, row: Mapping, query: FocusQuery | None) -> dict:
        return {"category": row.get("category")}

    def typed_record(self, question: str, options) -> dict:
        shown = "\n".join(f"({chr(ord('A') + i)}) {o}" for i, o in enumerate(records.require_options(self.name, options)))
        return {"question_id": "cli", "text": f"{question}\n{shown}\n{OPTION_INSTRUCTION}"}

    def score_run(self, result_file: str, question_file: str, annotation_file: str | None, upload: str) -> dict:
        return main(["--question-file", question_file, "--result-file", result_file])


def score(questions: list[dict], results: dict[str, dict]) -> dict:
    """Accuracy per category and overall (pooled over questions, as the official script) of
    `results` (question id -> answer record); a question without a record, or with an error, is wrong."""
    per_category = {name: sc.CategoryScore(name) for name in CATEGORIES}
    unanswered = errors = 0
    for q in questions:
        record = results.get(sc.qid_key(q["question_id"]))
        unanswered += record is None
        errors += record is not None and sc.is_error(record)
        right = float(record is not None and sc.answer_text(record) == q["label"])
        per_category.setdefault(q["category"], sc.CategoryScore(q["category"])).add(right)
    rows = [row for row in per_category.values() if row.count]
    overall = sc.CategoryScore("overall", sum(r.count for r in rows), sum(r.score for r in rows))
    return {"benchmark": "vstar", "overall_accuracy": overall.accuracy, "n_questions": overall.count,
            "n_unanswered": unanswered, "n_errors": errors, "categories": [r.to_dict() for r in rows]}


def report(result: dict) -> str:
    """The official script's lines (category, then overall accuracy), then a table."""
    lines = [f"{row['name']}: {row['accuracy']:.2f}%" for row in result["categories"]]
    lines.append(f"Overall accuracy: {result['overall_accuracy']:.2f}% ({result['n_questions']} questions)")
    if result["n_unanswered"]:
        lines.append(f"note: {result['n_unanswered']} question(s) have no answer record and count as wrong")
    if result["n_errors"]:
        lines.append(f"note: {result['n_errors']} error record(s) count as wrong")
    rows = [sc.CategoryScore.from_dict(r) for r in result["categories"]]
    return "\n".join([*lines, "", sc.format_table("Per category", rows)])


@sc.cli_errors("vstar")
def main(argv: list[str] | None = None) -> dict:
    """Score V*Bench answers per category and overall, as vstar_bench_eval.py does."""
    flags = {"--question-file": "the release's test_questions.jsonl", "--result-file": "merged answer jsonl"}
    args = sc.scorer_parser(main.__doc__, flags).parse_args(argv)
    questions = records_of(args.question_file)
    answers = sc.read_jsonl(args.result_file)
    sc.check_unique(answers, lambda r: sc.qid_key(r["question_id"]))
    result = score(questions, {sc.qid_key(r["question_id"]): r for r in answers})
    result.update(question_file=args.question_file, result_file=args.result_file)
    print(report(result))
    out = args.output_json or sc.default_output_json(args.result_file)
    sc.write_json_atomic(out, result)
    print(f"scores written to {out}")
    return result


def records_of(question_file: str) -> list[dict]:
    """The question file's rows; each must name its category and label (the scorer's gold)."""
    rows = read_question_lines(os.path.expanduser(question_file))
    bad = [row.get("question_id") for row in rows if not {"question_id", "category", "label"} <= set(row)]
    if bad:
        raise sc.ScoreInputError(f"{question_file}: {len(bad)} row(s) without question_id/category/label: {bad[:10]}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
