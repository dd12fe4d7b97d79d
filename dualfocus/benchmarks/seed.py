"""SEED-Bench (image): LLaVA's ``llava-seed-bench-image.jsonl`` (`question_id`, `image`, `text`), its
gold answers (``SEED-Bench.json``) and its scorer / upload file (``convert_seed_for_submission``).

Images are paths under the image folder (``SEED-Bench-image/<id>.jpg``; LLaVA's video questions
point at extracted frames, ``SEED-Bench-video-image/...``).

Scoring (``python -m dualfocus.eval.convert_seed_for_submission --annotation-file SEED-Bench.json
--result-file answers/merge.jsonl --result-upload-file upload/exp.jsonl [--output-json s.json]``):
an answer is right when its `text` equals the annotation's letter exactly (as LLaVA compares). A
question with no answer record, or with an error record, counts as wrong. Like LLaVA, the per-type
lines and "Total accuracy" cover every question in the annotation (video included); the number
reported for SEED-Bench image is "image accuracy".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dualfocus.benchmarks import records
from dualfocus.benchmarks import scoring as sc
from dualfocus.benchmarks.base import Benchmark, Gold, Layout, register
from dualfocus.files import write_lines_atomic
from dualfocus.focus.protocols import OPTION_INSTRUCTION, FocusQuery, Protocol


class SeedProtocol(Protocol):
    """``text`` = "question\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\nAnswer with the option's letter ...";
    the wording is the base protocol's."""

    name = "seed"

    def from_record(self, record: Mapping) -> FocusQuery:
        qid, text = records.question_text(record, "text", self.name)
        lines = text.split("\n")
        options, option_texts, instruction = records.options_and_instruction(lines[1:], self.name, qid)
        return FocusQuery(benchmark=self.name, question_id=qid, question=lines[0], text=text, options=options,
                          option_texts=option_texts, instruction=instruction, prompt=text, image=record.get("image"))


@register
class SeedBenchmark(Benchmark):
    name = "seed"
    protocol_class = SeedProtocol
    layout = Layout("seed_bench", "llava-seed-bench-image", annotations=("SEED-Bench.json",),
                    runner=("dualfocus.eval.model_vqa_seed",), whole_split="llava-seed-bench",
                    demo_split="llava-seed-bench")

    def load_annotations(self, path: str) -> dict[str, str]:
        """SEED-Bench.json -> question_id (as a string) -> answer letter."""
        questions, _ = load_annotation(path)
        return {str(q["question_id"]): q["answer"] for q in questions}

    def gold(self, row: Mapping, query: FocusQuery, annotations: Any = None) -> Gold | None:
        if annotations is not None and str(query.question_id) in annotations:
            return self._as_gold(annotations[str(query.question_id)], query)
        return super().gold(row, query)

    def typed_record(self, question: str, options) -> dict:
        lines = records.option_lines(records.require_options(self.name, options))
        return {"question_id": "cli", "text": f"{question}\n{lines}\n{OPTION_INSTRUCTION}"}

    def score_run(self, result_file: str, question_file: str, annotation_file: str | None, upload: str) -> dict:
        return main(["--annotation-file", str(annotation_file), "--result-file", result_file,
                     "--result-upload-file", f"{upload}.jsonl"])


def load_annotation(path: str) -> tuple[list[dict], dict[int, str]]:
    """SEED-Bench.json -> (questions, question_type_id -> type name)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    type_names = {int(type_id): name for name, type_id in data["question_type"].items()}
    return data["questions"], type_names


def _data_type_order(data_type: str) -> tuple[int, str]:
    return ({"image": 0, "video": 1}.get(data_type, 2), data_type)


def score(questions: list[dict], type_names: dict[int, str], results: dict[str, dict]) -> dict:
    """Per question type and per data type (image / video) accuracy of `results` (by question id)."""
    per_type: dict[int, sc.CategoryScore] = {}
    per_data_type: dict[str, sc.CategoryScore] = {}
    unanswered = {"image": 0, "video": 0}
    errors = 0
    for q in questions:
        type_id = int(q["question_type_id"])
        data_type = q.get("data_type", "image")
        record = results.get(sc.qid_key(q["question_id"]))
        if record is None:
            unanswered[data_type] = unanswered.get(data_type, 0) + 1
        elif sc.is_error(record):
            errors += 1
        right = float(record is not None and sc.answer_text(record) == q["answer"])
        name = type_names.get(type_id, str(type_id))
        per_type.setdefault(type_id, sc.CategoryScore(name)).add(right)
        per_data_type.setdefault(data_type, sc.CategoryScore(data_type)).add(right)
    type_rows = [per_type[t] for t in sorted(per_type)]
    total = sc.CategoryScore("total", sum(r.count for r in type_rows), sum(r.score for r in type_rows))
    return {
        "benchmark": "seed_bench",
        "total_accuracy": total.accuracy,
        "image_accuracy": per_data_type["image"].accuracy if "image" in per_data_type else None,
        "video_accuracy": per_data_type["video"].accuracy if "video" in per_data_type else None,
        "n_questions": total.count,
        "n_results": len(results),
        "n_errors": errors,
        "unanswered": {k: v for k, v in unanswered.items() if v},
        "question_types": [{"type_id": t, **per_type[t].to_dict()} for t in sorted(per_type)],
        # LLaVA prints image before video.
        "data_types": [per_data_type[k].to_dict() for k in sorted(per_data_type, key=_data_type_order)],
    }


def report(result: dict) -> str:
    """LLaVA's lines ('<type>: NN.NN%', 'Total accuracy', '<data type> accuracy'), then a table."""
    lines = [f"{row['name']}: {row['accuracy']:.2f}%" for row in result["question_types"]]
    lines.append(f"Total accuracy: {result['total_accuracy']:.2f}%")
    for row in result["data_types"]:
        lines.append(f"{row['name']} accuracy: {row['accuracy']:.2f}%")
    for data_type, n in result["unanswered"].items():
        lines.append(f"note: {n} {data_type} question(s) have no answer record and count as wrong")
    if result["n_errors"]:
        lines.append(f"note: {result['n_errors']} error record(s) count as wrong")
    rows = [sc.CategoryScore.from_dict(r) for r in result["question_types"]]
    rows += [sc.CategoryScore.from_dict(r) for r in result["data_types"]]
    lines += ["", sc.format_table("Per question type, then per data type", rows)]
    return "\n".join(lines)


def upload_records(questions: list[dict], results: dict[str, dict]) -> list[dict]:
    """One {'question_id', 'prediction'} per annotated question that has an answer record
    (LLaVA raises on a missing one, e.g. every video question of an image-only run)."""
    return [
        {"question_id": q["question_id"], "prediction": sc.answer_text(results[sc.qid_key(q["question_id"])])}
        for q in questions
        if sc.qid_key(q["question_id"]) in results
    ]


@sc.cli_errors("convert_seed_for_submission")
def main(argv: list[str] | None = None) -> dict:
    """Score SEED-Bench answers per question type and write the submission jsonl."""
    flags = {"--annotation-file": "SEED-Bench.json", "--result-file": "merged answer jsonl",
             "--result-upload-file": "submission jsonl to write"}
    args = sc.scorer_parser(main.__doc__, flags).parse_args(argv)

    questions, type_names = load_annotation(args.annotation_file)
    records = sc.read_jsonl(args.result_file)
    sc.check_unique(records, lambda r: sc.qid_key(r["question_id"]))
    results = {sc.qid_key(r["question_id"]): r for r in records}
    result = score(questions, type_names, results)
    result.update(annotation_file=args.annotation_file, result_file=args.result_file,
                  result_upload_file=args.result_upload_file)
    print(report(result))

    upload = upload_records(questions, results)
    write_lines_atomic(args.result_upload_file, upload)  # never a truncated upload, even on a full disk
    print(f"\n{len(upload)} prediction(s) written to {args.result_upload_file}")
    out = args.output_json or sc.default_output_json(args.result_file)
    sc.write_json_atomic(out, result)
    print(f"scores written to {out}")
    return result
