"""scripts/eval: eval_<bench>.sh (one process per GPU / CHUNKS CPU processes), slurm_eval_<bench>.sh
(srun, one task per GPU) and sbatch_eval.sh, run for real on CPU with the tiny random checkpoint.

- Fan-out and argument handling (fast): PYTHON points at a stub that records each runner call and
  fails (or succeeds without writing answers) and hands every other module (merge) to Python.
- End to end (slow): SEED fixture questions, three CPU shards, merged and scored; a shard killed
  with SIGKILL while it runs fails the script, which names it; a rerun resumes and completes.
- Slurm (`-m slurm`, skipped unless `scripts/ci/slurm_local.sh up` answers): GPUS=2 under srun,
  QUOTA_TYPE unset and set, the sbatch form under `sbatch --wait`, and a killed task.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dualfocus.benchmarks.__main__ import SCRIPT_NAMES

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "eval"
SEED_FIXTURE = REPO / "tests" / "fixtures" / "seed" / "SEED-Bench.json"
SPLIT = "llava-seed-bench-image"
BENCHES = SCRIPT_NAMES  # every registered benchmark with a data layout has its two wrappers


# -- data and environment ----------------------------------------------------------------------------
def make_seed_root(root: Path) -> list[str]:
    """DATA_ROOT with seed_bench/ in LLaVA's layout, from the SEED fixture: its image questions as
    llava-seed-bench-image.jsonl, one small picture each, SEED-Bench.json. Returns the question ids."""
    from PIL import Image

    bench = root / "seed_bench"
    (bench / "SEED-Bench-image").mkdir(parents=True)
    shutil.copy(SEED_FIXTURE, bench / "SEED-Bench.json")
    rows = []
    for i, q in enumerate(json.loads(SEED_FIXTURE.read_text())["questions"]):
        if q["data_type"] != "image":
            continue
        Image.new("RGB", (40 + 8 * i, 32), (40 * i, 100, 200)).save(bench / "SEED-Bench-image" / f"{q['data_id']}.jpg")
        options = "\n".join(f"{c}. {q['choice_' + c.lower()]}" for c in "ABCD")
        rows.append({"image": f"SEED-Bench-image/{q['data_id']}.jpg", "category": "fixture",
                     "question_id": q["question_id"],
                     "text": f"{q['question']}\n{options}\nAnswer with the option's letter from the given choices directly."})
    (bench / f"{SPLIT}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [r["question_id"] for r in rows]


def script_env(data_root: Path, **extra: str) -> dict[str, str]:
    """No GPU, no inherited knobs: each test states the ones it means."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CHUNKS", "MODEL_BASE", "CONV_MODE", "SPLIT", "IMAGE_FOLDER", "CKPT_NAME", "GPUS",
                        "GPUS_PER_NODE", "CPUS_PER_TASK", "SRUN_ARGS", "QUOTA_TYPE", "PARTITION", "JOB_NAME",
                        "OMP_NUM_THREADS") and not k.startswith("SLURM_")}
    env.update({"DATA_ROOT": str(data_root), "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, **extra})
    return env


def answers_dir(data_root: Path, name: str) -> Path:
    return data_root / "seed_bench" / "answers" / SPLIT / name


def merged_ids(path: Path) -> list[str]:
    return sorted(str(json.loads(line)["question_id"]) for line in path.read_text().splitlines() if line.strip())


def merged_texts(path: Path) -> dict[str, str]:
    return {str(r["question_id"]): r["text"] for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture
def seed_root(tmp_path) -> tuple[Path, list[str]]:
    root = tmp_path / "data"
    return root, make_seed_root(root)


@pytest.fixture
def deep_checkpoint(tiny_checkpoint, tmp_path) -> str:
    """The tiny checkpoint at a deep path, named like a release, given with a trailing slash."""
    link = tmp_path / "mnt" / "ckpts" / "runs" / "DualFocus-LLaVA-1.5-7B"
    link.parent.mkdir(parents=True)
    link.symlink_to(tiny_checkpoint, target_is_directory=True)
    return f"{link}/"


# -- fan-out and argument handling, with a stub runner -----------------------------------------------
STUB = """#!/bin/bash
# Records a runner call (device, threads, argv) and exits with STUB_STATUS; anything else is Python.
if [[ $1 == -m && $2 == dualfocus.eval.model_vqa_* ]]; then
    echo "CUDA=${CUDA_VISIBLE_DEVICES-unset} OMP=${OMP_NUM_THREADS-unset} ARGS=$*" >> "$STUB_LOG"
    exit "${STUB_STATUS:-3}"
fi
exec "$REAL_PYTHON" "$@"
"""


@pytest.fixture
def stub(tmp_path) -> dict[str, str]:
    path = tmp_path / "stub_python"
    path.write_text(STUB)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return {"PYTHON": str(path), "REAL_PYTHON": sys.executable, "STUB_LOG": str(tmp_path / "calls.log")}


def run_script(name: str, args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / name), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def stub_calls(stub: dict[str, str]) -> list[str]:
    return sorted(Path(stub["STUB_LOG"]).read_text().splitlines())


@pytest.mark.parametrize("ckpt", [
    "/mnt/ckpts/DualFocus-LLaVA-1.5-7B",
    "/mnt/ckpts/DualFocus-LLaVA-1.5-7B/",
    "/mnt/ckpts/DualFocus-LLaVA-1.5-7B//",
    "/a/b/c/d/e/f/g/DualFocus-LLaVA-1.5-7B/",
    "Yuhang-Cao/DualFocus-LLaVA-1.5-7B",
    "DualFocus-LLaVA-1.5-7B",
])
def test_answers_are_named_by_the_checkpoint_basename(ckpt, seed_root, stub):
    root, _ = seed_root
    out = run_script("eval_seed.sh", [ckpt], script_env(root, **stub))
    assert out.returncode == 1
    expected = answers_dir(root, "DualFocus-LLaVA-1.5-7B")
    assert f"log: {expected}/logs/1_0.log" in out.stderr
    assert f"--answers-file {expected}/1_0.jsonl" in stub_calls(stub)[0]
    assert f"--model-path {ckpt} " in stub_calls(stub)[0]  # the path itself goes to the runner as given
    assert sorted(p.name for p in (root / "seed_bench" / "answers" / SPLIT).iterdir()) == ["DualFocus-LLaVA-1.5-7B"]


def test_ckpt_name_overrides_and_root_is_refused(seed_root, stub):
    root, _ = seed_root
    out = run_script("eval_seed.sh", ["/runs/a/checkpoint-1000"], script_env(root, CKPT_NAME="run-a-1000", **stub))
    assert f"log: {answers_dir(root, 'run-a-1000')}/logs/1_0.log" in out.stderr
    out = run_script("eval_seed.sh", ["/"], script_env(root, **stub))
    assert out.returncode == 1 and "set CKPT_NAME" in out.stderr
    out = run_script("eval_seed.sh", [], script_env(root, **stub))
    assert out.returncode == 1 and "no checkpoint given" in out.stderr


def test_one_process_per_visible_gpu_and_every_failure_named(seed_root, stub):
    root, _ = seed_root
    out = run_script("eval_seed.sh", ["/c/ck", "--batch-size", "2"],
                     script_env(root, CUDA_VISIBLE_DEVICES="3,5", CHUNKS="7", **stub))
    calls = stub_calls(stub)
    assert len(calls) == 2  # one per GPU; CHUNKS only counts without GPUs
    assert "CHUNKS=7 ignored" in out.stdout
    for i, gpu in enumerate(("3", "5")):
        call = next(c for c in calls if f"--chunk-idx {i}" in c)
        assert call.startswith(f"CUDA={gpu} OMP=unset ARGS=-m dualfocus.eval.model_vqa_seed ")
        assert "--num-chunks 2" in call and call.endswith("--batch-size 2")  # extra args reach the runner
        assert f"shard {i}/2 (pid " in out.stderr and "exit status 3" in out.stderr
        assert f"logs/2_{i}.log" in out.stderr
    assert out.returncode == 1 and "2 of 2 shard(s) failed" in out.stderr
    assert "--model-base" not in calls[0] and "--conv-mode vicuna_v1" in calls[0] and "--temperature 0" in calls[0]


def test_cpu_chunks_split_the_threads_and_knobs_reach_the_runner(seed_root, stub):
    root, _ = seed_root
    out = run_script("eval_seed.sh", ["/c/ck"],
                     script_env(root, CHUNKS="3", MODEL_BASE="lmsys/vicuna-7b-v1.5", CONV_MODE="llava_v1", **stub))
    calls = stub_calls(stub)
    threads = max(1, os.cpu_count() // 3)
    assert len(calls) == 3 and all(c.startswith(f"CUDA= OMP={threads} ") for c in calls)
    assert all("--model-base lmsys/vicuna-7b-v1.5" in c and "--conv-mode llava_v1" in c for c in calls)
    assert out.returncode == 1 and "3 of 3 shard(s) failed" in out.stderr
    out = run_script("eval_seed.sh", ["/c/ck"], script_env(root, CHUNKS="0", **stub))
    assert out.returncode == 1 and "CHUNKS must be a positive integer" in out.stderr


def test_shards_that_succeed_without_answers_fail_the_merge(seed_root, stub):
    root, _ = seed_root
    out = run_script("eval_seed.sh", ["/c/ck"], script_env(root, CHUNKS="2", STUB_STATUS="0", **stub))
    assert out.returncode == 1
    assert "no such shard file" in out.stderr and "merge failed" in out.stderr
    assert not (answers_dir(root, "ck") / "merge.jsonl").exists()


def test_ckpt_name_with_a_slash_is_refused(seed_root, stub, tmp_path):
    """Issue 14, item 17: CKPT_NAME=../../x wrote answers outside DATA_ROOT."""
    root, _ = seed_root
    for name in ("../../x", "a/b", "/abs"):
        out = run_script("eval_seed.sh", ["/c/ck"], script_env(root, CKPT_NAME=name, **stub))
        assert out.returncode == 1 and f"CKPT_NAME='{name}' is not a plain name" in out.stderr
    assert not Path(stub["STUB_LOG"]).exists() and not (tmp_path / "x").exists()
    assert not (root / "seed_bench" / "answers").exists()


def test_the_advice_after_a_failed_shard_says_what_a_rerun_does(seed_root, stub):
    root, _ = seed_root
    out = run_script("eval_seed.sh", ["/c/ck"], script_env(root, STUB_STATUS="1", **stub))
    assert out.returncode == 1 and "fix the cause shown above, then rerun the same command" in out.stderr
    out = run_script("eval_seed.sh", ["/c/ck"], script_env(root, STUB_STATUS="137", **stub))
    assert "rerun the same command to resume" in out.stderr and "fix the cause" not in out.stderr


@pytest.mark.parametrize("bench", BENCHES)
def test_slurm_scripts_without_srun_say_srun_is_missing(bench, tmp_path, stub):
    root = tmp_path / "data"
    env = script_env(root, **stub)
    bin_dir = tmp_path / "bin"  # what the scripts run before srun, and no srun
    bin_dir.mkdir()
    for tool in ("dirname", "basename"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env["PATH"] = str(bin_dir)
    out = subprocess.run([shutil.which("bash"), str(SCRIPTS / f"slurm_eval_{bench}.sh"), "/c/ck"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "srun is not installed here" in out.stderr and "resume" not in out.stderr


def test_a_checkpoint_that_cannot_load_fails_the_script_without_scoring(seed_root, tmp_path):
    """Issue 14, item 2: a missing checkpoint said "done", scored 0.00% and wrote an empty upload."""
    root, _ = seed_root
    out = run_script("eval_seed.sh", [str(tmp_path / "no-such-ckpt")], script_env(root, CHUNKS="2"), timeout=300)
    assert out.returncode == 1
    assert "cannot load the checkpoint" in out.stderr and "fix the cause shown above" in out.stderr
    assert "Traceback" not in out.stderr and "done" not in out.stdout and "accuracy" not in out.stdout
    assert not (root / "seed_bench" / "answers_upload").exists()
    for shard in answers_dir(root, "no-such-ckpt").glob("2_*.jsonl"):
        assert shard.read_text() == ""  # no error lines for a later run to take as answers


@pytest.mark.parametrize("bench,question_file,images,extra", [
    ("seed", "seed_bench/llava-seed-bench-image.jsonl", "seed_bench", None),
    ("mmbench", "mmbench/mmbench_dev_20230712.tsv", None, "--single-pred-prompt"),
    ("gqa", "gqa/llava_gqa_testdev_balanced_mcq.jsonl", "gqa/data/images", None),
    ("textvqa", "textvqa/llava_textvqa_val_v051_ocr.jsonl", "textvqa/train_images", None),
    ("vstar", "vstar_bench/test_questions.jsonl", "vstar_bench", "--benchmark vstar"),
])
def test_each_benchmark_finds_its_files_in_llava_layout(bench, question_file, images, extra, tmp_path, stub):
    root = tmp_path / "data"
    (root / question_file).parent.mkdir(parents=True)
    (root / question_file).write_text("")
    out = run_script(f"eval_{bench}.sh", ["/c/ck"], script_env(root, **stub))
    call = stub_calls(stub)[0]
    runner = "model_vqa_loader" if bench == "vstar" else f"model_vqa_{bench}"  # LLaVA has no model_vqa_vstar
    assert f"-m dualfocus.eval.{runner} " in call
    assert f"--question-file {root / question_file} " in call
    assert (f"--image-folder {root / images} " in call) if images else "--image-folder" not in call
    assert extra is None or extra in call
    split = Path(question_file).stem
    assert f"{root / question_file.split('/')[0]}/answers/{split}/ck/logs/1_0.log" in out.stderr
    # IMAGE_FOLDER and SPLIT replace the defaults
    out = run_script(f"eval_{bench}.sh", ["/c/ck"], script_env(root, IMAGE_FOLDER="/imgs", SPLIT="nope", **stub))
    assert out.returncode == 1 and "no question file" in out.stderr and f"nope{Path(question_file).suffix}" in out.stderr


def test_seed_with_only_llavas_whole_file_suggests_the_split(tmp_path, stub):
    seed = tmp_path / "seed_bench"
    seed.mkdir()
    (seed / "llava-seed-bench.jsonl").write_text("")
    out = run_script("eval_seed.sh", ["/c/ck"], script_env(tmp_path, **stub))
    assert out.returncode == 1 and "SPLIT=llava-seed-bench" in out.stderr
    out = run_script("eval_gqa.sh", ["/c/ck"], script_env(tmp_path, **stub))
    assert out.returncode == 1 and "SPLIT=" not in out.stderr


def test_missing_data_root_is_explained(tmp_path, stub):
    out = run_script("eval_gqa.sh", ["/c/ck"], script_env(tmp_path / "nothing", **stub))
    assert out.returncode == 1 and "no question file" in out.stderr and "DATA_ROOT" in out.stderr
    assert not Path(stub["STUB_LOG"]).exists()


@pytest.mark.parametrize("script", [f"{k}_{b}.sh" for k in ("eval", "slurm_eval") for b in BENCHES] + ["sbatch_eval.sh"])
def test_help(script):
    out = subprocess.run(["bash", str(SCRIPTS / script), "--help"], capture_output=True, text=True, timeout=30)
    first = out.stdout.splitlines()[0]
    assert out.returncode == 0 and (first.startswith(script + " CKPT") or first.startswith("sbatch ["))
    assert "CKPT" in first


def test_sbatch_form_refuses_to_run_outside_an_allocation(tmp_path):
    env = script_env(tmp_path)
    out = subprocess.run(["bash", str(SCRIPTS / "sbatch_eval.sh"), "seed", "/c/ck"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "queue it: sbatch" in out.stderr


def test_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is not installed: .ci/run installs it")
        pytest.skip("shellcheck is not installed")
    scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
    out = subprocess.run(["shellcheck", "-x", *scripts], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


# -- end to end on CPU with the tiny random checkpoint -----------------------------------------------
@pytest.mark.slow
def test_three_cpu_shards_merge_and_score(seed_root, deep_checkpoint):
    root, ids = seed_root
    out = run_script("eval_seed.sh", [deep_checkpoint], script_env(root, CHUNKS="3"), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    adir = answers_dir(root, "DualFocus-LLaVA-1.5-7B")
    assert sorted(p.name for p in adir.glob("3_*.jsonl")) == ["3_0.jsonl", "3_1.jsonl", "3_2.jsonl"]
    assert merged_ids(adir / "merge.jsonl") == sorted(ids)
    score = json.loads((adir / "merge_score.json").read_text())
    assert "accuracy" in json.dumps(score).lower()
    upload = root / "seed_bench" / "answers_upload" / SPLIT / "DualFocus-LLaVA-1.5-7B.jsonl"
    assert len(upload.read_text().splitlines()) == len(ids)
    assert {p.name for p in (adir / "logs").iterdir()} == {"3_0.log", "3_1.log", "3_2.log"}


@pytest.mark.slow
def test_a_killed_shard_fails_the_script_by_name_and_a_rerun_resumes(seed_root, tiny_checkpoint):
    root, ids = seed_root
    env = script_env(root, CHUNKS="3")
    proc = subprocess.Popen(["bash", str(SCRIPTS / "eval_seed.sh"), str(tiny_checkpoint)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = None
    for line in proc.stdout:  # "eval_seed: shard 1/3: pid 1234, CPU, log ..."
        m = re.search(r"shard 1/3: pid (\d+)", line)
        if m:
            victim = int(m.group(1))
            os.kill(victim, signal.SIGKILL)  # the shard's own process (the runner), while it loads
            break
    stdout, stderr = proc.communicate(timeout=300)
    assert victim is not None
    assert proc.returncode == 1, stdout + stderr
    adir = answers_dir(root, "llava")
    assert f"shard 1/3 (pid {victim}): killed by SIGKILL (exit status 137); log: {adir}/logs/3_1.log" in stderr
    assert "1 of 3 shard(s) failed" in stderr and "shard 0/3" not in stderr and "shard 2/3" not in stderr
    assert not (adir / "merge.jsonl").exists()

    out = run_script("eval_seed.sh", [str(tiny_checkpoint)], env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert merged_ids(adir / "merge.jsonl") == sorted(ids)
    # shard 0 finished in the first run: the rerun skipped its questions (logs are appended to)
    assert re.search(r"\(0 now, [1-9]\d* from an earlier run\)", (adir / "logs" / "3_0.log").read_text())


DEMO = REPO / "playground" / "demo"
DEMO_SPLITS = {"seed": "llava-seed-bench", "mmbench": "mmbench_demo", "gqa": "llava_gqa_testdev_balanced_mcq",
               "textvqa": "llava_textvqa_val_v051_ocr", "vstar": "test_questions"}
DEMO_SCORES = {"seed": "seed_bench", "mmbench": "mmbench", "gqa": "gqa", "textvqa": "textvqa", "vstar": "vstar_bench"}
DEMO_IMAGES = {"vstar": "vstar_bench"}  # its release's image paths are relative to its own folder


@pytest.mark.slow
@pytest.mark.parametrize("bench", [
    "seed",
    "mmbench",
    "gqa",
    "textvqa",
    "vstar",
])
def test_every_benchmark_on_the_demo_data(bench, tmp_path, tiny_checkpoint):
    """The README's demo command: DATA_ROOT and IMAGE_FOLDER at (a copy of) playground/demo."""
    if not (DEMO / DEMO_SCORES[bench]).is_dir():
        pytest.skip("no demo data (python playground/demo/make_demo_data.py)")
    root = tmp_path / "demo"
    shutil.copytree(DEMO, root)
    env = script_env(root, CHUNKS="2", IMAGE_FOLDER=str(root / DEMO_IMAGES.get(bench, "")), SPLIT=DEMO_SPLITS[bench])
    out = run_script(f"eval_{bench}.sh", [str(tiny_checkpoint)], env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    adir = root / DEMO_SCORES[bench] / "answers" / DEMO_SPLITS[bench] / "llava"
    assert (adir / "merge.jsonl").is_file() and (adir / "merge_score.json").is_file()


# -- on the local Slurm cluster ----------------------------------------------------------------------
SLURM_LOCAL_DIR = Path(os.environ.get("SLURM_LOCAL_DIR", "/tmp/dualfocus-slurm"))


def _slurm_conf() -> str | None:
    conf = os.environ.get("SLURM_CONF") or str(SLURM_LOCAL_DIR / "etc" / "slurm.conf")
    return conf if Path(conf).is_file() else None


def _cluster_up() -> bool:
    if shutil.which("srun") is None or _slurm_conf() is None:
        return False
    ping = subprocess.run(["scontrol", "ping"], env={**os.environ, "SLURM_CONF": _slurm_conf()},
                          capture_output=True, timeout=10)
    return ping.returncode == 0


needs_slurm = pytest.mark.skipif("not _cluster_up()", reason="no local Slurm cluster (scripts/ci/slurm_local.sh up)")


def slurm_env(root: Path, **extra: str) -> dict[str, str]:
    env = script_env(root, CPUS_PER_TASK="1", **extra)
    env.pop("CUDA_VISIBLE_DEVICES")
    env["SLURM_CONF"] = _slurm_conf()
    return env


@pytest.fixture(scope="module")
def srun_reference(tmp_path_factory, tiny_checkpoint):
    """One slurm_eval_seed.sh run with GPUS=2; the other Slurm tests compare with it."""
    if not _cluster_up():
        pytest.skip("no local Slurm cluster")
    root = tmp_path_factory.mktemp("slurm") / "data"
    ids = make_seed_root(root)
    started = time.perf_counter()
    out = run_script("slurm_eval_seed.sh", [str(tiny_checkpoint)], slurm_env(root, GPUS="2"), timeout=300)
    return root, ids, out, time.perf_counter() - started


@pytest.mark.slurm
@pytest.mark.slow
@needs_slurm
def test_slurm_two_tasks_merge_and_score(srun_reference):
    root, ids, out, _ = srun_reference
    assert out.returncode == 0, out.stdout + out.stderr
    for option in ("--ntasks=2", "--ntasks-per-node=2", "--gres=gpu:2", "--cpus-per-task=1", "--kill-on-bad-exit=1"):
        assert option in out.stdout
    assert "--quotatype" not in out.stdout and " -p " not in out.stdout  # no partition: the default one
    adir = answers_dir(root, "llava")
    assert sorted(p.name for p in adir.glob("2_*.jsonl")) == ["2_0.jsonl", "2_1.jsonl"]
    assert merged_ids(adir / "merge.jsonl") == sorted(ids)
    assert (adir / "merge_score.json").is_file()
    for t in (0, 1):  # each task took its chunk from SLURM_PROCID and its GPU index from SLURM_LOCALID
        log = (adir / "logs" / f"task_{t}.log").read_text()
        assert f"task {t}/2 on " in log and f"SLURM_LOCALID={t}" in log and "CUDA_VISIBLE_DEVICES=0,1" in log
        assert f"chunk {t}/2: {adir}/2_{t}.jsonl" in log


@pytest.mark.slurm
@needs_slurm
def test_slurm_a_checkpoint_that_cannot_load_fails_the_script_without_scoring(tmp_path):
    root = tmp_path / "data"
    make_seed_root(root)
    out = run_script("slurm_eval_seed.sh", [str(tmp_path / "no-such-ckpt")], slurm_env(root, GPUS="2"), timeout=300)
    assert out.returncode == 1 and "srun failed" in out.stderr
    assert "cannot load the checkpoint" in out.stderr and "fix the cause shown above" in out.stderr
    assert "done" not in out.stdout and not (root / "seed_bench" / "answers_upload").exists()


@pytest.mark.slurm
@needs_slurm
def test_slurm_quota_type_is_passed_only_when_given(tmp_path, tiny_checkpoint):
    root = tmp_path / "data"
    make_seed_root(root)
    out = run_script("slurm_eval_seed.sh", [str(tiny_checkpoint), "", "", "reserved"], slurm_env(root, GPUS="2"))
    assert out.returncode == 1
    assert "--quotatype=reserved" in out.stdout and "unrecognized option '--quotatype=reserved'" in out.stdout
    assert "has no --quotatype" in out.stderr and "without QUOTA_TYPE" in out.stderr
    assert not list(answers_dir(root, "llava").glob("logs/task_*.log"))  # nothing ran
    out = run_script("slurm_eval_seed.sh", [str(tiny_checkpoint)], slurm_env(root, GPUS="2", QUOTA_TYPE="spot"))
    assert out.returncode == 1 and "--quotatype=spot" in out.stdout and "without QUOTA_TYPE" in out.stderr


def _sbatch(root: Path, ckpt: str, log: Path, **extra: str) -> subprocess.Popen:
    cmd = ["sbatch", "--wait", "--ntasks-per-node=2", "--gres=gpu:2", "--cpus-per-task=1", f"--output={log}",
           str(SCRIPTS / "sbatch_eval.sh"), "seed", ckpt]
    return subprocess.Popen(cmd, env=slurm_env(root, **extra), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slurm
@pytest.mark.slow
@needs_slurm
def test_sbatch_form_gives_the_same_answers(srun_reference, tiny_checkpoint, tmp_path):
    root, ids, ref, _ = srun_reference
    assert ref.returncode == 0
    proc = _sbatch(root, str(tiny_checkpoint), tmp_path / "job.out", CKPT_NAME="via-sbatch")
    stdout, stderr = proc.communicate(timeout=300)
    job_log = (tmp_path / "job.out").read_text()
    assert proc.returncode == 0, stdout + stderr + job_log
    assert "inside job" in job_log and "--ntasks=2" in job_log
    got, want = answers_dir(root, "via-sbatch") / "merge.jsonl", answers_dir(root, "llava") / "merge.jsonl"
    assert merged_texts(got) == merged_texts(want)


@pytest.mark.slurm
@pytest.mark.slow
@needs_slurm
def test_sbatch_job_fails_when_a_task_dies_and_a_rerun_resumes(tiny_checkpoint, tmp_path):
    root = tmp_path / "data"
    ids = make_seed_root(root)
    proc = _sbatch(root, str(tiny_checkpoint), tmp_path / "job.out")
    task_log = answers_dir(root, "llava") / "logs" / "task_1.log"
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:  # the task writes its pid first
        m = re.search(r"task 1/2 on \S+, pid (\d+)", task_log.read_text() if task_log.exists() else "")
        if m:
            victim = int(m.group(1))
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.1)
    stdout, stderr = proc.communicate(timeout=300)
    job_log = (tmp_path / "job.out").read_text()
    assert victim is not None, job_log
    assert proc.returncode != 0, job_log
    assert "task 1 FAILED: Killed; log: " in job_log and "task_1.log" in job_log
    assert not (answers_dir(root, "llava") / "merge.jsonl").exists()

    out = run_script("slurm_eval_seed.sh", [str(tiny_checkpoint)], slurm_env(root, GPUS="2"), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert merged_ids(answers_dir(root, "llava") / "merge.jsonl") == sorted(ids)
