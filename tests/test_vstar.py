"""V*Bench (dualfocus.benchmarks.vstar): the release's test_questions.jsonl read into queries, the
official accuracy (per category; overall over questions), and runs through the registry: the runner
and merge via the demo, the launch script's defaults, serve.cli's protocol."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from side_env import required_env

from dualfocus import demo
from dualfocus.benchmarks import BENCHMARK_NAMES, RecordError, get_benchmark, get_protocol, vstar
from dualfocus.benchmarks.scoring import ScoreInputError
from dualfocus.focus.protocols import OPTION_INSTRUCTION
from dualfocus.serve import cli

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "playground" / "demo" / "vstar_bench"  # the release's layout, made by make_demo_data.py


def rows():
    return get_benchmark("vstar").read_questions(str(FIXTURE / "test_questions.jsonl"))


def test_reads_the_release_question_file():
    bench = get_benchmark("vstar")
    attribute, position = rows()
    q0, q1 = bench.to_query(attribute), bench.to_query(position)
    assert q0.question == "What is the color of the square?" and q0.letters == ("A", "B", "C", "D")
    assert q0.option_texts == ("blue", "red", "green", "yellow") and q0.options[1] == "(B) red"
    assert q0.instruction == OPTION_INSTRUCTION and q0.image == "direct_attributes/sa_demo1.jpg"
    assert q1.letters == ("A", "B") and q1.option_texts == ("left", "right")
    assert (bench.gold(attribute, q0), bench.gold(position, q1)) == ("B", "A")
    assert bench.load_image(q0, str(FIXTURE)).size == (64, 32)
    # The release's per-image annotation lists the right option first: it agrees with the jsonl's label.
    annotation = json.loads((FIXTURE / "direct_attributes" / "sa_demo1.json").read_text())
    assert annotation["options"][0] == q0.option_texts[q0.letters.index("B")] == "red"


def test_prompts_and_parsing_are_seeds():
    protocol, row = get_protocol("vstar"), rows()[0]
    q = protocol.from_record(row)
    assert protocol.macro_prompt(q) == "<image>\n" + row["text"]
    assert protocol.box_prompt(q) == ("<image>\nPlease provide the bounding box coordinate of the region this "
                                      "question asks: What is the color of the square?")
    assert [protocol.parse_answer(t, q) for t in ("(b)", "B.", "Red", "purple")] == ["B", "B", "B", "purple"]
    assert not protocol.is_valid("purple", q) and protocol.candidate_text("B", q) == "red"


@pytest.mark.parametrize("text", [
    "Which one? (A) x (B) y",  # options inline (another dataset's variant): not the release's lines
    "Which one?\n(B) x\n(A) y",
    "Which one?\nA. x\nB. y",
])
def test_other_layouts_are_record_errors(text):
    with pytest.raises(RecordError, match=r"vstar record 7: (no option lines|option line \d is .*, expected '\(A\) \.\.\.')"):
        get_protocol("vstar").from_record({"question_id": 7, "text": text})


def write_case(tmp_path, answers):
    """3 direct_attributes (labels A, B, C) and 2 relative_position (A, B) questions, and answer records."""
    labels = [("direct_attributes", "A"), ("direct_attributes", "B"), ("direct_attributes", "C"),
              ("relative_position", "A"), ("relative_position", "B")]
    questions = tmp_path / "test_questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "category": c, "label": label, "image": f"{c}/{i}.jpg",
                                             "text": "Q?\n(A) x\n(B) y\n(C) z"}) + "\n"
                                 for i, (c, label) in enumerate(labels)))
    result = tmp_path / "merge.jsonl"
    result.write_text("".join(json.dumps(r) + "\n" for r in answers))
    return str(questions), str(result)


def test_official_accuracy_per_category_and_over_questions(tmp_path, capsys):
    answers = [{"question_id": 0, "text": "A"},  # right
               {"question_id": 1, "text": "C"},  # wrong; question 2 has no record
               {"question_id": 3, "text": "A"},  # right
               {"question_id": 4, "text": "", "error": "boom"}]  # an error record is wrong
    questions, result = write_case(tmp_path, answers)
    scores = vstar.main(["--question-file", questions, "--result-file", result])
    by_name = {row["name"]: row for row in scores["categories"]}
    assert by_name["direct_attributes"]["accuracy"] == pytest.approx(100 / 3)  # 1 of 3
    assert by_name["relative_position"]["accuracy"] == 50.0  # 1 of 2
    assert scores["overall_accuracy"] == 40.0  # 2 of 5 questions (the mean of the categories would be 41.67)
    assert (scores["n_questions"], scores["n_unanswered"], scores["n_errors"]) == (5, 1, 1)
    printed = capsys.readouterr().out
    assert "direct_attributes: 33.33%\nrelative_position: 50.00%\nOverall accuracy: 40.00% (5 questions)" in printed
    assert json.loads((tmp_path / "merge_score.json").read_text())["overall_accuracy"] == 40.0


def test_a_question_answered_twice_or_without_a_label_fails(tmp_path):
    questions, result = write_case(tmp_path, [{"question_id": 0, "text": "A"}, {"question_id": 0, "text": "B"}])
    with pytest.raises(SystemExit, match="vstar: error: 1 question"):
        vstar.main(["--question-file", questions, "--result-file", result])
    Path(questions).write_text(json.dumps({"question_id": 0, "text": "Q?\n(A) x\n(B) y"}) + "\n")
    with pytest.raises(ScoreInputError, match="without question_id/category/label"):
        vstar.records_of(questions)


def test_the_registry_gives_scripts_and_cli_their_vstar():
    assert "vstar" in BENCHMARK_NAMES and "vstar" in cli.PROTOCOLS
    q = cli.make_query("What is the color of the square?", ["blue", "red"], "vstar")
    assert q.text == f"What is the color of the square?\n(A) blue\n(B) red\n{OPTION_INSTRUCTION}"
    out = subprocess.run([sys.executable, "-m", "dualfocus.benchmarks", "defaults", "vstar"], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "BENCH_FOLDER=vstar_bench\nDEFAULT_SPLIT=test_questions\n" in out
    assert "RUNNER=dualfocus.eval.model_vqa_loader\n" in out and "RUNNER_FLAGS=(--benchmark vstar)" in out


def test_runner_merge_and_score_through_the_demo(tiny_checkpoint, tmp_path):
    assert demo.FILES["vstar"] == ("vstar_bench/test_questions.jsonl", None)
    result = demo.run_demo(str(tmp_path / "out"), model_path=str(tiny_checkpoint), benchmarks=["vstar"],
                           max_new_tokens=4)["benchmarks"]["vstar"]
    assert sum(s["with_gold"] for s in result["summaries"]) == 2 and [s["errors"] for s in result["summaries"]] == [0, 0]
    records = [json.loads(line) for line in Path(result["merged"]).read_text().splitlines()]
    assert sorted(r["question_id"] for r in records) == [0, 1]
    assert {r["question_id"]: r["category"] for r in records} == {0: "direct_attributes", 1: "relative_position"}
    score = result["score"]
    assert score["n_questions"] == 2 and [c["count"] for c in score["categories"]] == [1, 1]
    right = sum(r["text"] == label for r, label in zip(sorted(records, key=lambda r: r["question_id"]), "BA"))
    assert score["overall_accuracy"] == 50.0 * right


LMMS_VSTAR = """
import json, sys
from lmms_eval.tasks.vstar_bench import utils
docs, preds = json.load(sys.stdin)
out = {}
for doc, pred in zip(docs, preds):
    for key, value in utils.vstar_process_results(doc, [pred]).items():
        out.setdefault(key, []).append(value)
print(json.dumps({key: utils.vstar_aggregate_results(values) for key, values in out.items()}))
"""


def test_accuracies_equal_lmms_evals_vstar_task(tmp_path):
    """lmms-eval's own vstar_bench task (process_results + aggregation, run in its side environment)
    scores the same answers to the same accuracies: per category, and overall pooled over questions."""
    python = required_env("DUALFOCUS_LMMS_PYTHON", "lmms_env.sh")
    answers = [{"question_id": 0, "text": "A"}, {"question_id": 1, "text": "C"}, {"question_id": 2, "text": "C"},
               {"question_id": 3, "text": "B"}, {"question_id": 4, "text": "B"}]
    questions, result = write_case(tmp_path, answers)
    ours = vstar.main(["--question-file", questions, "--result-file", result])
    docs = [json.loads(line) for line in Path(questions).read_text().splitlines()]
    out = subprocess.run([python, "-c", LMMS_VSTAR], input=json.dumps([docs, [a["text"] for a in answers]]),
                         capture_output=True, text=True, timeout=120, check=True)
    theirs = json.loads(out.stdout)
    assert theirs["vstar_overall_acc"] == pytest.approx(ours["overall_accuracy"]) == 60.0
    for row in ours["categories"]:
        assert theirs[f"vstar_{row['name']}_acc"] == pytest.approx(row["accuracy"])
