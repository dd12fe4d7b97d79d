"""The model_vqa_* CLIs end to end on a tiny random checkpoint: answers the scorers accept, a killed
run resumed to a complete merge, error records for bad images, empty shards, env-var sharding."""

import functools
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dualfocus.eval import merge
from dualfocus.eval.runner import read_answer_file

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "playground" / "demo"
FAST = ["--max_new_tokens", "8", "--no-progress"]
SHARD_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "RANK", "WORLD_SIZE", "LOCAL_RANK")


@pytest.fixture(autouse=True)
def no_shard_env(monkeypatch):
    for var in SHARD_VARS:
        monkeypatch.delenv(var, raising=False)


def run_cli(module: str, args, monkeypatch) -> dict:
    """Run `python -m dualfocus.eval.<module> args` in this process; returns run_eval's summary."""
    import dualfocus.eval.runner as runner

    captured = {}
    original = runner.run_eval

    @functools.wraps(original)
    def spy(*a, **k):
        captured["summary"] = original(*a, **k)
        return captured["summary"]

    monkeypatch.setattr(runner, "run_eval", spy)
    monkeypatch.setattr(sys, "argv", [module, *map(str, args)])
    runpy.run_module(f"dualfocus.eval.{module}", run_name="__main__")
    return captured["summary"]


def check_records(path: Path, n: int, model_id: str) -> list[dict]:
    records = read_answer_file(str(path))
    assert len(records) == n
    for r in records:
        assert {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"} <= set(r)
        assert r["model_id"] == model_id and isinstance(r["text"], str) and not r.get("error")
        assert {"macro_raw", "macro_answer", "box_text", "choice", "fallback"} <= set(r["metadata"])
    return records


# -- each CLI over its demo file, then its scorer -----------------------------------------------------
def test_seed_cli_and_scorer(tiny_checkpoint, tmp_path, monkeypatch):
    from dualfocus.eval import convert_seed_for_submission

    out = tmp_path / "seed" / "answers.jsonl"
    annotation = DEMO / "seed_bench" / "SEED-Bench.json"
    summary = run_cli("model_vqa_seed", [
        "--model-path", tiny_checkpoint, "--question-file", DEMO / "seed_bench" / "llava-seed-bench.jsonl",
        "--image-folder", DEMO, "--answers-file", out, "--annotation-file", annotation, *FAST], monkeypatch)
    check_records(out, 4, tiny_checkpoint.name)
    assert summary["answered"] == 4 and summary["errors"] == 0 and summary["with_gold"] == 4
    assert set(summary["accuracy"]) == {"macro", "micro", "final", "oracle"}
    result = convert_seed_for_submission.main(["--annotation-file", str(annotation), "--result-file", str(out),
                                               "--result-upload-file", str(tmp_path / "upload.jsonl")])
    assert result["n_questions"] == 4 and result["n_errors"] == 0 and not result["unanswered"]


def test_gqa_cli_reference_engine_and_scorer(tiny_checkpoint, tmp_path, monkeypatch):
    from dualfocus.eval import convert_gqa_for_eval

    out = tmp_path / "answers.jsonl"
    questions = DEMO / "gqa" / "llava_gqa_testdev_balanced_mcq.jsonl"
    run_cli("model_vqa_gqa", ["--model-path", tiny_checkpoint, "--question-file", questions, "--image-folder", DEMO,
                              "--answers-file", out, "--engine", "reference", "--batch-size", "2", *FAST], monkeypatch)
    check_records(out, 3, tiny_checkpoint.name)
    result = convert_gqa_for_eval.main(["--src", str(out), "--dst", str(tmp_path / "pred.json"), "--questions",
                                        str(questions), "--gqa-annotations",
                                        str(DEMO / "gqa" / "testdev_balanced_questions.json")])
    assert result["n_questions"] == 3 and result["n_unanswered"] == 0 and result["n_errors"] == 0


def test_textvqa_cli_and_scorer(tiny_checkpoint, tmp_path, monkeypatch):
    from dualfocus.eval import eval_textvqa

    out = tmp_path / "answers.jsonl"
    run_cli("model_vqa_textvqa", [
        "--model-path", tiny_checkpoint, "--question-file", DEMO / "textvqa" / "llava_textvqa_val_v051_ocr.jsonl",
        "--image-folder", DEMO, "--answers-file", out, *FAST], monkeypatch)
    check_records(out, 3, tiny_checkpoint.name)
    [result] = eval_textvqa.main(["--annotation-file", str(DEMO / "textvqa" / "TextVQA_0.5.1_val.json"),
                                  "--result-file", str(out)])
    assert result["samples"] == 3  # every record matched its annotation through its prompt


def test_static_decode_flag_gives_the_same_answers(tiny_checkpoint, tmp_path, monkeypatch):
    # --static-decode eager: the fast engine's fixed-shape decode steps (graphs need CUDA); same records
    common = ["--model-path", tiny_checkpoint, "--question-file", DEMO / "textvqa" / "llava_textvqa_val_v051_ocr.jsonl",
              "--image-folder", DEMO, *FAST]
    run_cli("model_vqa_textvqa", [*common, "--answers-file", tmp_path / "off.jsonl"], monkeypatch)
    run_cli("model_vqa_textvqa", [*common, "--answers-file", tmp_path / "eager.jsonl", "--static-decode", "eager"],
            monkeypatch)
    off, eager = (read_answer_file(str(tmp_path / f"{name}.jsonl")) for name in ("off", "eager"))
    assert len(off) == 3 and [(r["text"], r["metadata"]["box_text"], r["metadata"]["micro_raw"]) for r in off] == \
        [(r["text"], r["metadata"]["box_text"], r["metadata"]["micro_raw"]) for r in eager]
    with pytest.raises(SystemExit):  # the reference engine has no static decode: refused before loading
        run_cli("model_vqa_textvqa", [*common, "--answers-file", tmp_path / "ref.jsonl", "--engine", "reference",
                                      "--static-decode", "eager"], monkeypatch)
    assert not (tmp_path / "ref.jsonl").exists()


def test_loader_cli_generic_vqa_macro_mode(tiny_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "answers.jsonl"
    summary = run_cli("model_vqa_loader", [
        "--model-path", tiny_checkpoint, "--question-file", DEMO / "textvqa" / "llava_textvqa_val_v051_ocr.jsonl",
        "--image-folder", DEMO, "--answers-file", out, "--benchmark", "vqa", "--mode", "macro", *FAST], monkeypatch)
    records = check_records(out, 3, tiny_checkpoint.name)
    assert all(r["metadata"]["mode"] == "macro" and r["metadata"]["box_text"] is None for r in records)
    assert summary["benchmark"] == "vqa" and summary["fallback_rate"] == 0.0


def test_mmbench_cli_all_rounds_and_scorer(tiny_checkpoint, tmp_path, monkeypatch):
    from dualfocus.eval import convert_mmbench_for_submission as mmb

    tsv = DEMO / "mmbench" / "mmbench_demo.tsv"
    out = tmp_path / "answers.jsonl"
    summary = run_cli("model_vqa_mmbench", ["--model-path", tiny_checkpoint, "--question-file", tsv,
                                            "--answers-file", out, "--all-rounds", "--single-pred-prompt",
                                            "--lang", "en", *FAST], monkeypatch)
    records = check_records(out, 4 + 3 + 4, tiny_checkpoint.name)
    assert [(r["question_id"], r["round_id"]) for r in records][:5] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    assert all({"options", "option_char"} <= set(r) for r in records)
    assert summary["with_gold"] == 11
    merge.merge_answers([str(out)], merge.read_question_ids(str(tsv)), report=lambda m: None)
    # The converter's scoring (its xlsx writer refuses the control characters random weights produce).
    predictions, errors = mmb.load_predictions(str(out))
    result = mmb.score(pd.read_table(tsv), predictions)
    assert result["n_questions"] == 3 and result["n_unanswered_rows"] == 0 and errors == 0


def test_help_is_run_evals_docstring(capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        run_cli("model_vqa_mmbench", ["--help"], monkeypatch)
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "SLURM_PROCID/SLURM_NTASKS" in text and "--all-rounds" in text and "--num_beams" in text


# -- robustness --------------------------------------------------------------------------------------
def many_seed_questions(tmp_path: Path, n: int) -> Path:
    rows = [json.loads(line) for line in (DEMO / "seed_bench" / "llava-seed-bench.jsonl").read_text().splitlines()]
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({**rows[i % len(rows)], "question_id": f"q{i}"}) + "\n" for i in range(n)))
    return path


def test_killed_process_resumes_to_a_complete_merge(tiny_checkpoint, tmp_path, monkeypatch):
    n = 24
    questions = many_seed_questions(tmp_path, n)
    out = tmp_path / "answers" / "1_0.jsonl"
    args = ["--model-path", tiny_checkpoint, "--question-file", questions, "--image-folder", DEMO,
            "--answers-file", out, "--max_new_tokens", "16", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k not in SHARD_VARS}
    proc = subprocess.Popen([sys.executable, "-m", "dualfocus.eval.model_vqa_seed", *map(str, args), "--batch-size", "1"],
                            cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    stderr = proc.stderr.read().decode()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"the run was not killed midway (exit {proc.returncode}); stderr:\n{stderr[-2000:]}")
    first = read_answer_file(str(out)) if out.read_bytes().endswith(b"\n") else None
    n_before = out.read_bytes().count(b"\n")
    assert 3 <= n_before < n
    summary = run_cli("model_vqa_seed", [*args, "--batch-size", "8"], monkeypatch)
    assert summary["resumed_from"] == n_before and summary["new"] == n - n_before
    records = merge.merge_answers([str(out)], merge.read_question_ids(str(questions)), report=lambda m: None)
    assert [r["question_id"] for r in records] == [f"q{i}" for i in range(n)]
    if first is not None:  # what was written before the kill is kept as it was
        assert [r["answer_id"] for r in records[: len(first)]] == [r["answer_id"] for r in first]


def test_bad_images_give_error_lines_not_a_crash(tiny_checkpoint, tmp_path, monkeypatch):
    shutil.copytree(DEMO / "images", tmp_path / "images")
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    rows = [json.loads(line) for line in (DEMO / "seed_bench" / "llava-seed-bench.jsonl").read_text().splitlines()]
    rows.insert(1, {**rows[0], "question_id": "corrupt", "image": "images/corrupt.png"})
    rows.insert(3, {**rows[0], "question_id": "missing", "image": "images/nowhere.png"})
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "answers.jsonl"
    summary = run_cli("model_vqa_seed", ["--model-path", tiny_checkpoint, "--question-file", questions,
                                         "--image-folder", tmp_path, "--answers-file", out, *FAST], monkeypatch)
    records = {r["question_id"]: r for r in read_answer_file(str(out))}
    assert len(records) == 6 and summary["errors"] == 2
    assert "corrupt.png" in records["corrupt"]["error"] and "nowhere.png: file not found" in records["missing"]["error"]
    assert records["missing"]["prompt"] == rows[0]["text"]
    assert sum(not r.get("error") for r in records.values()) == 4


def test_more_shards_than_questions(tiny_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "8_7.jsonl"
    summary = run_cli("model_vqa_gqa", [
        "--model-path", tiny_checkpoint, "--question-file", DEMO / "gqa" / "llava_gqa_testdev_balanced_mcq.jsonl",
        "--image-folder", DEMO, "--answers-file", out, "--num-chunks", "8", "--chunk-idx", "7", *FAST], monkeypatch)
    assert out.read_text() == "" and summary["questions"] == 0
    assert summary["device"] is None  # nothing to answer: the model was never loaded


def test_shard_from_slurm_environment(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun's variables lose to Slurm's
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "2_1.jsonl"
    summary = run_cli("model_vqa_seed", [
        "--model-path", tiny_checkpoint, "--question-file", DEMO / "seed_bench" / "llava-seed-bench.jsonl",
        "--image-folder", DEMO, "--answers-file", out, "--device", "cpu", *FAST], monkeypatch)
    assert summary["chunk"] == "1/2"
    assert [r["question_id"] for r in read_answer_file(str(out))] == ["9003", "9004"]


# -- failures a user fixes: one line, a non-zero exit (issue 14) ---------------------------------------
def test_a_missing_checkpoint_stops_with_one_line_and_no_error_records(tmp_path):
    out = tmp_path / "a.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in SHARD_VARS}
    proc = subprocess.run([sys.executable, "-m", "dualfocus.eval.model_vqa_loader", "--benchmark", "seed",
                           "--model-path", str(tmp_path / "nope"), "--image-folder", str(DEMO), "--question-file",
                           str(DEMO / "seed_bench" / "llava-seed-bench.jsonl"), "--answers-file", str(out),
                           "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"model_vqa_loader.py: error: cannot load the checkpoint {tmp_path / 'nope'}: " in proc.stderr
    assert out.read_text() == ""


@pytest.mark.parametrize("args, message", [
    (["--conv-mode", "nope"], "unknown conv_mode 'nope'"),
    (["--question-file", "/no/such/q.jsonl"], "no question file /no/such/q.jsonl; check --question-file"),
])
def test_bad_flags_and_paths_are_one_line(args, message, tiny_checkpoint, tmp_path, monkeypatch):
    base = ["--model-path", tiny_checkpoint, "--question-file", DEMO / "seed_bench" / "llava-seed-bench.jsonl",
            "--answers-file", tmp_path / "a.jsonl", *FAST]
    with pytest.raises(SystemExit) as e:
        run_cli("model_vqa_seed", [*base, *args], monkeypatch)
    assert e.value.code.startswith("model_vqa_seed: error: ") and message in e.value.code
    assert "\n" not in e.value.code


def test_a_second_runner_on_an_answer_file_exits_naming_the_holder(tiny_checkpoint, tmp_path, monkeypatch):
    from dualfocus.files import FileLock

    out = tmp_path / "a.jsonl"
    args = ["--model-path", tiny_checkpoint, "--question-file", DEMO / "seed_bench" / "llava-seed-bench.jsonl",
            "--image-folder", DEMO, "--answers-file", out, *FAST]
    with FileLock(str(out)), pytest.raises(SystemExit) as e:
        run_cli("model_vqa_seed", args, monkeypatch)
    assert f"is being written by pid {os.getpid()} on " in e.value.code
    assert not out.exists() or out.read_text() == ""


def test_every_multi_word_flag_takes_both_spellings_and_the_help_shows_llavas():
    """The parser is built from EvalConfig: each field's default is the config's, both spellings parse."""
    from dataclasses import MISSING, fields

    from dualfocus.benchmarks import BENCHMARK_NAMES
    from dualfocus.engine import ENGINE_NAMES
    from dualfocus.eval.cli import build_parser
    from dualfocus.eval.config import EvalConfig, MMBenchOptions

    required = ["--model-path", "m", "--question-file", "q", "--answers-file", "a"]
    parser = build_parser("mmbench")
    defaults = vars(parser.parse_args(required))
    for f in [*fields(EvalConfig), *fields(MMBenchOptions)]:
        if f.default is not MISSING:
            assert defaults[f.name] == f.default, f.name
    dashed = vars(parser.parse_args([*required, "--max-new-tokens", "7", "--top-p", "0.5", "--num-beams", "1",
                                     "--chunk_idx", "1", "--num_chunks", "2", "--all_rounds", "--no-progress"]))
    underscored = vars(parser.parse_args([*required, "--max_new_tokens", "7", "--top_p", "0.5", "--num_beams", "1",
                                          "--chunk-idx", "1", "--num-chunks", "2", "--all-rounds", "--no_progress"]))
    assert dashed == underscored and dashed["max_new_tokens"] == 7 and dashed["top_p"] == 0.5
    assert dashed["all_rounds"] is True and dashed["progress"] is False and dashed["chunk_idx"] == 1
    text = parser.format_help()
    assert "--max_new_tokens" in text and "--max-new-tokens MAX" not in text and "--model-path" in text
    generic = build_parser(None)
    choices = {a.dest: a.choices for a in generic._actions}
    assert tuple(choices["benchmark"]) == BENCHMARK_NAMES and tuple(choices["engine"]) == ENGINE_NAMES
    assert "all_rounds" not in choices and "all_rounds" in {a.dest for a in build_parser(None, chosen="mmbench")._actions}


def test_run_eval_takes_the_configs_fields_and_passes_the_rest_to_the_benchmark():
    from dualfocus.eval.config import EvalConfig, split_options

    config, rest = split_options(("m", "q", "a"), {"max_new_tokens": 9, "all_rounds": True})
    assert config == EvalConfig("m", "q", "a", max_new_tokens=9) and rest == {"all_rounds": True}
    assert config.focus_config().max_new_tokens == 9
