"""Which chunk of the question file this process answers, and on which device.

From the arguments, else the environment (Slurm, torchrun); chunks are LLaVA's contiguous split
(ceil(n / k) questions per chunk).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

# Environment variables that give the shard, in order of precedence (after explicit arguments).
SHARD_ENV = (("SLURM_PROCID", "SLURM_NTASKS"), ("RANK", "WORLD_SIZE"), ("LOCAL_RANK", "WORLD_SIZE"))
# ... and the local GPU index.
DEVICE_ENV = ("SLURM_LOCALID", "LOCAL_RANK")


def split_list(lst: Sequence, n: int) -> list[Sequence]:
    """LLaVA's split: contiguous chunks of ceil(len / n) items (fewer than n chunks when len < n)."""
    if n < 1:
        raise ValueError(f"number of chunks must be >= 1, got {n}")
    chunk_size = math.ceil(len(lst) / n)
    if chunk_size == 0:
        return []
    return [lst[i : i + chunk_size] for i in range(0, len(lst), chunk_size)]


def get_chunk(lst: Sequence, n: int, k: int) -> Sequence:
    """Chunk k of n; empty (not an IndexError, as in LLaVA) when there are more chunks than items."""
    if not 0 <= k < n:
        raise ValueError(f"chunk index {k} is not in [0, {n})")
    chunks = split_list(lst, n)
    return chunks[k] if k < len(chunks) else lst[:0]


def resolve_shard(num_chunks: int | None = None, chunk_idx: int | None = None,
                  env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(num_chunks, chunk_idx): the arguments when given, else the environment, else (1, 0).

    Precedence: explicit arguments; ``SLURM_NTASKS``/``SLURM_PROCID`` (srun, one task per GPU);
    ``WORLD_SIZE``/``RANK`` (torchrun, across nodes); ``WORLD_SIZE``/``LOCAL_RANK``; one chunk.
    Giving only one of the two arguments is an error (the other cannot be guessed safely).
    """
    if (num_chunks is None) != (chunk_idx is None):
        raise ValueError("give both --num-chunks and --chunk-idx, or neither (then the environment decides)")
    if num_chunks is None:
        env = os.environ if env is None else env
        for rank_var, size_var in SHARD_ENV:
            if env.get(rank_var) not in (None, "") and env.get(size_var) not in (None, ""):
                num_chunks, chunk_idx = int(env[size_var]), int(env[rank_var])
                break
        else:
            num_chunks, chunk_idx = 1, 0
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"chunk {chunk_idx} of {num_chunks} does not exist")
    return num_chunks, chunk_idx


def task_device(device: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The device to load the model on: the argument when given, else one GPU per local rank.

    ``SLURM_LOCALID``, else ``LOCAL_RANK``, picks ``cuda:<rank % visible GPUs>`` (a task that sees
    one GPU, e.g. under ``--gpus-per-task``, gets ``cuda:0``); no rank: ``cuda``; no CUDA: ``cpu``.
    ``auto`` spreads one model over every visible GPU (accelerate's device map).
    """
    if device:
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    env = os.environ if env is None else env
    for var in DEVICE_ENV:
        if env.get(var) not in (None, ""):
            return f"cuda:{int(env[var]) % torch.cuda.device_count()}"
    return "cuda"
