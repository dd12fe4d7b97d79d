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
    assert "RANDOM WEIGHTS" in printed and "trace (macro, box, micro, choice, final)" in printed
    assert (out / "checkpoints" / demo.RANDOM_NAME / "config.json").is_file()
    assert (out / "checkpoints" / f"{demo.RANDOM_NAME}-clip").is_dir()
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["random_weights"] and set(summary["benchmarks"]) == set(demo.FILES)
    expected = {"seed": 4, "mmbench": 3, "gqa": 3, "textvqa": 3}
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
