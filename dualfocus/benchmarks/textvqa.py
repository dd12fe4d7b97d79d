"""TextVQA: LLaVA's ``llava_textvqa_val_v051_ocr.jsonl`` (`question_id` = the image id, `image` under
``textvqa/train_images``, `text` = question, OCR tokens, answer-format line), its gold answers
(``TextVQA_0.5.1_val.json``) and its scorer (``eval_textvqa``, printing `Accuracy: NN.NN%` as LLaVA).

The question id repeats for questions about the same image; the runner therefore counts answers
per id rather than assuming ids are unique.

Scoring (``python -m dualfocus.eval.eval_textvqa --annotation-file TextVQA_0.5.1_val.json
(--result-file answers/merge.jsonl | --result-dir answers/) [--output-json scores.json]``): records
are matched to annotations as LLaVA's eval_textvqa matches them: by (image id, lower-cased
question), the image id being the record's `question_id` and the question parsed back out of the
record's `prompt`. Unlike LLaVA, questions are counted, not records: each question of
--question-file (default: of the annotation file) once, a question without an answer record scores
0 and is reported, and a question answered twice fails instead of counting twice.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from dualfocus.benchmarks import records
from dualfocus.benchmarks import scoring as sc
from dualfocus.benchmarks.base import Benchmark, Gold, Layout, read_question_lines, register
from dualfocus.benchmarks.vqa_accuracy import vqa_accuracy
from dualfocus.focus.protocols import COMBINE, IMAGE, KNOWN_INSTRUCTIONS, SHORT_ANSWER, FocusQuery, Protocol


class TextVQAProtocol(Protocol):
    """``text`` = "question\\nReference OCR token: ...\\nAnswer the question using a single word or
    phrase."; the box request asks the first line only. Free form: both answers are scored.
    """

    name = "textvqa"
    multiple_choice = False

    def from_record(self, record: Mapping) -> FocusQuery:
        qid, text = records.question_text(record, "text", self.name)
        lines = text.split("\n")
        instruction = lines[-1] if len(lines) > 1 and lines[-1] in KNOWN_INSTRUCTIONS else None
        return records.free_form_query(self, record, lines[0], instruction)

    def score_prompt(self, q: FocusQuery) -> str:
        # No space after the colon: the original's TextVQA wording, kept for fidelity.
        return f"{IMAGE}\n{COMBINE}{q.question}\n{SHORT_ANSWER}"


@register
class TextVQABenchmark(Benchmark):
    name = "textvqa"
    protocol_class = TextVQAProtocol
    layout = Layout("textvqa", "llava_textvqa_val_v051_ocr", images="train_images",
                    annotations=("TextVQA_0.5.1_val.json",), runner=("dualfocus.eval.model_vqa_textvqa",),
                    demo_split="llava_textvqa_val_v051_ocr")

    def load_annotations(self, path: str) -> dict:
        """TextVQA_0.5.1_val.json -> (image id, lower-cased question) -> the 10 human answers."""
        by_image_question, _ = load_annotations(path)
        return {key: entry["answers"] for key, entry in by_image_question.items()}

    def gold(self, row: Mapping, query: FocusQuery, annotations: Any = None) -> Gold | None:
        if annotations is not None:
            answers = annotations.get((str(query.question_id), query.question.lower()))
            if answers:
                return list(answers)
        return super().gold(row, query)

    def score_run(self, result_file: str, question_file: str, annotation_file: str | None, upload: str) -> dict:
        return main(["--annotation-file", str(annotation_file), "--question-file", question_file,
                     "--result-file", result_file])[0]


def question_from_prompt(prompt: str) -> str:
    """The lower-cased question inside a TextVQA prompt, for the prompt layouts LLaVA knows:

    - 'OCR tokens: ... Question: <q> Short answer:'
    - '<q>\\nReference OCR token: ...\\n<instruction>' (or with the OCR line first)
    - '<q>\\n<instruction>' (no OCR tokens)
    """
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        if match is None:
            raise ValueError(f"OCR-tokens prompt without 'Question: ... Short answer:': {prompt!r}")
        question = match.group(1)
    elif "Reference OCR token: " in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith("Reference OCR token:") else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"cannot find the question in this TextVQA prompt: {prompt!r}")
    return question.lower()


def load_annotations(path: str) -> tuple[dict, dict]:
    """(image_id, lower-cased question) -> entry, and TextVQA question_id -> entry."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)["data"]
    by_image_question = {(str(a["image_id"]), a["question"].lower()): a for a in data}
    by_question_id = {str(a["question_id"]): a for a in data if "question_id" in a}
    return by_image_question, by_question_id


def annotation_key(entry: dict) -> tuple[str, str]:
    """An annotated question's identity: (image id, lower-cased question)."""
    return str(entry["image_id"]), entry["question"].lower()


def match_annotation(record: dict, by_image_question: dict, by_question_id: dict) -> dict:
    """LLaVA's (image id, question) key first; a record whose question_id is TextVQA's own
    integer question id (no image id there) is matched by that id."""
    qid = str(record["question_id"])
    key = (qid, question_from_prompt(record.get("prompt", "")))
    if key in by_image_question:
        return by_image_question[key]
    if qid in by_question_id:
        return by_question_id[qid]
    raise KeyError(key)


def question_keys(question_file: str, by_image_question: dict) -> list[tuple[str, str]]:
    """The annotated questions a LLaVA question file asks (its `text` has the prompt's layout)."""
    keys = []
    for row in read_question_lines(question_file):
        try:
            key = (str(row["question_id"]), question_from_prompt(row["text"]))
        except (KeyError, TypeError, ValueError) as e:
            raise sc.ScoreInputError(f"{question_file}: question {row.get('question_id')!r} is unreadable ({e})") from e
        if key not in by_image_question:
            raise sc.ScoreInputError(f"{question_file}: question {key!r} is not in the annotation file")
        keys.append(key)
    return keys


def match_records(records: list[dict], by_image_question: dict, by_question_id: dict) -> dict:
    """(image id, question) -> the record answering it; a record matching nothing or a question
    answered twice fails (the last answer would win silently)."""
    unmatched, keyed = [], []
    for record in records:
        try:
            keyed.append((annotation_key(match_annotation(record, by_image_question, by_question_id)), record))
        except (KeyError, ValueError) as e:
            unmatched.append(f"{record.get('question_id')!r}: {e}")
    if unmatched:
        raise sc.ScoreInputError(f"{len(unmatched)} result record(s) match no annotation: " + "; ".join(unmatched[:20]))
    sc.check_unique([key for key, _ in keyed], lambda key: key)
    return dict(keyed)


def evaluate(annotation_file: str, result_file: str, question_file: str | None = None) -> dict:
    """Score one result file over its questions (the question file's, else every annotated one):
    each question once; one without an answer record scores 0 and is counted."""
    by_image_question, by_question_id = load_annotations(annotation_file)
    answered = match_records(sc.read_jsonl(result_file), by_image_question, by_question_id)
    questions = question_keys(question_file, by_image_question) if question_file else list(by_image_question)
    extra = set(answered) - set(questions)
    if extra:
        raise sc.ScoreInputError(f"{len(extra)} record(s) answer questions not in {question_file}: {sorted(extra)[:20]}")
    pairs = []
    for key in questions:
        record = answered.get(key)
        score = vqa_accuracy(sc.answer_text(record), by_image_question[key]["answers"]) if record is not None else 0.0
        kind = "no answer record" if record is None else "error records" if sc.is_error(record) else "answered"
        pairs.append((kind, score))
    rows = sc.tally(pairs)
    return {
        "benchmark": "textvqa",
        "experiment": os.path.splitext(os.path.basename(result_file))[0],
        "annotation_file": annotation_file,
        "result_file": result_file,
        "question_file": question_file,
        "samples": len(pairs),
        "accuracy": 100.0 * sum(score for _, score in pairs) / len(pairs) if pairs else 0.0,
        "n_errors": sum(sc.is_error(r) for r in answered.values()),
        "n_unanswered": len(questions) - len(answered),
        "categories": [r.to_dict() for r in rows],
    }


def report(result: dict) -> str:
    lines = [result["experiment"], f"Samples: {result['samples']}", f"Accuracy: {result['accuracy']:.2f}%"]
    if result["n_errors"]:
        lines.append(f"Error records (scored 0): {result['n_errors']}")
    if result["n_unanswered"]:
        lines.append(f"note: {result['n_unanswered']} question(s) have no answer record and count as wrong")
    rows = [sc.CategoryScore.from_dict(r) for r in result["categories"]]
    lines += ["", sc.format_table("Per category", rows)]
    return "\n".join(lines)


@sc.cli_errors("eval_textvqa")
def main(argv: list[str] | None = None) -> list[dict]:
    """Score TextVQA answers with the official 10-annotator accuracy."""
    parser = sc.scorer_parser(main.__doc__, {"--annotation-file": "TextVQA_0.5.1_val.json"}, {
        "--result-file": "merged answer jsonl", "--result-dir": "score every *.jsonl in this folder (as LLaVA's)",
        "--question-file": "the questions asked (LLaVA's jsonl); default: every question of the annotation file"},
        "<result file stem>_score.json beside each result file")
    args = parser.parse_args(argv)
    files = [args.result_file] if args.result_file else []
    if args.result_dir:
        files += [os.path.join(args.result_dir, name) for name in sorted(os.listdir(args.result_dir))
                  if name.endswith(".jsonl")]
    if not files:
        parser.error("give --result-file or --result-dir (with at least one .jsonl)")
    if args.output_json and len(files) > 1:
        parser.error("--output-json names one file; with several results leave it out")
    results = []
    for result_file in files:
        result = evaluate(args.annotation_file, result_file, args.question_file)
        print(report(result))
        out = args.output_json or sc.default_output_json(result_file)
        sc.write_json_atomic(out, result)
        print(f"scores written to {out}\n")
        results.append(result)
    return results
