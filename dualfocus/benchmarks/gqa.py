"""GQA as multiple choice, DualFocus's version: ``llava_gqa_testdev_balanced_mcq.jsonl``, its gold
answers (GQA's ``testdev_balanced_questions.json``) and the converter to GQA's prediction file with
GQA eval.py's accuracy (``convert_gqa_for_eval``).

Rows hold `question_id`, `image` (under ``gqa/data/images``) and `question` = "question\\nA. ...";
the answer record's `text` is the chosen option's text (as the original writes it for GQA's scorer).

Conversion (``python -m dualfocus.eval.convert_gqa_for_eval --src answers/merge.jsonl --dst
data/testdev_balanced_predictions.json --questions llava_gqa_testdev_balanced_mcq.jsonl
[--gqa-annotations data/testdev_balanced_questions.json] [--output-json scores.json]``): the question
record holds the options, either as a list (`options` / `choices`) or as 'A. text' lines after the
question in `question` / `text`. A letter becomes its option's text; a record that already holds text
(as the original DualFocus runner wrote) is kept. Either way the prediction is then normalized as
LLaVA's converter does: trailing periods stripped, lower-cased. With --gqa-annotations, accuracy is
GQA eval.py's: exact match against `answer` over the balanced questions, overall and per
`types.structural` / `types.semantic`; unanswered questions count wrong.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Mapping
from typing import Any

from dualfocus.benchmarks import records
from dualfocus.benchmarks import scoring as sc
from dualfocus.benchmarks.base import Benchmark, Gold, Layout, register
from dualfocus.files import write_atomic
from dualfocus.focus.protocols import (
    IMAGE,
    OPTION_INSTRUCTION,
    SHORT_ANSWER,
    FocusQuery,
    Protocol,
    option_letter,
)

ALL_LETTERS = tuple(string.ascii_uppercase)
_OPTION_LINE = re.compile(r"^([A-Z])\. (.*)$")


class GQAProtocol(Protocol):
    """Records hold ``question`` = "question\\nA. ...\\nB. ..." (the original reads that key; a
    LLaVA-style ``text`` key is accepted too). The instruction line is appended by the protocol.
    The answer record's "text" is the chosen option's text, as the original writes it.
    """

    name = "gqa"

    def from_record(self, record: Mapping) -> FocusQuery:
        qid, raw = records.question_text(record, "question" if "question" in record else "text", self.name)
        lines = raw.split("\n")
        if lines[-1] == OPTION_INSTRUCTION:  # a LLaVA-style text that already carries it
            lines = lines[:-1]
        options, option_texts = records.split_option_lines(lines[1:], self.name, qid)
        body = "\n".join(lines)
        return FocusQuery(benchmark=self.name, question_id=qid, question=lines[0], text=f"{body}\n{OPTION_INSTRUCTION}",
                          options=options, option_texts=option_texts, instruction=OPTION_INSTRUCTION,
                          prompt=lines[0], image=record.get("image"))

    def score_prompt(self, q: FocusQuery) -> str:
        return f"{IMAGE}\n{q.question}\n{SHORT_ANSWER}."

    def final_text(self, answer: str, q: FocusQuery) -> str:
        return self.candidate_text(answer, q) if self.is_valid(answer, q) else answer


@register
class GQABenchmark(Benchmark):
    name = "gqa"
    protocol_class = GQAProtocol
    layout = Layout("gqa", "llava_gqa_testdev_balanced_mcq", images="data/images",
                    annotations=("data/testdev_balanced_questions.json", "testdev_balanced_questions.json"),
                    runner=("dualfocus.eval.model_vqa_gqa",), demo_split="llava_gqa_testdev_balanced_mcq")

    def fallback_prompt(self, row: Mapping) -> str:
        text = row.get("question", row.get("text"))
        return text.split("\n")[0] if isinstance(text, str) else ""

    def load_annotations(self, path: str) -> dict[str, str]:
        """testdev_balanced_questions.json -> question id -> answer text."""
        with open(path, encoding="utf-8") as f:
            return {str(qid): q["answer"] for qid, q in json.load(f).items()}

    def gold(self, row: Mapping, query: FocusQuery, annotations: Any = None) -> Gold | None:
        if annotations is not None and str(query.question_id) in annotations:
            return self._as_gold(annotations[str(query.question_id)], query)
        return super().gold(row, query)

    def typed_record(self, question: str, options) -> dict:
        return {"question_id": "cli", "question": f"{question}\n{records.option_lines(records.require_options(self.name, options))}"}

    def score_run(self, result_file: str, question_file: str, annotation_file: str | None, upload: str) -> dict:
        """GQA's eval.py reads data/testdev_balanced_predictions.json: one per run, beside its answers;
        scored when the annotation file is there."""
        argv = ["--src", result_file, "--dst", os.path.join(os.path.dirname(result_file), "testdev_balanced_predictions.json"),
                "--questions", question_file]
        if annotation_file and os.path.isfile(annotation_file):
            argv += ["--gqa-annotations", annotation_file]
        return main(argv)


def question_options(question: dict) -> dict[str, str]:
    """Letter -> option text of one question record ({} when it has none)."""
    listed = question.get("options") or question.get("choices")
    if isinstance(listed, dict):
        return {str(k): str(v) for k, v in listed.items()}
    if isinstance(listed, list):
        return {chr(ord("A") + i): str(v) for i, v in enumerate(listed)}
    for field in ("question", "text"):
        lines = str(question.get(field, "")).split("\n")[1:]
        matches = [_OPTION_LINE.match(line.strip()) for line in lines]
        options = {m.group(1): m.group(2) for m in matches if m}
        if options:
            return options
    return {}


def load_options(path: str) -> dict[str, dict[str, str]]:
    """question_id -> letter -> option text, from a question jsonl."""
    return {sc.qid_key(q["question_id"]): question_options(q) for q in sc.read_jsonl(path)}


def to_prediction(record: dict, options: dict[str, str] | None) -> tuple[str, str]:
    """(prediction text for GQA, how it was obtained: 'letter' | 'text' | 'error' | 'bad-letter')."""
    if sc.is_error(record):
        return "", "error"
    text = sc.answer_text(record)
    if options is None:  # no question file: options may travel in the record (LLaVA's MMBench runner does)
        options = question_options(record) if record.get("options") else None
    letter = option_letter(text, ALL_LETTERS)
    if letter is not None and options is not None and letter not in options:
        return text.rstrip(".").lower(), "bad-letter"
    if letter is not None and options:
        return options[letter].rstrip(".").lower(), "letter"
    if letter is not None:
        raise ValueError(f"question {record.get('question_id')!r}: answer {text!r} is a letter but no options "
                         "are known; pass --questions with the multiple-choice question file")
    return text.rstrip(".").lower(), "text"


def convert(records: list[dict], options: dict[str, dict[str, str]] | None) -> tuple[list[dict], dict[str, int]]:
    """GQA prediction list and counts of how each prediction was obtained."""
    predictions, how = [], {}
    for record in records:
        record_options = None if options is None else options.get(sc.qid_key(record["question_id"]), {})
        prediction, kind = to_prediction(record, record_options)
        how[kind] = how.get(kind, 0) + 1
        predictions.append({"questionId": record["question_id"], "prediction": prediction})
    return predictions, how


def score(predictions: list[dict], annotations: dict[str, dict]) -> dict:
    """GQA eval.py accuracy (exact match) over the balanced questions, with per-type tables."""
    by_id = {sc.qid_key(p["questionId"]): p["prediction"] for p in predictions}
    overall, structural, semantic, missing = [], [], [], 0
    for qid, question in annotations.items():
        if not question.get("isBalanced", True):
            continue
        missing += qid not in by_id
        right = float(by_id.get(qid) == question["answer"])
        overall.append(("all", right))
        types = question.get("types") or {}
        if "structural" in types:
            structural.append((types["structural"], right))
        if "semantic" in types:
            semantic.append((types["semantic"], right))
    total = sc.tally(overall)
    return {
        "accuracy": total[0].accuracy if total else 0.0,
        "n_questions": total[0].count if total else 0,
        "n_unanswered": missing,
        "structural": [r.to_dict() for r in sorted(sc.tally(structural), key=lambda r: r.name)],
        "semantic": [r.to_dict() for r in sorted(sc.tally(semantic), key=lambda r: r.name)],
    }


def report(result: dict) -> str:
    lines = [f"Accuracy: {result['accuracy']:.2f}% ({result['n_questions']} balanced questions)"]
    if result["n_unanswered"]:
        lines.append(f"note: {result['n_unanswered']} question(s) have no prediction and count as wrong")
    for kind in ("structural", "semantic"):
        if result[kind]:
            lines += ["", sc.format_table(f"Per {kind} type", [sc.CategoryScore.from_dict(r) for r in result[kind]])]
    return "\n".join(lines)


@sc.cli_errors("convert_gqa_for_eval")
def main(argv: list[str] | None = None) -> dict:
    """Map multiple-choice letters to GQA answers, write GQA's prediction file, optionally score it."""
    parser = sc.scorer_parser(main.__doc__, {"--src": "merged answer jsonl", "--dst": "GQA prediction json to write"},
                              {"--questions": "question jsonl holding each question's options",
                               "--gqa-annotations": "testdev_balanced_questions.json"}, "<src stem>_score.json")
    args = parser.parse_args(argv)

    options = load_options(args.questions) if args.questions else None
    records = sc.read_jsonl(args.src)
    sc.check_unique(records, lambda r: sc.qid_key(r["question_id"]))
    try:
        predictions, how = convert(records, options)
    except ValueError as e:
        raise SystemExit(str(e)) from e
    write_atomic(args.dst, json.dumps(predictions))
    print(f"{len(predictions)} prediction(s) written to {args.dst} ({', '.join(f'{k}: {v}' for k, v in sorted(how.items()))})")

    result = {"benchmark": "gqa", "src": args.src, "dst": args.dst, "conversions": how,
              "n_errors": how.get("error", 0)}
    if args.gqa_annotations:
        with open(args.gqa_annotations, encoding="utf-8") as f:
            annotations = {sc.qid_key(k): v for k, v in json.load(f).items()}
        result.update(score(predictions, annotations), gqa_annotations=args.gqa_annotations)
        print(report(result))
    if options is not None:
        answered = {sc.qid_key(r["question_id"]) for r in records}
        result["n_unanswered_questions"] = sum(q not in answered for q in options)
        if result["n_unanswered_questions"]:
            print(f"note: {result['n_unanswered_questions']} question(s) of {args.questions} have no answer record")
    if result["n_errors"]:
        print(f"note: {result['n_errors']} error record(s) count as wrong")
    out = args.output_json or sc.default_output_json(args.src)
    sc.write_json_atomic(out, result)
    print(f"scores written to {out}")
    return result
