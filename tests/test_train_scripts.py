"""scripts/train/*.sh before anything launches: their own help, and the fp32 advice on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "train"


def run_script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / name), *args], env=dict(os.environ, PYTHON=sys.executable, **env),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name, own, other", [
    ("finetune_dualfocus_lora.sh", "DualFocus LoRA fine-tuning", "full fine-tuning"),
    ("finetune_dualfocus.sh", "DualFocus full fine-tuning", "LoRA fine-tuning"),
])
def test_help_prints_the_scripts_own_header(name, own, other):
    proc = run_script(name, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith(f"# {name} MODEL DATA_PATH"), proc.stdout + proc.stderr
    assert own in proc.stdout and other not in proc.stdout


def test_slurm_script_help_exits_0_and_a_missing_argument_exits_2():
    proc = run_script("slurm_finetune_dualfocus.sh", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("# slurm_finetune_dualfocus.sh full|lora MODEL")
    proc = run_script("slurm_finetune_dualfocus.sh", "full", "model-only")
    assert proc.returncode == 2 and proc.stderr.startswith("# slurm_finetune_dualfocus.sh full|lora MODEL")


def test_lora_script_without_arguments_prints_its_own_usage():
    proc = run_script("finetune_dualfocus_lora.sh", "model-only")
    assert proc.returncode == 2 and proc.stderr.startswith("# finetune_dualfocus_lora.sh MODEL")


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the scripts launch training")
@pytest.mark.parametrize("name, precision, extra, wanted", [
    ("finetune_dualfocus.sh", None, [], "--bf16 True --tf32 True"),  # the shipped default
    ("finetune_dualfocus_lora.sh", None, ["--", "--bf16", "False"], "--tf32 True"),  # the last value wins
    ("finetune_dualfocus.sh", "", ["--", "--fp16"], "--fp16 True"),  # a bare flag is True
    ("finetune_dualfocus.sh", "", ["--", "--bf16=true"], "--bf16 True"),
])
def test_half_precision_on_a_cpu_stops_before_launching_and_says_how(tmp_path, name, precision, extra, wanted):
    env = {"CUDA_VISIBLE_DEVICES": ""} | ({} if precision is None else {"PRECISION_ARGS": precision})
    proc = run_script(name, "model", "train.json", "images", str(tmp_path / "out"), *extra, **env)
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line == (f"{name}: no CUDA GPU here, and '{wanted}' needs one; on a CPU train in fp32: "
                    'set PRECISION_ARGS="" (or append -- --bf16 False --tf32 False)')
    assert not (tmp_path / "out").exists()
