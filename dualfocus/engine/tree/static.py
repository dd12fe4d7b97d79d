"""Decode steps of fixed shape over one call's KV buffer, replayable as CUDA graphs.

A decode step of the tree engine feeds each row a few text columns (a pending token, drafts).
Here every such step has the shape (R, S) with S one of `BUCKETS` (the plan pads rows with unused
columns: `StepBuilder.finish(widths)`), and reads the *whole* KV capacity (R, H, capacity, D)
under a boolean mask (R, 1, S, capacity) that hides what is not on a column's path and what is
not written yet. Its inputs live in tensors allocated once per bucket and updated in place:
token ids, positions, the mask, and the KV write index (the new columns' indices: the buffer is
written with `index_copy_`, not a slice whose bounds would change every step). Nothing in the step
then depends on a host value, so on CUDA it is captured once per bucket (`torch.cuda.CUDAGraph`,
warm-up timed in `warmup_s`) and replayed; on CPU the very same function runs eagerly, which is
what the tests compare with the eager tree path and the reference engine.

Steps this cannot take (image columns, wider than the last bucket, past the KV capacity, an
attention other than sdpa) run on the eager tree path; growing the buffer drops the graphs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

BUCKETS = (1, 2, 4, 8)  # step widths: 1 plain decoding; up to 5 with a box draft (pending + 4)
CAPACITY_STEP = 256  # KV capacities are rounded up to this, so that calls of similar prompts share a shape


@dataclass
class Spare:
    """A finished call's KV buffer and static decoder (its inputs and graphs point into that buffer),
    kept for the next call of the same shape: graphs are captured once per shape, not per call.
    Whatever the old call left in the buffer is finite and never seen: masks come from the new call."""

    key: tuple[int, int]  # (rows, capacity)
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    static: StaticDecoder


@dataclass
class StaticInputs:
    """One bucket's inputs, allocated once; a step copies its values in."""

    token: torch.Tensor  # (R, S) long
    position: torch.Tensor  # (R, S) long
    mask: torch.Tensor  # (R, 1, S, capacity) bool: True = attend
    index: torch.Tensor  # (S,) long: the KV columns the step writes


class StaticDecoder:
    """Fixed-shape decode steps for one DeviceTree (its model, rows and KV buffer)."""

    def __init__(self, tree, capture: bool, warmup_s: dict[int, float] | None = None):
        self.tree, self.capture = tree, capture
        self.inputs: dict[int, StaticInputs] = {}
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}  # S -> (graph, its output)
        self.warmup_s = warmup_s if warmup_s is not None else {}  # S -> seconds spent warming up and capturing
        self.capacity = 0  # of the KV buffer the inputs and graphs were made for
        self.pool = None

    def accepts(self, step, has_patches: bool) -> bool:
        cache = self.tree.cache
        return (step.width in BUCKETS and not has_patches and cache.capacity >= step.start + step.width
                and self.tree.bool_mask)

    def run(self, t, start: int, allowed: torch.Tensor) -> torch.Tensor:
        """One step: `t` its StepTensors (R, S), `allowed` its (R, 1, S, start + S) mask -> hidden (R, S, C)."""
        cache = self.tree.cache
        if cache.capacity != self.capacity:  # a new or grown buffer: earlier inputs and graphs are stale
            self.inputs.clear()
            self.graphs.clear()
            self.capacity = cache.capacity
        S = t.token.shape[1]
        inp = self.inputs.get(S) or self._allocate(S)
        inp.token.copy_(t.token)
        inp.position.copy_(t.position)
        inp.index.copy_(torch.arange(start, start + S, device=inp.index.device))
        inp.mask.zero_()
        inp.mask[..., : start + S].copy_(allowed)
        if not self.capture:
            return self._step(inp)
        if S not in self.graphs:
            self._capture(S, inp)
        graph, out = self.graphs[S]
        graph.replay()
        return out

    def _allocate(self, S: int) -> StaticInputs:
        R, dev = self.tree.rows, self.tree.device
        inp = StaticInputs(torch.zeros(R, S, dtype=torch.long, device=dev),
                           torch.zeros(R, S, dtype=torch.long, device=dev),
                           torch.zeros(R, 1, S, self.capacity, dtype=torch.bool, device=dev),
                           torch.zeros(S, dtype=torch.long, device=dev))
        self.inputs[S] = inp
        return inp

    def _step(self, inp: StaticInputs) -> torch.Tensor:
        """The model over the step: every shape fixed, the KV written at `inp.index`."""
        tree = self.tree
        tree.cache.write_index = inp.index
        try:
            hidden = tree.model.embed(inp.token)  # (R, S, C): decode steps hold text only
            return tree.layers(hidden, inp.mask, inp.position)
        finally:
            tree.cache.write_index = None

    def _capture(self, S: int, inp: StaticInputs) -> None:
        """Warm up on a side stream, then record the step once (CUDA only). The warm-up writes the
        step's own KV columns, which the replay that follows writes again."""
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step(inp)
        torch.cuda.current_stream().wait_stream(side)
        self.pool = self.pool or torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self._step(inp)
        self.graphs[S] = (graph, out)
        torch.cuda.synchronize()
        self.warmup_s[S] = self.warmup_s.get(S, 0.0) + time.perf_counter() - t0
