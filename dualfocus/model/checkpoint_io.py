"""Reading and writing checkpoint weights: safetensors or torch `.bin`, single file or sharded.

`.bin` files are untrusted pickles: they load with `weights_only=True` only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# The original layout's names, shared by the loader and the writer.
TOWER_PREFIX = "model.vision_tower.vision_tower."
# Config keys that describe the file rather than the model.
CONFIG_META_KEYS = ("model_type", "architectures", "transformers_version", "auto_map", "_name_or_path", "torch_dtype",
                    "dtype")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, with the file and the reason."""


def read_json_object(path: Path, error: type[CheckpointError] = CheckpointError) -> dict:
    """A checkpoint's JSON settings file (tokenizer or preprocessor config) as a dict; ``error``, naming
    the file, when it cannot be read or is not a JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: cannot read ({e})") from e
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object")
    return data


def weight_files(directory: str | os.PathLike) -> list[Path]:
    """The weight files of a checkpoint directory (safetensors preferred), or [] if none.

    Every file must lie inside the directory (see `confined`): an index is data from the checkpoint.
    """
    d = Path(directory)
    for index_name in INDEX_FILES:
        index = d / index_name
        if index.is_file():
            try:
                names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{index}: not a valid weight index ({e})") from e
            files = [confined(d, name, index) for name in names]
            missing = [n for n, f in zip(names, files) if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"{index} names shard(s) that do not exist: {', '.join(missing)}")
            return files
    for name in WEIGHT_FILES:
        if (d / name).is_file():
            return [confined(d, name)]
    return []


def confined(directory: Path, name: object, named_in: Path | None = None) -> Path:
    """`directory / name`, refused unless it resolves (symlinks followed) inside `directory`.

    A checkpoint inside the Hugging Face cache may resolve anywhere in that cache: its snapshot's
    files are links into the cache's `blobs/`.
    """
    where = f"{named_in} names" if named_in else f"{directory}:"
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise CheckpointError(f"{where} weight file {name!r}, which is not a plain file name inside {directory}; "
                              "refusing to read outside the checkpoint (fix or regenerate the index)")
    target = (directory / name).resolve()
    if not any(target.is_relative_to(root) for root in _roots(directory)):
        raise CheckpointError(f"{where} {name}, a link to {target} outside {directory}; refusing to read outside "
                              "the checkpoint (copy the file into the checkpoint directory)")
    return directory / name


def _roots(directory: Path) -> list[Path]:
    """Where a checkpoint's files may resolve: the directory; the hub cache too if it lies in it."""
    from huggingface_hub import constants

    real, cache = directory.resolve(), Path(constants.HF_HUB_CACHE).resolve()
    return [real, cache] if real.is_relative_to(cache) else [real]


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    for f in files:
        if f.suffix == ".safetensors":
            try:  # a truncated download fails here; safetensors' message does not name the file
                with safe_open(str(f), framework="pt", device="cpu") as sf:
                    tensors = {key: sf.get_tensor(key) for key in sf.keys()}
            except SafetensorError as e:
                raise ValueError(f"{f}: cannot be read as a safetensors file ({e})") from e
            yield from tensors.items()
        else:
            try:
                state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # noqa: BLE001 - torch raises many types for bad pickles
                raise ValueError(f"{f}: cannot be read as a weights-only torch checkpoint ({e})") from e
            if not isinstance(state, dict):
                raise ValueError(f"{f}: expected a dict of tensors, got {type(state).__name__}")
            yield from state.items()


def load_state_dict(files: list[Path]) -> dict[str, torch.Tensor]:
    return dict(iter_tensors(files))


def save_state_dict(
    state: dict[str, torch.Tensor],
    directory: str | os.PathLike,
    *,
    safe_serialization: bool = True,
    max_shard_bytes: int | None = None,
) -> list[Path]:
    """Write `state` as one file, or shards plus an index when it exceeds `max_shard_bytes`."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if max_shard_bytes and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    stem, ext = ("model", "safetensors") if safe_serialization else ("pytorch_model", "bin")
    if len(shards) == 1:
        names = [f"{stem}.{ext}"]
    else:
        names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        if safe_serialization:
            save_file(shard, str(d / name), metadata={"format": "pt"})
        else:
            torch.save(shard, d / name)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
            "weight_map": {k: n for n, shard in zip(names, shards) for k in shard},
        }
        (d / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=2))
    return [d / n for n in names]
