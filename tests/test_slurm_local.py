"""The local Slurm cluster of scripts/ci/slurm_local.sh behaves like the clusters our scripts target.

Skipped unless `sinfo` is installed and the cluster answers. Bring it up first:
    scripts/ci/slurm_local.sh up        # (--install the first time)
    pytest -m slurm tests/test_slurm_local.py
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

SLURM_LOCAL_DIR = Path(os.environ.get("SLURM_LOCAL_DIR", "/tmp/dualfocus-slurm"))
PARTITION = "debug"


def _slurm_conf() -> Path | None:
    """The slurm.conf clients will read, or None when there is none (clients would retry for 60 s)."""
    if "SLURM_CONF" in os.environ:
        conf = Path(os.environ["SLURM_CONF"])
    elif (SLURM_LOCAL_DIR / "etc" / "slurm.conf").is_file():
        conf = SLURM_LOCAL_DIR / "etc" / "slurm.conf"  # where slurm_local.sh writes it
    else:
        conf = Path("/etc/slurm/slurm.conf")
    return conf if conf.is_file() else None


def _slurm_env() -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": str(_slurm_conf())}


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None or _slurm_conf() is None:
        return False
    # `scontrol ping` answers at once; sinfo would retry a dead controller for ~9 s.
    ping = subprocess.run(["scontrol", "ping"], env=_slurm_env(), capture_output=True, timeout=10)
    if ping.returncode != 0:
        return False
    out = subprocess.run(
        ["sinfo", "-h", "-p", PARTITION, "-o", "%T"],
        env=_slurm_env(),
        capture_output=True,
        text=True,
        timeout=15,
    )
    return out.returncode == 0 and any(s in ("idle", "mixed", "allocated") for s in out.stdout.split())


if not _cluster_up():
    pytest.skip("no local Slurm cluster answers (scripts/ci/slurm_local.sh up)", allow_module_level=True)


def _run(cmd: list[str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=_slurm_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _task_lines(stdout: str) -> list[dict[str, str]]:
    """Lines of `KEY=VALUE ...` printed by each task -> one dict per task, sorted by SLURM_PROCID."""
    rows = [
        dict(field.split("=", 1) for field in line.split()) for line in stdout.splitlines() if line.strip()
    ]
    return sorted(rows, key=lambda row: int(row["SLURM_PROCID"]))


PRINT_TASK_ENV = (
    'echo "SLURM_PROCID=$SLURM_PROCID SLURM_LOCALID=$SLURM_LOCALID '
    'SLURM_NTASKS=$SLURM_NTASKS CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"'
)


def test_two_task_srun_sees_ranks_and_fake_gpus(tmp_path):
    out = _run(
        [
            "srun",
            "-p",
            PARTITION,
            "-N1",
            "--ntasks=2",
            "--ntasks-per-node=2",
            "--gres=gpu:2",
            "--cpus-per-task=1",
            "bash",
            "-c",
            PRINT_TASK_ENV,
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    tasks = _task_lines(out.stdout)
    assert [t["SLURM_PROCID"] for t in tasks] == ["0", "1"]
    assert [t["SLURM_LOCALID"] for t in tasks] == ["0", "1"]
    assert [t["SLURM_NTASKS"] for t in tasks] == ["2", "2"]
    # --gres is per node: every task of the step sees both GPUs; ranks pick by SLURM_LOCALID.
    assert [t["CUDA_VISIBLE_DEVICES"] for t in tasks] == ["0,1", "0,1"]


def test_gpus_per_task_gives_each_task_its_own_gpu(tmp_path):
    out = _run(
        ["srun", "-p", PARTITION, "--ntasks=2", "--gpus-per-task=1", "bash", "-c", PRINT_TASK_ENV], tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert [t["CUDA_VISIBLE_DEVICES"] for t in _task_lines(out.stdout)] == ["0", "1"]


def test_sbatch_wait_returns_the_job_exit_status(tmp_path):
    script = tmp_path / "exit3.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH -p {PARTITION}\n#SBATCH -o {tmp_path}/exit3.out\nexit 3\n")
    out = _run(["sbatch", "--wait", str(script)], tmp_path)
    assert out.returncode == 3, (out.stdout, out.stderr)


def test_srun_inside_sbatch_uses_the_allocation(tmp_path):
    script = tmp_path / "inner.sh"
    script.write_text(
        f"#!/bin/bash\n#SBATCH -p {PARTITION}\n#SBATCH --ntasks=2 --gres=gpu:2\n#SBATCH -o {tmp_path}/inner.out\n"
        'echo "batch $SLURM_JOB_ID"\n'
        "srun bash -c 'echo \"step $SLURM_JOB_ID $SLURM_PROCID $CUDA_VISIBLE_DEVICES\"'\n"
    )
    out = _run(["sbatch", "--wait", str(script)], tmp_path)
    assert out.returncode == 0, (out.stdout, out.stderr)
    lines = (tmp_path / "inner.out").read_text().split("\n")
    job_id = next(line.split()[1] for line in lines if line.startswith("batch "))
    steps = sorted(line for line in lines if line.startswith("step "))
    assert steps == [f"step {job_id} 0 0,1", f"step {job_id} 1 0,1"]


def test_kill_on_bad_exit_fails_fast(tmp_path):
    start = time.monotonic()
    out = _run(
        [
            "srun",
            "-p",
            PARTITION,
            "--ntasks=2",
            "--kill-on-bad-exit=1",
            "bash",
            "-c",
            'if [ "$SLURM_PROCID" = 1 ]; then exit 7; fi; sleep 60',
        ],
        tmp_path,
    )
    assert out.returncode != 0
    assert time.monotonic() - start < 15, "the surviving task was not killed"


def test_impossible_request_fails_at_once(tmp_path):
    # EnforcePartLimits=ALL: 9 GPUs on an 8-GPU node is refused, not left pending.
    out = _run(["srun", "-p", PARTITION, "--gres=gpu:9", "true"], tmp_path, timeout=10)
    assert out.returncode != 0
    assert "Requested node configuration is not available" in out.stderr


def test_site_only_quotatype_flag_is_rejected(tmp_path):
    # --quotatype exists only on clusters with that site's plugin; scripts must not pass it here.
    out = _run(["srun", "-p", PARTITION, "--quotatype=reserved", "true"], tmp_path, timeout=10)
    assert out.returncode == 255
    assert "unrecognized option" in out.stderr
