"""The CLIP processor is always transformers' PIL backend (4.31's pixels; tests/test_fidelity.py runs
4.31), built from preprocessor_config.json as data, and nothing advises installing torchvision."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from dualfocus.model.image_processor import PreprocessorConfigError, load_clip_processor

ROOT = Path(__file__).resolve().parents[1]


def test_checkpoint_processor_is_the_pil_backend(tiny_checkpoint):
    processor = load_clip_processor(tiny_checkpoint.parent / "llava-clip")
    assert type(processor) is CLIPImageProcessorPil
    assert (processor.size, processor.crop_size) == ({"shortest_edge": 28}, {"height": 28, "width": 28})


def test_missing_or_broken_preprocessor_config_is_named(tmp_path):
    with pytest.raises(PreprocessorConfigError, match="preprocessor_config.json: missing"):
        load_clip_processor(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("[1, 2]")
    with pytest.raises(PreprocessorConfigError, match="expected a JSON object"):
        load_clip_processor(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 7}, "junk": 1}))
    assert load_clip_processor(tmp_path).size == {"shortest_edge": 7}


def test_loading_a_checkpoint_prints_no_torchvision_advice():
    """transformers' CLIPImageProcessor falls back to PIL with advice to install torchvision (which
    would pull in the CUDA stack); the loader never builds that class."""
    code = ("from dualfocus.model.builder import load_pretrained_model;"
            "load_pretrained_model('checkpoints/dualfocus-zoom-tiny', None, None, device='cpu')")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "torchvision" not in run.stdout + run.stderr
