"""DualFocus as an lmms-eval model, registered through the ``lmms_eval.models`` entry point.

    pip install -e ".[lmms]"
    lmms-eval --model dualfocus --model_args pretrained=CKPT --tasks TASK

Importing this package is cheap: it imports neither lmms-eval nor torch, and loads no model. The
model class lives in `.model`; lmms-eval imports it when a run asks for ``--model dualfocus``.
"""

from __future__ import annotations

MODEL_ID = "dualfocus"
CLASS_PATH = "dualfocus.integrations.lmms_eval.model.DualFocusLMMs"


def manifest():
    """The entry point's payload: lmms-eval's `ModelManifest` for the ``dualfocus`` model."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)
