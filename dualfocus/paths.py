"""Where a checkout keeps what the repository ships: the demo's data, the zoom bench's held-out
files and the zoom checkpoint (one place, below every layer that needs them)."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "playground" / "demo"
ZOOM_DATA = REPO / "playground" / "zoom"
ZOOM_CHECKPOINT = REPO / "checkpoints" / "dualfocus-zoom-tiny"
