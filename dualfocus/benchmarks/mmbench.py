"""MMBench: a TSV (`index`, `question`, `hint`, `A`..`D`, base64 `image`, `answer` on dev, ...) read
with pandas as LLaVA reads it; its protocol; LLaVA's ``--all-rounds`` rotations; and the submission
xlsx with local scores (``convert_mmbench_for_submission``).

``all_rounds`` asks every question once per rotation of its options (`index` unchanged, `round_id`
= k); answers are then keyed by (index, round_id). Answer records carry LLaVA's extra fields
`round_id`, `options`, `option_char` at the top level (the scorer and the merge read `round_id`).

Submission (``python -m dualfocus.eval.convert_mmbench_for_submission --annotation-file TSV
--result-dir answers/<ckpt> --upload-dir answers_upload/<ckpt> --experiment merge
[--output-json scores.json]``): reads `<result-dir>/<experiment>.jsonl`, writes
`<upload-dir>/<experiment>.xlsx` with the columns index, question, A, B, C, D, prediction, answer,
split (answer/split only when the TSV has them: test TSVs do not). Local scores (dev TSVs):
vanilla accuracy over the original questions (index < 1_000_000); circular: the TSV repeats a
question with its options rotated at index + k * 1_000_000, rows are grouped by index % 1_000_000
and a group is right only when every row in it is right. A prediction names an option by letter or
by the option's exact text (`option_letter`); anything else, a missing answer record and an error
record are wrong. (The official server also asks an LLM to match free-form answers; with the
single-letter prompt that rarely matters.)
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Mapping

import pandas as pd

from dualfocus.benchmarks import records
from dualfocus.benchmarks import scoring as sc
from dualfocus.benchmarks.base import Benchmark, Layout, jsonable, register
from dualfocus.files import write_bytes_atomic
from dualfocus.focus.protocols import (
    BOX_REQUEST,
    COMBINE,
    IMAGE,
    OPTION_INSTRUCTION,
    OPTION_INSTRUCTION_CN,
    SHORT_ANSWER,
    FocusQuery,
    Protocol,
    RecordError,
    option_letter,
)

OPTION_LETTERS = ("A", "B", "C", "D")
CIRCULAR_STRIDE = 1_000_000
# What LLaVA's converter drops from the TSV before adding `prediction`.
DROPPED_COLUMNS = ["hint", "category", "source", "image", "comment", "l2-category"]


def is_empty_cell(value) -> bool:
    """An empty MMBench cell, exactly as LLaVA's ``is_none``: None, NaN, or "nan"/"none" in any case.

    A cell of spaces (or "") is content to the release: a hint line of its own, or an option
    ("D.  ") that counts. We keep that (docs/protocol.md, "MMBench cells"); pandas reads an empty
    TSV cell as NaN, so only hand-made files hold such cells.
    """
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.lower() in ("nan", "none")


def option_cells(row: Mapping) -> dict[str, str]:
    """Letter -> option text of a row's cells A..D, up to the first empty one (2- and 3-option
    questions); pandas may read an all-number option column as numbers."""
    options = {}
    for letter in OPTION_LETTERS:
        if letter not in row or is_empty_cell(row[letter]):
            break
        options[letter] = str(row[letter])
    return options


class MMBenchProtocol(Protocol):
    """The hint goes first ("hint\\nquestion"); options follow as "A. text" lines; the instruction
    "Answer with the option's letter from the given choices directly." is appended. The original
    appended it whether or not ``--single-pred-prompt`` was given (its scripts always give it);
    ``single_pred_prompt=False`` leaves it out, ``lang="cn"`` uses LLaVA's Chinese line.
    Options stop at the first empty cell (2- and 3-option questions). "nan" hints are dropped.
    """

    name = "mmbench"
    match_option_lines = False
    score_turn_open = True

    def __init__(self, single_pred_prompt: bool = True, lang: str = "en"):
        if lang not in ("en", "cn"):
            raise ValueError(f"lang must be 'en' or 'cn', got {lang!r}")
        self.single_pred_prompt = single_pred_prompt
        self.lang = lang

    def from_record(self, record: Mapping) -> FocusQuery:
        qid = records.record_field(record, "index", self.name)
        question = str(records.record_field(record, "question", self.name))
        records.check_no_image_token(question, self.name, qid)
        hint = record.get("hint")
        hint = None if is_empty_cell(hint) else str(hint)
        cells = option_cells(record)
        if not cells:
            raise RecordError(f"{self.name} record {qid!r}: no options (column A is empty)")
        options = tuple(f"{letter}. {text}" for letter, text in cells.items())
        text = "\n".join((f"{hint}\n{question}" if hint is not None else question, *options))
        instruction = None
        if self.single_pred_prompt:
            instruction = OPTION_INSTRUCTION if self.lang == "en" else OPTION_INSTRUCTION_CN
            text = f"{text}\n{instruction}"
        extra = {k: record[k] for k in ("answer", "category", "l2-category", "split", "source") if k in record}
        extra.update(round_id=record.get("round_id", 0), options=list(cells.values()),
                     option_char=list(record.get("option_char", cells)))
        return FocusQuery(benchmark=self.name, question_id=qid, question=question, text=text, options=options,
                          option_texts=tuple(cells.values()), hint=hint, instruction=instruction, prompt=question,
                          image=record.get("image"), image_base64=True, extra=extra)

    def _context_question(self, q: FocusQuery) -> str:
        return f"{q.hint}\n{q.question}" if q.hint is not None else q.question

    def box_prompt(self, q: FocusQuery) -> str:
        return f"{IMAGE}\n{self._context_question(q)}\n{BOX_REQUEST}."

    def micro_box_prompt(self, q: FocusQuery) -> str:
        # The original rebuilt this turn as "<image>\n{hint}\n..." with the raw hint, printing "nan"
        # for questions without one; we drop the hint line then.
        if q.hint is None:
            return super().box_prompt(q)
        return f"{IMAGE}\n{q.hint}\n{BOX_REQUEST}: {q.question}"

    def score_prompt(self, q: FocusQuery) -> str:
        return f"{IMAGE}\n{COMBINE} {self._context_question(q)} {SHORT_ANSWER}."


def mmbench_rotations(row: Mapping) -> list[dict]:
    """LLaVA's ``--all-rounds``: one row per rotation of the options, as ``model_vqa_mmbench`` asks them.

    Round k shows the options rotated left by k under the same letters (round 1 of A=cat, B=dog,
    C=cow asks A=dog, B=cow, C=cat). As in LLaVA, ``index`` is unchanged and ``round_id`` = k
    tells the rounds apart (LLaVA does not offset the index; MMBench's own circular TSVs carry
    their rotations as separate rows at index + k * 1_000_000). ``option_char`` is LLaVA's rotated
    letter list, and ``answer``, when present, is moved to the letter its option now has.
    """
    letters = list(option_cells(row))
    texts = [row[letter] for letter in letters]
    n = len(letters)
    rows = []
    for k in range(max(n, 1)):
        new = dict(row)
        for i, letter in enumerate(letters):
            new[letter] = texts[(i + k) % n]
        new["round_id"] = k
        new["option_char"] = letters[k:] + letters[:k]
        answer = row.get("answer")
        if isinstance(answer, str) and answer in letters:
            new["answer"] = letters[(letters.index(answer) - k) % n]
        rows.append(new)
    return rows


@register
class MMBenchBenchmark(Benchmark):
    name = "mmbench"
    protocol_class = MMBenchProtocol
    typed_questions = False  # a TSV row with a base64 image: use the runner
    layout = Layout("mmbench", "mmbench_dev_20230712", suffix=".tsv", images=None,
                    runner=("dualfocus.eval.model_vqa_mmbench", "--single-pred-prompt"), demo_split="mmbench_demo")

    def __init__(self, all_rounds: bool = False, single_pred_prompt: bool = True, lang: str = "en"):
        super().__init__(single_pred_prompt=single_pred_prompt, lang=lang)
        self.all_rounds = all_rounds

    def read_questions(self, path: str) -> list[dict]:
        frame = pd.read_table(os.path.expanduser(path))
        missing = {"index", "question", "A", "image"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: not an MMBench TSV, missing column(s) {sorted(missing)}")
        return [jsonable(row) for row in frame.to_dict(orient="records")]

    def expand(self, rows: list[dict]) -> list[dict]:
        if not self.all_rounds:
            return rows
        return [rotated for row in rows for rotated in mmbench_rotations(row)]

    def question_id(self, row: Mapping):
        return row.get("index")

    def round_id(self, row: Mapping) -> int:
        return int(row.get("round_id") or 0)

    def fallback_prompt(self, row: Mapping) -> str:
        return str(row.get("question", ""))

    def answer_fields(self, row: Mapping, query: FocusQuery | None) -> dict:
        options = list(query.option_texts) if query is not None else list(option_cells(row).values())
        letters = [chr(ord("A") + i) for i in range(len(options))]
        return {"round_id": self.round_id(row), "options": options,
                "option_char": list(row.get("option_char") or letters)}

    def score_run(self, result_file: str, question_file: str, annotation_file: str | None, upload: str) -> dict:
        """The upload is <upload>/<result file stem>.xlsx (answers_upload/<split>/<ckpt>/merge.xlsx)."""
        return main(["--annotation-file", question_file, "--result-dir", os.path.dirname(result_file),
                     "--upload-dir", upload, "--experiment", os.path.splitext(os.path.basename(result_file))[0]])


def predicted_letter(text: str, options: dict[str, str]) -> str | None:
    """The option a free-text prediction names (by letter or exact text), or None."""
    return option_letter(text, tuple(options), tuple(options.values()))


def load_predictions(path: str) -> tuple[dict[str, str], int]:
    """question_id -> answer text (round 0 only); and the error count. An answer given twice for one
    (question, round) fails (LLaVA kept the last).

    With LLaVA's --all-rounds a record per option rotation shares the question id; only round 0
    keeps the TSV's option order, so only it is comparable to the TSV's `answer` column."""
    predictions, errors = {}, 0
    records = sc.read_jsonl(path)
    sc.check_unique(records, lambda r: (sc.qid_key(r["question_id"]), int(r.get("round_id") or 0)), "question/round")
    for record in records:
        if record.get("round_id", 0) not in (0, None):
            continue
        errors += sc.is_error(record)
        predictions[sc.qid_key(record["question_id"])] = sc.answer_text(record)
    return predictions, errors


# Characters an xlsx cell cannot hold (openpyxl raises IllegalCharacterError on them).
_XLSX_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def submission_frame(df: pd.DataFrame, predictions: dict[str, str]) -> pd.DataFrame:
    """The TSV minus hint/category/source/image/comment/l2-category, with `prediction` after D.

    Control characters (a model can write them) are removed from predictions: xlsx cannot hold them.
    """
    out = df.drop(columns=[c for c in DROPPED_COLUMNS if c in df.columns])
    anchor = max((out.columns.get_loc(c) for c in OPTION_LETTERS if c in out.columns), default=len(out.columns) - 1)
    preds = [predictions.get(sc.qid_key(i)) for i in df["index"]]
    out.insert(anchor + 1, "prediction", [_XLSX_ILLEGAL.sub("", p) if isinstance(p, str) else p for p in preds])
    return out


def has_answers(df: pd.DataFrame) -> bool:
    return "answer" in df.columns and not df["answer"].map(is_empty_cell).all()


def score(df: pd.DataFrame, predictions: dict[str, str]) -> dict:
    """Vanilla and circular accuracy, overall and per category / l2-category."""
    right = {}
    for _, row in df.iterrows():
        text = predictions.get(sc.qid_key(row["index"]))
        right[int(row["index"])] = text is not None and predicted_letter(text, option_cells(row)) == row["answer"]
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
        "n_unanswered_rows": int(sum(sc.qid_key(i) not in predictions for i in df["index"])),
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
                "vanilla": sc.CategoryScore(str(name), int(vanilla.loc[name, "size"]), float(vanilla.loc[name, "sum"])).to_dict()
                if name in vanilla.index else None,
                "circular": sc.CategoryScore(str(name), int(circular.loc[name, "size"]), float(circular.loc[name, "sum"])).to_dict(),
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
        rows = [sc.CategoryScore.from_dict(e["vanilla"]) if e["vanilla"] else sc.CategoryScore(e["name"]) for e in entries]
        circular = [f"{e['circular']['accuracy']:.2f}" for e in entries]
        groups = [str(e["circular"]["count"]) for e in entries]
        lines += ["", sc.format_table(f"Per {column} (vanilla n/acc, circular groups/acc)", rows,
                                   {"groups": groups, "circ(%)": circular})]
    return "\n".join(lines)


@sc.cli_errors("convert_mmbench_for_submission")
def main(argv: list[str] | None = None) -> dict:
    """Write the MMBench submission xlsx; score vanilla and circular accuracy when answers are known."""
    flags = {"--annotation-file": "MMBench TSV", "--result-dir": "folder holding <experiment>.jsonl",
             "--upload-dir": "folder for <experiment>.xlsx", "--experiment": "answer file name without .jsonl"}
    args = sc.scorer_parser(main.__doc__, flags, output_json="<result-dir>/<experiment>_score.json").parse_args(argv)

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
    sc.write_json_atomic(out, result)
    print(f"scores written to {out}")
    return result
