"""The fast engine's device side: a KV buffer written in place, the tree masks, and the layer loop.

The only module that calls transformers' decoder layers itself (their forward: hidden states,
a 4-D additive attention mask, position ids and embeddings, and the cache object, whose
`update` / `get_seq_length` `KVBuffer` implements). Everything else reaches the model through
its narrow interface (`embed`, `rotary`, `decoder_layers`, `final_norm`, `logits`).
"""

from __future__ import annotations

import torch

from dualfocus.engine.tree.plan import Patch, Step
from dualfocus.engine.tree.static import BUCKETS, Spare, StaticDecoder
from dualfocus.model.llava_llama import cache_kwarg


class KVBuffer:
    """Per-layer K/V buffers (R, kv_heads, capacity, head_dim), written in place.

    transformers' DynamicCache concatenates on every step, copying the whole cache each decode
    step; here a forward writes its new columns into preallocated space and attention reads a
    view. Capacity grows (one copy) only when a forward needs more than was reserved.
    """

    def __init__(self, n_layers: int, reserve: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.length = 0  # columns written by completed forwards
        self.reserve = reserve  # capacity of the first allocation
        self.write_index: torch.Tensor | None = None  # (S,): set by a static step (tree.static)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """The attention layers' cache call: store the new (R, H, S, D) columns, return all so far
        (a static step: the whole capacity, its mask hides what is not written)."""
        k, v = self.keys[layer_idx], self.values[layer_idx]
        if self.write_index is not None:
            k.index_copy_(2, self.write_index, key_states)
            v.index_copy_(2, self.write_index, value_states)
            return k, v
        end = self.length + key_states.shape[2]
        if k is None or end > k.shape[2]:
            capacity = max(end, self.reserve) if k is None else end + 256  # 256: room for decode steps
            k, v = _grow(k, key_states, capacity), _grow(v, value_states, capacity)
            self.keys[layer_idx], self.values[layer_idx] = k, v
        k[:, :, self.length : end] = key_states
        v[:, :, self.length : end] = value_states
        return k[:, :, :end], v[:, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    @property
    def capacity(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]


def _grow(old: torch.Tensor | None, like: torch.Tensor, capacity: int) -> torch.Tensor:
    # Zeros, not garbage: a static step reads the whole capacity, and 0 x NaN under a mask is NaN.
    new = like.new_zeros(like.shape[0], like.shape[1], capacity, like.shape[3])
    if old is not None:
        new[:, :, : old.shape[2]] = old
    return new


class StepTensors:
    """A Step's host lists as (R, S) device tensors."""

    def __init__(self, step: Step, n_image: int, device: torch.device):
        units = [u for new in step.rows for u in new.units]
        ints = [
            [u if type(u) is int else 0 for u in units],  # token ids (0 under patches and unused columns)
            [u.slot * n_image + u.index if type(u) is Patch else -1 for u in units],  # feature row, or -1
            [b for new in step.rows for b in new.branch],
            [p for new in step.rows for p in new.position],
            [b for new in step.rows for b in new.before],
        ]
        shape = (5, len(step.rows), step.width)
        self.token, self.patch, self.branch, self.position, self.before = (
            torch.tensor(ints, dtype=torch.long, device=device).view(shape))


class DeviceTree:
    """The device half of one call: the KV buffer, what each branch sees, and the image features."""

    def __init__(self, model, rows: int, reserve: int, static: str | None = None,
                 warmup_s: dict[int, float] | None = None, spare: Spare | None = None):
        self.model, self.rows, self.device = model, rows, model.text_device
        self.n_image = model.num_image_tokens
        layers = model.decoder_layers
        self.cache = KVBuffer(len(layers), reserve)
        self.cache_kwarg = cache_kwarg(type(layers[0]).forward)
        self.bool_mask = model.config._attn_implementation == "sdpa"
        self.sees = torch.zeros(rows, 4, 0, dtype=torch.bool, device=self.device)  # (R, branches, columns)
        self.features: torch.Tensor | None = None  # (slots * n_image, C)
        # Fixed-shape decode steps: None (eager only), "eager" (the static path run eagerly: CPU,
        # tests) or "graph" (captured and replayed on CUDA).
        self.static = StaticDecoder(self, static == "graph", warmup_s) if static else None
        if spare is not None:  # the buffer, inputs and graphs of a finished call of this shape
            if spare.key != (rows, reserve) or self.static is None:
                raise RuntimeError(f"internal: a spare of shape {spare.key} for a call of {(rows, reserve)}")
            self.cache.keys, self.cache.values, self.static = spare.keys, spare.values, spare.static
            self.static.tree = self

    def spare(self) -> Spare | None:
        """This call's buffer and static decoder for a later call (None: nothing worth keeping)."""
        if self.static is None or self.cache.capacity != self.cache.reserve:
            return None  # no static steps, or a buffer that grew past its shape
        spare = Spare((self.rows, self.cache.reserve), self.cache.keys, self.cache.values, self.static)
        self.static.tree = None  # the old call's features and masks may go
        return spare

    @property
    def decode_widths(self) -> tuple[int, ...]:
        """Widths a decode step is padded to (plan.StepBuilder.finish)."""
        return BUCKETS if self.static is not None else ()

    def add_features(self, features: torch.Tensor) -> None:
        """(N, n_image, C) features of the next N slots."""
        flat = features.flatten(0, 1)
        self.features = flat if self.features is None else torch.cat([self.features, flat])

    def run(self, step: Step, n_branches: int) -> tuple[torch.Tensor, StepTensors]:
        """The model over a step's new columns: hidden states (R, S, C) after the final norm."""
        self._widen(step, n_branches)
        t = StepTensors(step, self.n_image, self.device)
        has_patches = any(type(u) is Patch for new in step.rows for u in new.units)
        if self.static is not None and self.static.accepts(step, has_patches):
            hidden = self.static.run(t, step.start, self._mask(t, step.start, torch.bool))
        else:
            hidden = self._embed(t)
            hidden = self.layers(hidden, self._mask(t, step.start, hidden.dtype), t.position)
        self.cache.length += step.width
        return hidden, t

    def layers(self, hidden: torch.Tensor, mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """(R, S, C) embeddings -> (R, S, C) hidden states after the final norm, writing the KV buffer."""
        rope = self.model.rotary(hidden, position)
        for layer in self.model.decoder_layers:
            out = layer(hidden, attention_mask=mask, position_ids=position, position_embeddings=rope,
                        use_cache=True, **{self.cache_kwarg: self.cache})
            hidden = out[0] if isinstance(out, tuple) else out
        return self.model.final_norm(hidden)

    def _widen(self, step: Step, n_branches: int) -> None:
        """Grow `sees` by the step's columns (and branches as needed); set what each branch now sees."""
        old = self.sees
        if n_branches > old.shape[1] or step.width:
            self.sees = old.new_zeros(self.rows, max(n_branches, old.shape[1]), step.start + step.width)
            self.sees[:, : old.shape[1], : step.start] = old
        for entries, value in ((step.hidden, False), (step.visible, True)):  # retracted drafts, then new paths
            if entries:
                r = [row for row, _, cols in entries for _ in cols]
                b = [branch for _, branch, cols in entries for _ in cols]
                k = [col for _, _, cols in entries for col in cols]
                idx = torch.tensor([r, b, k], dtype=torch.long, device=self.device)
                self.sees[idx[0], idx[1], idx[2]] = value

    def _embed(self, t: StepTensors) -> torch.Tensor:
        emb = self.model.embed(t.token)  # (R, S, C)
        if self.features is None:
            return emb
        image = self.features[t.patch.clamp(min=0)].to(emb.dtype)  # (R, S, C)
        return torch.where((t.patch >= 0)[..., None], image, emb)

    def _mask(self, t: StepTensors, start: int, dtype: torch.dtype) -> torch.Tensor:
        """(R, 1, S, T+S) mask: new column s sees column k when k is on its branch's path and
        k <= start + s; unused columns see only themselves (finite, and seen by no one).

        Boolean (True: attend) under sdpa, which takes it as it is: no dense float tensor per forward.
        Kernels on CUDA (torch's sdp_utils: flash refuses any attn_mask, `check_for_attn_mask`), so
        every tree forward (prefill and decode) runs the memory-efficient kernel, or cuDNN attention
        where torch prefers it (Hopper, recent cuDNN); CLIP (no mask) may run flash. Other attention
        implementations (eager) get the additive float mask they add to the scores.
        """
        R, S = t.branch.shape
        rows = torch.arange(R, device=self.device)[:, None]
        allowed = self.sees[rows, t.branch.clamp(min=0)]  # (R, S, T+S)
        k = torch.arange(start + S, device=self.device)[None, None, :]
        own = (start + torch.arange(S, device=self.device))[None, :, None]
        allowed &= k <= own
        allowed = torch.where((t.branch < 0)[:, :, None], (k == own).expand(R, S, start + S), allowed)
        if self.bool_mask or dtype == torch.bool:
            return allowed[:, None]
        mask = torch.zeros(R, 1, S, start + S, dtype=dtype, device=self.device)
        return mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)

    def logprobs(self, hidden: torch.Tensor, t: StepTensors, step: Step) -> list[list[float]]:
        """The step's log-probs per new column: the known ones, plus log p(token) for wanted
        unknown text columns whose path predecessor is also new."""
        lps = [new.lps for new in step.rows]
        if not any(any(new.wanted) for new in step.rows):
            return lps
        known = torch.tensor(lps, device=self.device).view(t.token.shape)
        wanted = torch.tensor([new.wanted for new in step.rows], device=self.device).view(t.token.shape)
        text = (t.patch < 0) & (t.branch >= 0)
        r, s = (wanted & text & (t.before >= 0) & known.isnan()).nonzero(as_tuple=True)
        if len(r):
            at = hidden.device  # the last layers' device under a device_map
            logits = self.model.logits(hidden[r.to(at), t.before[r, s].to(at)]).float()  # (N, V)
            values = torch.log_softmax(logits, -1).gather(1, t.token[r, s][:, None].to(at)).squeeze(1)
            for row, col, v in zip(r.tolist(), s.tolist(), values.tolist()):
                lps[row][col] = v
        return lps
