"""`python -m dualfocus.demo`: the real runner, merge and scorers over playground/demo/, in seconds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dualfocus import demo
from dualfocus.eval.runner import read_answer_file

ROOT = Path(__file__).resolve().parent.parent


def test_demo_data_is_small_and_complete():
    files = [p for p in demo.DEMO_DATA.rglob("*") if p.is_file()]
    pngs = [p for p in files if p.suffix == ".png"]
    assert 3 <= len(pngs) and all(p.stat().st_size < 20_000 for p in pngs)
    assert sum(p.stat().st_size for p in files) < 200_000
    for question_file, annotation in demo.FILES.values():
        assert (demo.DEMO_DATA / question_file).is_file()
        assert annotation is None or (demo.DEMO_DATA / annotation).is_file()


def test_demo_with_the_random_checkpoint(tmp_path, capsys):
    out = tmp_path / "demo_output"
    result = demo.main(["--formats", "--output-dir", str(out), "--max_new_tokens", "8"])
    printed = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in printed and "trace (macro, box, micro, choice, final, gold):" in printed
    assert printed.count("  gold=") == 15  # every question of the 5 formats shows its answer
    assert "  gold=stop  " in printed and "  gold=green  " in printed  # TextVQA: two questions with id "sign"
    assert (out / "checkpoints" / demo.RANDOM_NAME / "config.json").is_file()
    assert (out / "checkpoints" / f"{demo.RANDOM_NAME}-clip").is_dir()
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["random_weights"] and set(summary["benchmarks"]) == set(demo.FILES)
    expected = {"seed": 4, "mmbench": 3, "gqa": 3, "textvqa": 3, "vstar": 2}
    for bench, n in expected.items():
        entry = result["benchmarks"][bench]
        records = read_answer_file(entry["merged"])
        assert len(records) == n and not any(r.get("error") for r in records)
        assert [s["chunk"] for s in entry["summaries"]] == ["0/2", "1/2"]
        assert sum(s["with_gold"] for s in entry["summaries"]) == n  # every demo question has its answer
        assert entry["score"]
    assert result["benchmarks"]["seed"]["score"]["n_questions"] == 4
    assert result["benchmarks"]["textvqa"]["score"]["samples"] == 3
    # Rerunning rewrites the answers (no resume across demo runs) and reuses the checkpoint.
    again = demo.run_demo(str(out), benchmarks=["gqa"], max_new_tokens=4)
    assert len(read_answer_file(again["benchmarks"]["gqa"]["merged"])) == 3
    assert not (out / "answers" / "seed").exists()


def test_demo_takes_a_model_path(tiny_checkpoint, tmp_path, capsys):
    result = demo.run_demo(str(tmp_path / "out"), model_path=str(tiny_checkpoint), benchmarks=["seed"],
                           max_new_tokens=4)
    assert "RANDOM WEIGHTS" not in capsys.readouterr().out and not result["random_weights"]
    assert not (tmp_path / "out" / "checkpoints").exists()
    assert f"/{tiny_checkpoint.name}/" in result["benchmarks"]["seed"]["merged"]


def test_demo_help_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "dualfocus.demo", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--output-dir" in proc.stdout and "RANDOM" in proc.stdout


def test_demo_without_the_zoom_checkpoint_runs_the_formats(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "ZOOM_CHECKPOINT", tmp_path / "nothing-here")
    result = demo.main(["--output-dir", str(tmp_path / "out"), "--benchmarks", "gqa", "--max_new_tokens", "4"])
    assert "is not shipped yet: running the four-format demo" in capsys.readouterr().out
    assert set(result["benchmarks"]) == {"gqa"}
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        demo.main(["--zoom", "--output-dir", str(tmp_path / "out2")])


def test_draw_sample_takes_half_right_half_wrong_in_question_order():
    judged = {(f"q{i}", 0): demo.Verdict("7", float(i % 3 != 0)) for i in range(30)}  # 20 right, 10 wrong
    picked = demo.draw_sample(judged, 4)
    assert picked == demo.draw_sample(judged, 4)  # a fixed seed
    assert [judged[q].right for q in picked].count(True) == 2 and len(picked) == 4
    assert picked == sorted(picked, key=lambda q: int(q[0][1:]))
    assert demo.draw_sample(judged, 4, seed=1) != picked
    few_right = {("a", 0): demo.Verdict("1", 1.0), ("b", 0): demo.Verdict("2", 0.0), ("b", 1): demo.Verdict("3", 0.0),
                 ("d", 0): demo.Verdict("4", 0.0), ("e", 0): demo.Verdict("5", 0.0)}
    assert ("a", 0) in demo.draw_sample(few_right, 4) and len(demo.draw_sample(few_right, 4)) == 4
    assert demo.draw_sample(few_right, 9) == list(few_right)


def test_verdicts_score_like_the_runner_and_the_trace_shows_gold():
    rows = [{"question_id": "f1", "text": "What is written on the sign that is red?", "answer": "P"},
            {"question_id": "f2", "text": "What is written on the sign that is red?", "answer": "7"},
            {"question_id": "m1", "text": "Which?\nA. 5\nB. P\nAnswer with the option's letter from the given "
                                          "choices directly.", "answer": "B"}]
    records = [{"question_id": "f1", "text": "P", "metadata": {"macro_answer": "2", "answer": "P"}},
               {"question_id": "f2", "error": "image: not found"},
               {"question_id": "m1", "text": "A", "metadata": {"macro_answer": "A", "answer": "A"}}]
    judged = demo.verdicts("vqa", rows[:2], records) | demo.verdicts("seed", rows[2:], records)
    assert judged == {("f1", 0): demo.Verdict("P", 1.0), ("f2", 0): demo.Verdict("7", 0.0),
                      ("m1", 0): demo.Verdict("B", 0.0)}
    assert demo.Verdict("stop", 0.3).label == "PARTLY (0.3)" and demo.Verdict("B", 0.0).label == "WRONG"
    lines = demo.format_trace(records, judged).splitlines()
    assert lines[0].endswith("final=P  gold=P  RIGHT") and lines[1].endswith("ERROR image: not found  gold=7  WRONG")
    assert lines[2].endswith("final=A  gold=B  WRONG")


@pytest.mark.skipif(not demo.zoom_shipped(), reason="zoom checkpoint not shipped")
def test_zoom_demo_pictures_are_a_stated_labelled_sample(tmp_path, capsys):
    out = tmp_path / "demo"
    demo.main(["--zoom", "--output-dir", str(out), "--limit", "5"])
    printed = capsys.readouterr().out
    kinds = ("local", "global")  # the shipped bench is mixed: a sample per kind and format
    for kind in kinds:
        for label in demo.FORMAT_LABELS.values():
            assert f"\n{kind} {label}: 4 of 5 questions, " in printed
    assert "each drawn at random (seed 0) from the right or the wrong answers" in printed
    assert "first answers" not in printed and "(macro, box, micro, choice, final, gold):" in printed
    names = sorted(p.name for p in (out / "pictures").glob("*.png"))
    assert len(names) == 2 * len(kinds) * demo.ZOOM_PICTURES
    for fmt, label in demo.FORMAT_LABELS.items():
        gold = {r["question_id"]: r["answer"] for r in map(json.loads, (out / f"questions_{fmt}.jsonl").open())}
        said = {r["question_id"]: r.get("text") for r in read_answer_file(str(out / f"answers_{fmt}.jsonl"))}
        for kind in kinds:
            prefix = f"{kind}_{label.replace(' ', '_')}_"
            mine = [n for n in names if n.startswith(prefix)]
            assert len(mine) == demo.ZOOM_PICTURES
            for name in mine:
                verdict, qid = name[len(prefix):-len(".png")].split("_", 1)
                assert verdict == ("RIGHT" if said[qid] == gold[qid] else "WRONG"), name
                assert f"{qid}  macro=" in printed and f"final={said[qid]}  gold={gold[qid]}  {verdict}" in printed
