"""Where a checkpoint is: a local directory, or a Hugging Face hub id resolved the usual way.

A path-like name never goes to the hub; a missing directory says which folder above it exists
and the nearest name in it.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from dualfocus.model.checkpoint_io import CheckpointError


def resolve_path(model_path: str) -> Path:
    """A local directory, or a hub id resolved the usual way (needs network and huggingface_hub).

    A path-like argument (see `_path_like`) never goes to the hub: if missing, it is a missing directory.
    """
    p = Path(os.path.expanduser(model_path))
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointError(f"{p}: is a file; a checkpoint is a directory")
    if _path_like(model_path) or not _looks_like_hub_id(model_path):
        raise FileNotFoundError(f"checkpoint directory {model_path} does not exist{_nearest_hint(p)}; check the path")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_path))
    except Exception as e:  # noqa: BLE001 - hub errors vary; the message says which id failed
        cause = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{model_path}: no local directory of that name, and the Hugging Face hub could not "
                              f"provide it as a model id ({cause}); check the path, or the id and the network") from e


def _path_like(name: str) -> bool:
    """By shape (./x, ~/x, /x, x/, a/b/c) or because its first folder exists here (a/b with a/ here)."""
    name = name.replace(os.sep, "/")
    if name.startswith((".", "~", "/")) or name.endswith("/") or name.count("/") > 1:
        return True
    return "/" in name and Path(name.split("/")[0]).is_dir()


def _nearest_hint(p: Path) -> str:
    """' (<folder> has no <name>; did you mean <close name>?)' from the deepest existing folder above `p`."""
    parent = p.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return ""
    wanted = p.parts[len(parent.parts)]
    close = difflib.get_close_matches(wanted, [c.name for c in parent.iterdir() if c.is_dir()], n=1, cutoff=0.6)
    return f" ({parent} has no {wanted}; did you mean {parent / close[0]}?)" if close else f" ({parent} has no {wanted})"


def is_hub_id(name: str) -> bool:
    """'owner/name' shaped and not path-like: the hub may be asked for it."""
    return _looks_like_hub_id(name) and not _path_like(name)


def _looks_like_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", name)) and not name.startswith((".", "/", "~"))
