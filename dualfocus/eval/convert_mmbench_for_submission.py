"""MMBench: write the submission xlsx as LLaVA does, and score locally when the TSV has answers.

    python -m dualfocus.eval.convert_mmbench_for_submission --annotation-file mmbench_dev_20230712.tsv \
        --result-dir answers/<ckpt> --upload-dir answers_upload/<ckpt> --experiment merge \
        [--output-json scores.json]

Reads `<result-dir>/<experiment>.jsonl`, writes `<upload-dir>/<experiment>.xlsx` with the columns
index, question, A, B, C, D, prediction, answer, split (answer/split only when the TSV has them:
test TSVs do not).

Local scores (dev TSVs, which hold `answer`):
- vanilla: accuracy over the original questions (index < 1_000_000);
- circular: the TSV repeats a question with its options rotated at index + k * 1_000_000; rows
  are grouped by index % 1_000_000 and a group is right only when every row in it is right.
A prediction names an option by letter ('B', 'B.', '(B)', 'B. text') or by the option's exact text;
anything else, a missing answer record and an error record are wrong. (The official server also
asks an LLM to match free-form answers; with the single-letter prompt that rarely matters.)
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys

import pandas as pd

from dualfocus.eval.files import write_bytes_atomic
from dualfocus.eval.scoring_common import (
    CategoryScore,
    answer_text,
    check_unique,
    cli_errors,
    format_table,
    is_error,
    parse_choice_letter,
    qid_key,
    read_jsonl,
    write_json_atomic,
)
from dualfocus.focus.protocols import is_empty_cell

OPTION_LETTERS = ("A", "B", "C", "D")
CIRCULAR_STRIDE = 1_000_000
# What LLaVA's converter drops from the TSV before adding `prediction`.
DROPPED_COLUMNS = ["hint", "category", "source", "image", "comment", "l2-category"]


def row_options(row: pd.Series) -> dict[str, str]:
    """Letter -> option text, stopping at the first empty option (2- and 3-option questions)."""
    options = {}
    for letter in OPTION_LETTERS:
        if letter not in row or is_empty_cell(row[letter]):
            break
        options[letter] = str(row[letter])
    return options


def predicted_letter(text: str, options: dict[str, str]) -> str | None:
    """The option a free-text prediction names, or None."""
    letter = parse_choice_letter(text, "".join(options))
    if letter is not None:
        return letter
    wanted = text.strip().rstrip(".").strip().lower()
    for letter, option in options.items():
        if option.strip().rstrip(".").strip().lower() == wanted:
            return letter
    return None


def load_predictions(path: str) -> tuple[dict[str, str], int]:
    """question_id -> answer text (round 0 only); and the error count. An answer given twice for one
    (question, round) fails (LLaVA kept the last).

    With LLaVA's --all-rounds a record per option rotation shares the question id; only round 0
    keeps the TSV's option order, so only it is comparable to the TSV's `answer` column."""
    predictions, errors = {}, 0
    records = read_jsonl(path)
    check_unique(records, lambda r: (qid_key(r["question_id"]), int(r.get("round_id") or 0)), "question/round")
    for record in records:
        if record.get("round_id", 0) not in (0, None):
            continue
        errors += is_error(record)
        predictions[qid_key(record["question_id"])] = answer_text(record)
    return predictions, errors


# Characters an xlsx cell cannot hold (openpyxl raises IllegalCharacterError on them).
_XLSX_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def submission_frame(df: pd.DataFrame, predictions: dict[str, str]) -> pd.DataFrame:
    """The TSV minus hint/category/source/image/comment/l2-category, with `prediction` after D.

    Control characters (a model can write them) are removed from predictions: xlsx cannot hold them.
    """
    out = df.drop(columns=[c for c in DROPPED_COLUMNS if c in df.columns])
    anchor = max((out.columns.get_loc(c) for c in OPTION_LETTERS if c in out.columns), default=len(out.columns) - 1)
    preds = [predictions.get(qid_key(i)) for i in df["index"]]
    out.insert(anchor + 1, "prediction", [_XLSX_ILLEGAL.sub("", p) if isinstance(p, str) else p for p in preds])
    return out


def has_answers(df: pd.DataFrame) -> bool:
    return "answer" in df.columns and not df["answer"].map(is_empty_cell).all()


def score(df: pd.DataFrame, predictions: dict[str, str]) -> dict:
    """Vanilla and circular accuracy, overall and per category / l2-category."""
    right = {}
    for _, row in df.iterrows():
        text = predictions.get(qid_key(row["index"]))
        right[int(row["index"])] = text is not None and predicted_letter(text, row_options(row)) == row["answer"]
    df = df.assign(_right=[right[int(i)] for i in df["index"]], _group=df["index"].astype(int) % CIRCULAR_STRIDE)
    vanilla_rows = df[df["index"].astype(int) < CIRCULAR_STRIDE]
    groups = df.groupby("_group", sort=True).agg(
        _right=("_right", "all"), **{c: (c, "first") for c in ("category", "l2-category") if c in df.columns}
    )
    result = {
        "benchmark": "mmbench",
        "vanilla_accuracy": 100.0 * vanilla_rows["_right"].mean() if len(vanilla_rows) else 0.0,
        "circular_accuracy": 100.0 * groups["_right"].mean() if len(groups) else 0.0,
        "n_questions": len(vanilla_rows),
        "n_rows": len(df),
        "n_groups": len(groups),
        "n_unanswered_rows": int(sum(qid_key(i) not in predictions for i in df["index"])),
        "categories": {},
    }
    for column in ("category", "l2-category"):
        if column not in df.columns:
            continue
        vanilla = vanilla_rows.groupby(column, sort=True)["_right"].agg(["size", "sum"])
        circular = groups.groupby(column, sort=True)["_right"].agg(["size", "sum"])
        result["categories"][column] = [
            {
                "name": str(name),
                "vanilla": CategoryScore(str(name), int(vanilla.loc[name, "size"]), float(vanilla.loc[name, "sum"])).to_dict()
                if name in vanilla.index else None,
                "circular": CategoryScore(str(name), int(circular.loc[name, "size"]), float(circular.loc[name, "sum"])).to_dict(),
            }
            for name in circular.index
        ]
    return result


def report(result: dict) -> str:
    lines = [
        f"Vanilla accuracy: {result['vanilla_accuracy']:.2f}% ({result['n_questions']} questions)",
        f"Circular accuracy: {result['circular_accuracy']:.2f}% ({result['n_groups']} groups of rotations)",
    ]
    if result["n_unanswered_rows"]:
        lines.append(f"note: {result['n_unanswered_rows']} TSV row(s) have no answer record and count as wrong")
    if result.get("n_errors"):
        lines.append(f"note: {result['n_errors']} error record(s) count as wrong")
    for column, entries in result["categories"].items():
        rows = [CategoryScore.from_dict(e["vanilla"]) if e["vanilla"] else CategoryScore(e["name"]) for e in entries]
        circular = [f"{e['circular']['accuracy']:.2f}" for e in entries]
        groups = [str(e["circular"]["count"]) for e in entries]
        lines += ["", format_table(f"Per {column} (vanilla n/acc, circular groups/acc)", rows,
                                   {"groups": groups, "circ(%)": circular})]
    return "\n".join(lines)


@cli_errors("convert_mmbench_for_submission")
def main(argv: list[str] | None = None) -> dict:
    """Write the MMBench submission xlsx; score vanilla and circular accuracy when answers are known."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--annotation-file", required=True, help="MMBench TSV")
    parser.add_argument("--result-dir", required=True, help="folder holding <experiment>.jsonl")
    parser.add_argument("--upload-dir", required=True, help="folder for <experiment>.xlsx")
    parser.add_argument("--experiment", required=True, help="answer file name without .jsonl")
    parser.add_argument("--output-json", default=None, help="default: <result-dir>/<experiment>_score.json")
    args = parser.parse_args(argv)

    df = pd.read_table(args.annotation_file)
    result_file = os.path.join(args.result_dir, f"{args.experiment}.jsonl")
    predictions, errors = load_predictions(result_file)

    os.makedirs(args.upload_dir, exist_ok=True)
    upload_file = os.path.join(args.upload_dir, f"{args.experiment}.xlsx")
    buffer = io.BytesIO()
    submission_frame(df, predictions).to_excel(buffer, index=False, engine="openpyxl")
    write_bytes_atomic(upload_file, buffer.getvalue())
    print(f"submission written to {upload_file}")

    result = {"benchmark": "mmbench", "has_answers": has_answers(df)}
    if result["has_answers"]:
        result.update(score(df, predictions))
    else:
        print("the TSV holds no answers (a test split): no local score")
    result.update(n_errors=errors, annotation_file=args.annotation_file, result_file=result_file,
                  upload_file=upload_file)
    if result["has_answers"]:
        print(report(result))
    out = args.output_json or os.path.join(args.result_dir, f"{args.experiment}_score.json")
    write_json_atomic(out, result)
    print(f"scores written to {out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
