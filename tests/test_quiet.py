"""Where nothing trains, DeepSpeed stays unimported: its "Setting accelerator to CPU" warning is not
printed by the eval, demo and serve paths (a guard: 9bd09db already kept it lazy, in dualfocus.train)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CODE = """
import sys
import dualfocus.demo, dualfocus.serve.cli, dualfocus.serve.visualize, dualfocus.eval.runner
import dualfocus.eval.model_vqa_loader, dualfocus.zoom.evaluate, dualfocus.train.build_data
from dualfocus.tiny.checkpoint import build_tiny_checkpoint
from dualfocus.model.builder import load_pretrained_model
from dualfocus.engine.fast import FastEngine
load_pretrained_model(str(build_tiny_checkpoint(sys.argv[1])), None, None, device="cpu")
print(sorted(m for m in sys.modules if m.split(".")[0] == "deepspeed"))
"""


def test_eval_demo_and_serve_paths_do_not_import_deepspeed(tmp_path):
    proc = subprocess.run([sys.executable, "-c", CODE, str(tmp_path / "ckpt")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "[]"
    assert "Setting accelerator" not in proc.stderr
