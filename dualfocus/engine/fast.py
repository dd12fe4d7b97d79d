"""The fast engine's verbs: many requests per forward, each image through CLIP once, shared KV never copied.

`tree.plan` lays the requests out as token trees (pure Python), `tree.forward` runs the model over
the new columns; here the verbs place the requests, run the generation loop and read the scores. Results
equal the reference engine's; hints only decide what is shared and kept.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field

import torch

from dualfocus.engine import decode
from dualfocus.engine.base import (
    Engine,
    Generation,
    GenerationRequest,
    Handle,
    Request,
    Score,
    ScoringRequest,
    max_new_tokens,
    prompt_ids,
)
from dualfocus.engine.options import STATIC_DECODE
from dualfocus.engine.tree import plan
from dualfocus.engine.tree.forward import DeviceTree
from dualfocus.engine.tree.static import CAPACITY_STEP, Spare

log = logging.getLogger(__name__)


@dataclass
class CallState:
    """One call's token trees, host and device halves, and its images (a Handle keeps all of it alive)."""

    forest: plan.Forest
    tree: DeviceTree
    slots: dict[int, int] = field(default_factory=dict)  # id(PIL image) -> feature slot
    images: list = field(default_factory=list)  # keeps the PIL objects alive, so their ids stay unique




class FastEngine(Engine):
    """`static_decode`: decode steps of fixed shape (tree.static): "graph" captures them as CUDA
    graphs, "eager" runs the same fixed-shape steps eagerly (CPU; the tests), "off" keeps the
    growing eager steps; "auto": "graph" on one CUDA device, else "off". `warmup_s` sums the capture time
    per step width over the engine's life. The default is "off" until a GPU run of benchmarks/gpu_run.sh
    has checked the captured path against the eager one (no GPU was at hand when it was written)."""

    def __init__(self, model, tokenizer, image_processor, image_batch: int = 64, static_decode: str = "off"):
        super().__init__(model, tokenizer, image_processor)
        self.image_batch = image_batch  # CLIP forward chunk
        if static_decode not in STATIC_DECODE:
            raise ValueError(f"static_decode must be one of {STATIC_DECODE}, got {static_decode!r}")
        one_device = len({p.device for p in model.parameters()}) == 1  # graphs of a device_map: not here
        if static_decode == "auto":
            static_decode = "graph" if self.device.type == "cuda" and one_device else "off"
        if static_decode == "graph" and self.device.type != "cuda":
            raise ValueError(f"static_decode='graph' needs a CUDA model, this one is on {self.device}")
        self.static_decode = None if static_decode == "off" else static_decode
        self.warmup_s: dict[int, float] = {}
        self._spare: Spare | None = None

    # -- verbs ------------------------------------------------------------------------------------
    def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        call, leaves, hidden, step = self._place(requests)
        decodings = decode.start(requests, leaves, step, self.device)
        decode.run(self, call, decodings, hidden, step)
        return [Generation(d.tokens, Handle(call, *d.leaf), d.forwards) for d in decodings]

    def _loglikelihood(self, requests: list[ScoringRequest]) -> list[Score]:
        n = self.model.num_image_tokens
        labels = [plan.label_units(r.input_ids, r.labels, n) for r in requests]
        call, leaves, _, _ = self._place(requests, labels)
        scores = [self._score(call, leaf, lab) for leaf, lab in zip(leaves, labels)]
        missing = [i for i, sc in enumerate(scores) if sc is None]
        if missing:  # never expected: say so, and compute those without reuse (exact either way)
            log.warning("fast engine: %d scoring request(s) lacked a recorded log-prob; recomputed without "
                        "reuse", len(missing))
            fresh = [ScoringRequest(requests[i].input_ids, requests[i].labels, requests[i].images) for i in missing]
            call, leaves, _, _ = self._place(fresh, [labels[i] for i in missing])
            for i, leaf in zip(missing, leaves):
                scores[i] = self._score(call, leaf, labels[i], computed_here=True)
        return scores

    # -- placing requests in rows and running their prompts ----------------------------------------
    def _place(self, requests: list[Request], labels: list[list[int]] | None = None):
        """Each request on a new branch (of a new row, or of its parent's row), prefilled.

        Returns the call state, each request's (row, branch), and the hidden states and Step of the prefill.
        """
        parented = requests[0].parent is not None
        call = requests[0].parent.state if parented else self._new_call(requests)
        self._register_images(call, requests)
        n = self.model.num_image_tokens
        units = [plan.units_of(prompt_ids(r), [call.slots[id(im)] for im in r.images], n) for r in requests]
        if labels is not None:  # scoring: every log-prob may be labelled
            records = [len(u) for u in units]
        else:
            records = [plan.unit_index(prompt_ids(r), r.keep_logprobs, n) for r in requests]
        builder = plan.StepBuilder(call.forest)
        if parented:
            leaves = [plan.place_child(builder, (r.parent.row, r.parent.branch), u, rec,
                                       labels[i] if labels is not None else None)
                      for i, (r, u, rec) in enumerate(zip(requests, units, records))]
        else:
            rows = plan.row_groups([getattr(r, "group", None) for r in requests])
            leaves = plan.place_fresh(builder, units, rows, records)
        step = builder.finish()
        return call, leaves, self._forward(call, step), step

    def _new_call(self, requests: list[Request]) -> CallState:
        """State for new rows, its KV buffer sized for the requests and the turns they expect."""
        n_rows = len(plan.row_groups([getattr(r, "group", None) for r in requests]))
        reserve = plan.reserve_columns(
            longest=max(len(prompt_ids(r)) for r in requests), n_image=self.model.num_image_tokens,
            new_tokens=max(max_new_tokens(r) for r in requests),
            turns=max(getattr(r, "expect_turns", 0) for r in requests))
        spare = None
        if self.static_decode:  # reuse the last finished call's buffer and graphs when the shape matches
            reserve = -(-reserve // CAPACITY_STEP) * CAPACITY_STEP
            spare, self._spare = self._spare, None  # a mismatch is freed before the new buffer is made
            spare = spare if spare is not None and spare.key == (n_rows, reserve) else None
        tree = DeviceTree(self.model, n_rows, reserve, self.static_decode, self.warmup_s, spare)
        call = CallState(plan.Forest(n_rows), tree)
        if self.static_decode:
            weakref.finalize(call, self._keep_spare, tree)
        return call

    def _keep_spare(self, tree: DeviceTree) -> None:
        """When a call's last handle is gone: keep its buffer for the next call (one at most: memory)."""
        self._spare = tree.spare()

    def _register_images(self, call: CallState, requests: list[Request]) -> None:
        """Each new image (by identity) through CLIP and the projector once, into the next slot."""
        new = []
        for r in requests:
            for im in r.images:
                if id(im) not in call.slots:
                    call.slots[id(im)] = len(call.images)
                    call.images.append(im)
                    new.append(im)
        for i in range(0, len(new), self.image_batch):
            call.tree.add_features(self.model.image_features(self.pixel_values(new[i : i + self.image_batch])))

    def _forward(self, call: CallState, step: plan.Step) -> torch.Tensor:
        """Run a step's new columns and record their log-probs: hidden states (R, S, C)."""
        hidden, tensors = call.tree.run(step, call.forest.n_branches)
        call.forest.commit(step, call.tree.logprobs(hidden, tensors, step))
        return hidden

    # -- scoring ----------------------------------------------------------------------------------
    def _score(self, call: CallState, leaf, labels: list[int], computed_here: bool = False) -> Score | None:
        result = plan.mean_nll(call.forest.path_lps(leaf), labels, computed_here)
        if result is None:
            log.warning("row %d branch %d: a labelled unit has no log-prob", *leaf)
            return None
        return Score(*result)
