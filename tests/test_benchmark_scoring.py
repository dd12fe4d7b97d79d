"""The benchmarks' official scorers and submission converters (dualfocus.benchmarks.*, called by
LLaVA's CLI names), and the shard merge, on tiny fixtures in the official formats.

Expected numbers are computed by hand in the comments next to them."""

import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from dualfocus.benchmarks import gqa, mmbench, textvqa
from dualfocus.benchmarks.vqa_accuracy import answer_scores, normalize_answer, vqa_accuracy
from dualfocus.eval import (
    convert_gqa_for_eval,
    convert_mmbench_for_submission,
    convert_seed_for_submission,
    eval_textvqa,
    merge,
)
from dualfocus.focus.protocols import option_letter

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture(*parts):
    return os.path.join(FIXTURES, *parts)


def write_jsonl(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


# --------------------------------------------------------------------------- TextVQA normalization


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The poster shows a 10% discount.", "poster shows 10% discount"),  # articles, final period
        ("Two", "2"),  # number words
        ("none", "0"),
        ("dont", "don't"),  # contractions restored
        ("Im", "im"),  # QUIRK: the table's key is "Im", answers are lower-cased first
        ("1,000", "1000"),  # commas deleted by word_tokenize
        ("3.5", "3.5"),  # a period before a digit stays
        ("route 66.", "route 66"),  # QUIRK: look-behind typo drops a period after a digit too
        ("hello-world", "hello world"),  # punctuation without a space next to it -> space
        ("x-y -", "xy"),  # QUIRK: one spaced '-' anywhere deletes every '-'
        ("the dog's bone", "dog 's bone"),  # possessive split off
        ("Coca\tCola\n", "coca cola"),
        ("what?!", "what"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_period_strip_stops_after_32_periods():
    # QUIRK: re.UNICODE (32) was passed as re.sub's count: the 33rd period survives.
    assert normalize_answer("." * 33) == "."
    assert normalize_answer("." * 32) == ""


@pytest.mark.parametrize(
    "answers, prediction, expected",
    [
        (["yes"] * 2 + ["no"] * 8, "yes", 0.6),  # (2 * 1/3 + 8 * 2/3) / 10
        (["yes"] * 2 + ["no"] * 8, "no", 1.0),
        (["ale"] * 3 + ["stone"] * 7, "ale", 0.9),  # (3 * 2/3 + 7 * 1) / 10
        (["a1"] + ["b"] * 9, "a1", 0.3),  # (1 * 0 + 9 * 1/3) / 10
        (["b"] * 10, "c", 0.0),
        (["Two"] * 4 + ["2"] * 6, "2", 1.0),  # human answers are normalized too
    ],
)
def test_ten_annotator_accuracy(answers, prediction, expected):
    assert vqa_accuracy(prediction, answers) == pytest.approx(expected)


def test_answer_scores_needs_ten_answers():
    with pytest.raises(ValueError, match="exactly 10"):
        answer_scores(["a"] * 9)


@pytest.mark.parametrize(
    "prompt, question",
    [
        ("What is it?\nReference OCR token: A, B\nAnswer the question using a single word or phrase.", "what is it?"),
        ("Reference OCR token: A, B\nWhat is it?\nAnswer briefly.", "what is it?"),
        ("What is it?\nAnswer the question using a single word or phrase.", "what is it?"),
        ("OCR tokens: a, b. Question: What is it? Short answer:", "what is it?"),
    ],
)
def test_question_from_prompt(prompt, question):
    assert textvqa.question_from_prompt(prompt) == question


def test_eval_textvqa_cli(tmp_path, capsys):
    out = tmp_path / "score.json"
    [result] = eval_textvqa.main([
        "--annotation-file", fixture("textvqa", "TextVQA_0.5.1_val.json"),
        "--result-file", fixture("textvqa", "answers.jsonl"),
        "--output-json", str(out),
    ])
    # 1.0 (8 x dakota) + 0.6 + 0.9 + 1.0 ("two" -> "2") + 0.0 (error record) over 5 = 70%
    assert result["accuracy"] == pytest.approx(70.0)
    assert result["samples"] == 5 and result["n_errors"] == 1
    printed = capsys.readouterr().out
    assert "Accuracy: 70.00%" in printed and "Samples: 5" in printed
    saved = json.loads(out.read_text())
    assert saved["accuracy"] == pytest.approx(70.0)
    assert {r["name"]: r["count"] for r in saved["categories"]} == {"answered": 4, "error records": 1}


def test_eval_textvqa_result_dir(tmp_path):
    shutil.copy(fixture("textvqa", "answers.jsonl"), tmp_path / "ckpt_a.jsonl")
    write_jsonl(tmp_path / "ckpt_b.jsonl", [json.loads(line) for line in open(fixture("textvqa", "answers.jsonl"))][:1])
    (tmp_path / "notes.txt").write_text("not scored")
    results = eval_textvqa.main(["--annotation-file", fixture("textvqa", "TextVQA_0.5.1_val.json"),
                                 "--result-dir", str(tmp_path)])
    # ckpt_b answers 1 of the 5 annotated questions: the 4 others count as wrong (issue 14, item 11)
    assert [(r["experiment"], r["accuracy"]) for r in results] == [("ckpt_a", pytest.approx(70.0)), ("ckpt_b", 20.0)]
    assert results[1]["samples"] == 5 and results[1]["n_unanswered"] == 4
    assert (tmp_path / "ckpt_b_score.json").exists()


def test_eval_textvqa_unmatched_record_fails(tmp_path):
    answers = tmp_path / "a.jsonl"
    write_jsonl(answers, [{"question_id": "ffff", "prompt": "Who?\nAnswer briefly.", "text": "x"}])
    with pytest.raises(SystemExit, match="match no annotation"):
        eval_textvqa.main(["--annotation-file", fixture("textvqa", "TextVQA_0.5.1_val.json"),
                           "--result-file", str(answers)])


def test_eval_textvqa_subprocess_default_output(tmp_path):
    result_file = tmp_path / "merge.jsonl"
    shutil.copy(fixture("textvqa", "answers.jsonl"), result_file)
    proc = subprocess.run(
        [sys.executable, "-m", "dualfocus.eval.eval_textvqa",
         "--annotation-file", fixture("textvqa", "TextVQA_0.5.1_val.json"), "--result-file", str(result_file)],
        capture_output=True, text=True, check=True,
    )
    assert "Accuracy: 70.00%" in proc.stdout
    assert json.loads((tmp_path / "merge_score.json").read_text())["samples"] == 5


# --------------------------------------------------------------------------- SEED-Bench


def test_seed_per_type_and_upload(tmp_path, capsys):
    upload = tmp_path / "upload" / "exp.jsonl"
    out = tmp_path / "seed.json"
    result = convert_seed_for_submission.main([
        "--annotation-file", fixture("seed", "SEED-Bench.json"),
        "--result-file", fixture("seed", "answers.jsonl"),
        "--result-upload-file", str(upload), "--output-json", str(out),
    ])
    printed = capsys.readouterr().out
    # Scene Understanding: A right, C vs B wrong -> 1/2; Counting 1/1; Text Understanding: error
    # record -> 0/1; Action Recognition (video, no answer) -> 0/1. Total 2/5, image 2/4, video 0/1.
    for line in ["Scene Understanding: 50.00%", "Instances Counting: 100.00%", "Text Understanding: 0.00%",
                 "Action Recognition: 0.00%", "Total accuracy: 40.00%", "image accuracy: 50.00%",
                 "video accuracy: 0.00%"]:
        assert line in printed
    assert printed.index("image accuracy") < printed.index("video accuracy")
    assert result["image_accuracy"] == pytest.approx(50.0)
    assert result["n_errors"] == 1 and result["unanswered"] == {"video": 1}
    rows = [json.loads(line) for line in upload.read_text().splitlines()]
    # annotation ids (strings) although the answers hold ints; the unanswered video question is left out
    assert rows == [{"question_id": "101669", "prediction": "A"}, {"question_id": "101670", "prediction": "C"},
                    {"question_id": "101671", "prediction": "D"}, {"question_id": "101672", "prediction": ""}]
    assert json.loads(out.read_text())["question_types"][0]["name"] == "Scene Understanding"


def test_seed_without_video_questions(tmp_path, capsys):
    with open(fixture("seed", "SEED-Bench.json")) as f:
        data = json.load(f)
    data["questions"] = [q for q in data["questions"] if q["data_type"] == "image"]
    annotation = tmp_path / "SEED-Bench-image.json"
    annotation.write_text(json.dumps(data))
    result = convert_seed_for_submission.main([
        "--annotation-file", str(annotation), "--result-file", fixture("seed", "answers.jsonl"),
        "--result-upload-file", str(tmp_path / "up.jsonl"), "--output-json", str(tmp_path / "s.json"),
    ])
    printed = capsys.readouterr().out
    assert "Total accuracy: 50.00%" in printed and "video accuracy" not in printed
    assert result["video_accuracy"] is None and result["unanswered"] == {}


# --------------------------------------------------------------------------- MMBench


def run_mmbench(tmp_path, annotation):
    result_dir = tmp_path / "answers"
    result_dir.mkdir(exist_ok=True)
    shutil.copy(fixture("mmbench", "merge.jsonl"), result_dir / "exp.jsonl")
    return convert_mmbench_for_submission.main([
        "--annotation-file", str(annotation), "--result-dir", str(result_dir),
        "--upload-dir", str(tmp_path / "upload"), "--experiment", "exp",
    ])


def test_mmbench_vanilla_vs_circular(tmp_path, capsys):
    result = run_mmbench(tmp_path, fixture("mmbench", "mmbench_dev_mini.tsv"))
    printed = capsys.readouterr().out
    # Originals 0, 1, 2 right ('yes' matches option A by text), 3 is an error record -> 3/4.
    # Circular: group 0 all right; group 1 fails at rotation 2000001; group 2 right ('B.'); group 3
    # fails (error record) -> 2/4.
    assert result["vanilla_accuracy"] == pytest.approx(75.0)
    assert result["circular_accuracy"] == pytest.approx(50.0)
    assert "Vanilla accuracy: 75.00%" in printed and "Circular accuracy: 50.00%" in printed
    assert result["n_errors"] == 1 and result["n_groups"] == 4 and result["n_rows"] == 11
    l2 = {e["name"]: (e["vanilla"]["accuracy"], e["circular"]["accuracy"]) for e in result["categories"]["l2-category"]}
    assert l2 == {"CP": (100.0, 100.0), "FP-S": (100.0, 50.0), "RR": (0.0, 0.0)}
    assert {e["name"] for e in result["categories"]["category"]} == {
        "attribute_recognition", "image_topic", "object_localization", "spatial_relationship"}
    assert json.loads((tmp_path / "answers" / "exp_score.json").read_text())["circular_accuracy"] == 50.0

    sheet = pd.read_excel(tmp_path / "upload" / "exp.xlsx", engine="openpyxl")
    assert list(sheet.columns) == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert sheet.set_index("index").loc[1000002, "prediction"] == "B."
    assert pd.isna(sheet.set_index("index").loc[3, "prediction"])  # error record: empty prediction


def test_mmbench_test_split_without_answers(tmp_path, capsys):
    df = pd.read_table(fixture("mmbench", "mmbench_dev_mini.tsv"))
    annotation = tmp_path / "mmbench_test_mini.tsv"
    df.drop(columns=["answer", "split"]).to_csv(annotation, sep="\t", index=False)
    result = run_mmbench(tmp_path, annotation)
    assert result["has_answers"] is False and "vanilla_accuracy" not in result
    sheet = pd.read_excel(tmp_path / "upload" / "exp.xlsx", engine="openpyxl")
    assert list(sheet.columns) == ["index", "question", "A", "B", "C", "D", "prediction"]
    assert "no local score" in capsys.readouterr().out


def test_mmbench_predicted_letter():
    options = {"A": "cat", "B": "dog"}
    predicted = mmbench.predicted_letter
    assert [predicted(t, options) for t in ["B", "(B)", "B. dog", "Dog.", "C", "a cat", ""]] == [
        "B", "B", "B", "B", None, None, None]


def test_option_letter_is_the_one_rule():
    assert option_letter(" A.\n", "AB") == "A"
    assert option_letter("A) yes", "AB") == "A"
    assert option_letter("Apple", "AB") is None
    assert option_letter("D", "ABC") is None
    assert option_letter("b: dog", "AB") == "B" and option_letter("Dog.", "AB", ("cat", "dog")) == "B"


# --------------------------------------------------------------------------- GQA


def test_gqa_letters_to_answers_and_accuracy(tmp_path, capsys):
    dst = tmp_path / "testdev_balanced_predictions.json"
    result = convert_gqa_for_eval.main([
        "--src", fixture("gqa", "answers.jsonl"), "--dst", str(dst),
        "--questions", fixture("gqa", "llava_gqa_testdev_balanced_mcq.jsonl"),
        "--gqa-annotations", fixture("gqa", "testdev_balanced_questions.json"),
        "--output-json", str(tmp_path / "gqa.json"),
    ])
    predictions = json.loads(dst.read_text())
    # B -> 'no' (options in the question text), C -> 'girl', 'A.' -> 'white' (options list),
    # error -> '', 'Yes.' (already text) -> 'yes'
    assert predictions == [
        {"questionId": "201307251", "prediction": "no"}, {"questionId": "201640614", "prediction": "girl"},
        {"questionId": "20968379", "prediction": "white"}, {"questionId": "202225914", "prediction": ""},
        {"questionId": "20602662", "prediction": "yes"},
    ]
    assert result["conversions"] == {"letter": 3, "error": 1, "text": 1}
    # right: 201307251, 20968379, 20602662 of 6 balanced questions (201307252 unanswered) -> 50%
    assert result["accuracy"] == pytest.approx(50.0) and result["n_unanswered"] == 1
    assert {r["name"]: round(r["accuracy"], 2) for r in result["structural"]} == {
        "choose": 0.0, "query": 33.33, "verify": 100.0}
    assert {r["name"]: r["count"] for r in result["semantic"]} == {"attr": 3, "obj": 1, "rel": 2}
    printed = capsys.readouterr().out
    assert "Accuracy: 50.00%" in printed and "Per structural type" in printed
    assert json.loads((tmp_path / "gqa.json").read_text())["accuracy"] == pytest.approx(50.0)


def test_gqa_letter_without_options_fails(tmp_path):
    with pytest.raises(SystemExit, match="pass --questions"):
        convert_gqa_for_eval.main(["--src", fixture("gqa", "answers.jsonl"), "--dst", str(tmp_path / "p.json")])


def test_gqa_question_options_layouts():
    assert gqa.question_options({"question": "Q?\nA. yes\nB. no"}) == {"A": "yes", "B": "no"}
    assert gqa.question_options({"text": "Q?\nA. a b\nB. c"}) == {"A": "a b", "B": "c"}
    assert gqa.question_options({"options": ["x", "y"]}) == {"A": "x", "B": "y"}
    assert gqa.question_options({"question": "Q?"}) == {}


# --------------------------------------------------------------------------- merge


def answer(qid, text="A", **extra):
    return {"question_id": qid, "prompt": "q", "text": text, "answer_id": f"a{qid}", "model_id": "m",
            "metadata": {}, **extra}


def test_merge_concatenates_and_repairs_truncated_last_line(tmp_path, capsys):
    write_jsonl(tmp_path / "2_0.jsonl", [answer(0), answer(1)])
    with open(tmp_path / "2_1.jsonl", "w") as f:
        f.write(json.dumps(answer(2)) + "\n" + json.dumps(answer(3))[:25])  # killed mid-write
    questions = tmp_path / "q.jsonl"
    write_jsonl(questions, [{"question_id": i} for i in range(3)])
    out = tmp_path / "merge.jsonl"
    assert merge.main(["--inputs", str(tmp_path / "2_*.jsonl"), "--output", str(out),
                       "--question-file", str(questions)]) == 0
    assert [r["question_id"] for r in merge.read_answers(str(out))] == [0, 1, 2]
    assert "half-written last line" in capsys.readouterr().out
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_merge_fails_listing_missing_and_duplicate_ids(tmp_path):
    write_jsonl(tmp_path / "2_0.jsonl", [answer(0), answer(1)])
    write_jsonl(tmp_path / "2_1.jsonl", [answer(1), answer(4)])
    questions = tmp_path / "q.jsonl"
    write_jsonl(questions, [{"question_id": i} for i in range(4)])
    out = tmp_path / "merge.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "dualfocus.eval.merge", "--inputs", str(tmp_path / "2_0.jsonl"),
         str(tmp_path / "2_1.jsonl"), "--output", str(out), "--question-file", str(questions)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1 and not out.exists()
    assert re.search(r"1 duplicated question id\(s\): 1 x2", proc.stderr)
    assert "2 question id(s) without an answer: 2, 3" in proc.stderr
    assert "1 answer id(s) not in the question file: 4" in proc.stderr


def test_merge_api_duplicates_without_question_file(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [answer("x"), answer("x")])
    with pytest.raises(merge.MergeError, match="duplicated question id"):
        merge.merge_answers([str(tmp_path / "a.jsonl")])


def test_merge_corrupt_middle_line_fails(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(answer(0)) + "\n{broken\n" + json.dumps(answer(1)) + "\n")
    with pytest.raises(merge.MergeError, match="corrupt answer line"):
        merge.read_answers(str(tmp_path / "a.jsonl"))


def test_merge_question_file_layouts(tmp_path):
    # MMBench TSV: ids from `index`; every row answered.
    recs = merge.read_answers(fixture("mmbench", "merge.jsonl"))
    write_jsonl(tmp_path / "mm.jsonl", recs)
    ids = merge.read_question_ids(fixture("mmbench", "mmbench_dev_mini.tsv"))
    assert len(merge.merge_answers([str(tmp_path / "mm.jsonl")], ids)) == 11
    # LLaVA's TextVQA file repeats an image id as question id for each question on that image.
    ids = merge.read_question_ids(fixture("textvqa", "llava_textvqa_val_v051_ocr.jsonl"))
    assert len(merge.merge_answers([fixture("textvqa", "answers.jsonl")], ids)) == 5
    # SEED json: the video question is missing from an image-only run.
    with pytest.raises(merge.MergeError, match="without an answer: 1$"):
        merge.merge_answers([fixture("seed", "answers.jsonl")], merge.read_question_ids(fixture("seed", "SEED-Bench.json")))


def test_merge_rounds_are_not_duplicates(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [answer(7, round_id=0), answer(7, round_id=1), answer(8, round_id=0)])
    assert len(merge.merge_answers([str(tmp_path / "a.jsonl")], [7, 8])) == 3


def test_write_jsonl_atomic_keeps_old_file_on_failure(tmp_path):
    out = tmp_path / "m.jsonl"
    merge.write_jsonl_atomic(str(out), [answer(1)])

    def bad():
        yield answer(2)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        merge.write_jsonl_atomic(str(out), bad())
    assert [r["question_id"] for r in merge.read_answers(str(out))] == [1]
    assert os.listdir(tmp_path) == ["m.jsonl"]


def test_mmbench_xlsx_drops_control_characters(tmp_path):
    """A model can write control characters; xlsx cannot hold them (openpyxl raises). They are dropped."""
    import pandas as pd

    from dualfocus.benchmarks.mmbench import submission_frame

    df = pd.DataFrame({"index": [0, 1], "question": ["q0", "q1"], "A": ["a", "a"], "B": ["b", "b"]})
    frame = submission_frame(df, {"0": "A\x0b\x01", "1": "B"})
    out = tmp_path / "x.xlsx"
    frame.to_excel(out, index=False, engine="openpyxl")
    assert pd.read_excel(out)["prediction"].tolist() == ["A", "B"]


# --------------------------------------------------------------------------- files scored directly (issue 14)
def read_records(*parts):
    return [json.loads(line) for line in open(fixture(*parts))]


def test_textvqa_counts_questions_not_records(tmp_path, capsys):
    """3 questions, 4 records (one question answered twice): refused, not 'Samples: 4'."""
    records = read_records("textvqa", "answers.jsonl")[:3]
    questions = tmp_path / "q.jsonl"
    write_jsonl(questions, read_records("textvqa", "llava_textvqa_val_v051_ocr.jsonl")[:3])
    args = ["--annotation-file", fixture("textvqa", "TextVQA_0.5.1_val.json"), "--question-file", str(questions)]
    write_jsonl(tmp_path / "dup.jsonl", [*records, records[1]])
    with pytest.raises(SystemExit, match=r"eval_textvqa: error: 1 question\(s\) answered more than once: "
                                         r"\('003a8ae2ef43b901', 'what does the small white text spell\?'\) x2"):
        eval_textvqa.main([*args, "--result-file", str(tmp_path / "dup.jsonl")])
    write_jsonl(tmp_path / "two.jsonl", records[:2])  # the third question has no answer
    [result] = eval_textvqa.main([*args, "--result-file", str(tmp_path / "two.jsonl")])
    assert result["samples"] == 3 and result["n_unanswered"] == 1
    assert result["accuracy"] == pytest.approx(100.0 * (1.0 + 0.6) / 3)
    assert "note: 1 question(s) have no answer record and count as wrong" in capsys.readouterr().out


def test_seed_refuses_a_question_answered_twice(tmp_path):
    records = read_records("seed", "answers.jsonl")
    write_jsonl(tmp_path / "dup.jsonl", [*records, {**records[0], "text": "D"}])
    with pytest.raises(SystemExit, match=r"convert_seed_for_submission: error: 1 question\(s\) answered more than "
                                         r"once: '101669' x2; merge the shards"):
        convert_seed_for_submission.main(["--annotation-file", fixture("seed", "SEED-Bench.json"),
                                          "--result-file", str(tmp_path / "dup.jsonl"),
                                          "--result-upload-file", str(tmp_path / "up.jsonl")])
    assert not (tmp_path / "up.jsonl").exists()


def test_gqa_refuses_duplicates_and_counts_unanswered_questions(tmp_path, capsys):
    records = read_records("gqa", "answers.jsonl")
    base = ["--dst", str(tmp_path / "pred.json"), "--questions", fixture("gqa", "llava_gqa_testdev_balanced_mcq.jsonl")]
    write_jsonl(tmp_path / "dup.jsonl", [*records, records[0]])
    with pytest.raises(SystemExit, match=r"convert_gqa_for_eval: error: 1 question\(s\) answered more than once"):
        convert_gqa_for_eval.main(["--src", str(tmp_path / "dup.jsonl"), *base])
    write_jsonl(tmp_path / "less.jsonl", records[1:])
    result = convert_gqa_for_eval.main(["--src", str(tmp_path / "less.jsonl"), *base])
    n_questions = len(read_records("gqa", "llava_gqa_testdev_balanced_mcq.jsonl"))
    assert result["n_unanswered_questions"] == n_questions - len(records) + 1
    assert f"{n_questions - len(records) + 1} question(s) of" in capsys.readouterr().out


def test_mmbench_refuses_a_question_round_answered_twice(tmp_path):
    records = read_records("mmbench", "merge.jsonl")
    (tmp_path / "answers").mkdir()
    write_jsonl(tmp_path / "answers" / "exp.jsonl", [*records, {**records[0], "text": "B"}])
    with pytest.raises(SystemExit, match=r"1 question/round\(s\) answered more than once"):
        convert_mmbench_for_submission.main([
            "--annotation-file", fixture("mmbench", "mmbench_dev_mini.tsv"), "--result-dir", str(tmp_path / "answers"),
            "--upload-dir", str(tmp_path / "upload"), "--experiment", "exp"])
    assert not (tmp_path / "upload" / "exp.xlsx").exists()


def no_space_on_fsync(monkeypatch):
    import errno

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)


def test_seed_on_a_full_disk_keeps_the_old_upload_whole_and_says_so(tmp_path, monkeypatch):
    """Issue 14, item 10: the upload file was left cut at 4,096 bytes."""
    upload = tmp_path / "up.jsonl"
    upload.write_text('{"question_id": "old", "prediction": "A"}\n')
    no_space_on_fsync(monkeypatch)
    with pytest.raises(SystemExit) as e:
        convert_seed_for_submission.main(["--annotation-file", fixture("seed", "SEED-Bench.json"),
                                          "--result-file", fixture("seed", "answers.jsonl"),
                                          "--result-upload-file", str(upload)])
    assert e.value.code.startswith("convert_seed_for_submission: error: no space left on the device writing ")
    assert "\n" not in e.value.code and str(upload) in e.value.code
    assert upload.read_text() == '{"question_id": "old", "prediction": "A"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["up.jsonl"]  # no temporary file left behind


def test_outputs_follow_the_umask(tmp_path):
    """Issue 14, item 13: mkstemp made every output 0600; colleagues could not read them."""
    old = os.umask(0o022)
    try:
        upload, out = tmp_path / "up.jsonl", tmp_path / "s.json"
        convert_seed_for_submission.main(["--annotation-file", fixture("seed", "SEED-Bench.json"),
                                          "--result-file", fixture("seed", "answers.jsonl"),
                                          "--result-upload-file", str(upload), "--output-json", str(out)])
        assert merge.main(["--inputs", fixture("seed", "answers.jsonl"), "--output", str(tmp_path / "m.jsonl")]) == 0
        os.umask(0o027)
        eval_textvqa.main(["--annotation-file", fixture("textvqa", "TextVQA_0.5.1_val.json"),
                           "--result-file", fixture("textvqa", "answers.jsonl"), "--output-json", str(tmp_path / "t.json")])
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"up.jsonl": 0o644, "s.json": 0o644, "m.jsonl": 0o644, "t.json": 0o640}


# --------------------------------------------------------------------------- merge, loud (issue 14, item 12)
def test_merge_a_question_row_without_an_id_is_a_clear_message(tmp_path, capsys):
    write_jsonl(tmp_path / "1_0.jsonl", [answer(0)])
    questions = tmp_path / "q.jsonl"
    write_jsonl(questions, [{"question_id": 0}, {"text": "no id here"}])
    assert merge.main(["--inputs", str(tmp_path / "1_0.jsonl"), "--output", str(tmp_path / "m.jsonl"),
                       "--question-file", str(questions)]) == 1
    err = capsys.readouterr().err
    assert "q.jsonl: question 2 has no 'question_id' (its keys: text)" in err and "KeyError" not in err


def test_merge_against_a_tsv_without_an_index_column_is_a_clear_message(tmp_path, capsys):
    write_jsonl(tmp_path / "1_0.jsonl", [answer(0)])
    (tmp_path / "q.tsv").write_text("id\tquestion\n0\twhat?\n")
    assert merge.main(["--inputs", str(tmp_path / "1_0.jsonl"), "--output", str(tmp_path / "m.jsonl"),
                       "--question-file", str(tmp_path / "q.tsv")]) == 1
    err = capsys.readouterr().err
    assert "q.tsv: no 'index' column (its columns: id, question)" in err and "Traceback" not in err


def test_merge_without_a_question_file_fails_on_a_missing_shard_or_a_cut_line(tmp_path, capsys):
    write_jsonl(tmp_path / "3_0.jsonl", [answer(0)])
    write_jsonl(tmp_path / "3_2.jsonl", [answer(2)])
    out = tmp_path / "m.jsonl"
    assert merge.main(["--inputs", str(tmp_path / "3_*.jsonl"), "--output", str(out)]) == 1
    assert f"1 shard file(s) missing: {tmp_path / '3_1.jsonl'}" in capsys.readouterr().err
    with open(tmp_path / "3_1.jsonl", "w") as f:
        f.write(json.dumps(answer(1)) + "\n" + json.dumps(answer(5))[:20])
    assert merge.main(["--inputs", str(tmp_path / "3_*.jsonl"), "--output", str(out)]) == 1
    assert "3_1.jsonl:2: half-written last line (a killed run)" in capsys.readouterr().err
    assert not out.exists()


def test_merge_checks_every_round_of_an_all_rounds_mmbench_run(tmp_path, capsys):
    from dualfocus.benchmarks import get_benchmark

    tsv = os.path.join(os.path.dirname(__file__), "..", "playground", "demo", "mmbench", "mmbench_demo.tsv")
    bench = get_benchmark("mmbench", all_rounds=True)
    rows = bench.expand(bench.read_questions(tsv))
    records = [answer(r["index"], round_id=r["round_id"]) for r in rows]
    write_jsonl(tmp_path / "1_0.jsonl", records[:2] + records[3:] + [answer(0, round_id=9)])  # (0, 2) lost
    assert merge.main(["--inputs", str(tmp_path / "1_0.jsonl"), "--output", str(tmp_path / "m.jsonl"),
                       "--question-file", tsv]) == 1
    err = capsys.readouterr().err
    assert "1 question id(s) without an answer: 0 (round 2)" in err
    assert "1 answer id(s) not in the question file: 0 (round 9)" in err
    write_jsonl(tmp_path / "1_0.jsonl", records)
    assert merge.main(["--inputs", str(tmp_path / "1_0.jsonl"), "--output", str(tmp_path / "m.jsonl"),
                       "--question-file", tsv]) == 0


def test_merge_on_a_full_disk_is_one_message(tmp_path, monkeypatch, capsys):
    write_jsonl(tmp_path / "1_0.jsonl", [answer(0)])
    no_space_on_fsync(monkeypatch)
    assert merge.main(["--inputs", str(tmp_path / "1_0.jsonl"), "--output", str(tmp_path / "m.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("merge failed: no space left on the device writing ") and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["1_0.jsonl"]
