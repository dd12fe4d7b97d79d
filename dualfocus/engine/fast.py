"""The fast engine: many requests per forward, each image through CLIP once, shared KV never copied.

Every batch row holds a *tree* of token sequences in one KV cache. A row is a set of branches; a
branch sees a prefix of its parent's path plus its own columns. For DualFocus a row is one
question: the trunk (system + image) feeds a macro branch and a box branch decoded side by side;
the micro turn continues the box branch (with the crop), and the candidates to score continue the
micro branch. Nothing shared is recomputed or copied: a column that a branch must not see is
masked out, never moved. The attention mask is therefore an explicit 4-D mask built per forward.

Results equal the reference engine's: a request reuses the KV of the longest common prefix of its
token units (token ids, image patches) with its parent's path, minus one unit that is fed again so
that the logits of its first new token are computed here. For scoring, reuse also stops before the
first labelled token whose log-probability the path does not record.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from dualfocus.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from dualfocus.engine.base import (
    Engine,
    Generation,
    GenerationRequest,
    Score,
    ScoringRequest,
    is_finished,
    max_new_tokens,
    pick_tokens,
)

# transformers renamed the layers' `past_key_values` argument to `cache` (5.2x).
LAYER_CACHE_KWARG = "cache" if "cache" in inspect.signature(LlamaDecoderLayer.forward).parameters else "past_key_values"
log = logging.getLogger(__name__)
PAD = -(2**62)  # unit of an unused column
_IMAGE_BASE = -(2**40)  # image patch units: _IMAGE_BASE - (slot * num_tokens + patch); far from -100/-200


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
        self.reserve = reserve  # capacity hint for the first allocation

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """The attention layers' cache call: store the new (R, H, S, D) columns, return all so far."""
        end = self.length + key_states.shape[2]
        k, v = self.keys[layer_idx], self.values[layer_idx]
        if k is None or end > k.shape[2]:
            capacity = max(end, self.reserve) if k is None else end + 256  # 256: room for decode steps
            k, v = _grow(k, key_states, capacity), _grow(v, value_states, capacity)
            self.keys[layer_idx], self.values[layer_idx] = k, v
        k[:, :, self.length : end] = key_states
        v[:, :, self.length : end] = value_states
        return k[:, :, :end], v[:, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length


def _grow(old: torch.Tensor | None, like: torch.Tensor, capacity: int) -> torch.Tensor:
    new = like.new_empty(like.shape[0], like.shape[1], capacity, like.shape[3])
    if old is not None:
        new[:, :, : old.shape[2]] = old
    return new


@dataclass(frozen=True)
class Handle:
    """A leaf of a row's tree: where a later request can continue."""

    state: TreeState
    row: int
    branch: int


@dataclass
class Segment:
    """New columns appended to one branch of one row."""

    branch: int
    units: list[int]
    lps: list[float] | None = None  # known log-probabilities of the units (NaN: unknown)
    record: int = 0  # compute the unknown log-probs of this many leading units (see _place)


class TreeState:
    """KV cache plus per-column bookkeeping for R rows of token trees.

    On the host, per row: `units` (token id, image patch unit, or PAD per column), `lps`
    (log p(unit | path before it) where known, else NaN) and `paths` (per branch, its columns in
    order). On the device: `vis` (R, NB, T), the columns each branch sees (its own included), for
    the attention mask. Keeping the bookkeeping on the host means the decode loop never waits
    for the device to learn it.
    """

    def __init__(self, rows: int, device: torch.device, num_image_tokens: int, n_layers: int, reserve: int):
        self.rows, self.device, self.num_image_tokens = rows, device, num_image_tokens
        self.cache = KVBuffer(n_layers, reserve)
        self.width = 0  # columns so far
        self.units: list[list[int]] = [[] for _ in range(rows)]
        self.lps: list[list[float]] = [[] for _ in range(rows)]
        self.paths: list[list[list[int]]] = [[] for _ in range(rows)]
        self.vis = torch.zeros(rows, 4, 0, dtype=torch.bool, device=device)
        self.pending_vis: list[tuple[int, int, list[int]]] = []  # (row, branch, columns) to set in vis
        self.slots: dict[int, int] = {}  # id(PIL image) -> feature slot
        self.images: list = []  # keeps the PIL objects alive, so their ids stay unique
        self.features: torch.Tensor | None = None  # (n_slots, num_tokens, C)

    def new_branch(self, row: int, parent: int | None = None, cut: int = 0) -> int:
        """A branch seeing the first `cut` columns of `parent`'s path."""
        inherited = self.paths[row][parent][:cut] if parent is not None else []
        self.paths[row].append(list(inherited))
        if inherited:
            self.pending_vis.append((row, len(self.paths[row]) - 1, inherited))
        return len(self.paths[row]) - 1

    def path_units(self, row: int, branch: int) -> list[int]:
        units = self.units[row]
        return [units[c] for c in self.paths[row][branch]]

    def path_lps(self, row: int, branch: int) -> list[float]:
        lps = self.lps[row]
        return [lps[c] for c in self.paths[row][branch]]


class FastEngine(Engine):
    def __init__(self, model, tokenizer, image_processor, stop_str: str | None = "</s>", image_batch: int = 64):
        super().__init__(model, tokenizer, image_processor, stop_str)
        self.image_batch = image_batch  # CLIP forward chunk

    # -- verbs ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        self.check_context(requests)
        state, leaves, hidden, cols = self._place(requests, labels=None)
        tokens = self._decode(state, leaves, [r.params for r in requests], hidden, cols)
        return [Generation(self.decode(t), t, Handle(state, *leaf)) for t, leaf in zip(tokens, leaves)]

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[ScoringRequest]) -> list[Score]:
        if not requests:
            return []
        self.check_context(requests)
        labels = [self._label_units(r) for r in requests]
        state, leaves, _, _ = self._place(requests, labels)
        scores = [self._score(state, leaf, lab) for leaf, lab in zip(leaves, labels)]
        missing = [i for i, sc in enumerate(scores) if sc is None]
        if missing:  # never expected: say so, and compute those without reuse (exact either way)
            log.warning("fast engine: %d scoring request(s) lacked a recorded log-prob; recomputed without "
                        "reuse", len(missing))
            fresh = [ScoringRequest(requests[i].input_ids, requests[i].labels, requests[i].images) for i in missing]
            state, leaves, _, _ = self._place(fresh, [labels[i] for i in missing])
            for i, leaf in zip(missing, leaves):
                scores[i] = self._score(state, leaf, labels[i], computed_here=True)
        return scores

    # -- placing requests in rows ---------------------------------------------------------------
    def _place(self, requests, labels):
        """Put each request on a new branch (of a new row, or of its parent's row) and prefill it.

        Returns the state, each request's (row, branch) and what `_extend` returns.
        """
        parents = [r.parent for r in requests]
        if any(p is not None for p in parents):
            if any(p is None for p in parents) or len({id(p.state) for p in parents}) != 1:
                raise ValueError("a batch either continues one earlier call's handles (all of them) or none")
            state = parents[0].state
        else:
            groups: dict = {}
            for i, r in enumerate(requests):
                key = ("group", r.group) if getattr(r, "group", None) is not None else ("own", i)
                groups.setdefault(key, []).append(i)
            # Reserve these prompts and their generations, then one more turn with an image and its
            # generation (DualFocus's micro turn) and a little scoring: growing later copies the cache.
            n_img = self.model.model.vision_tower.num_tokens
            longest = max(len(self.request_ids(r)) for r in requests)
            new_tokens = max(max_new_tokens(r) for r in requests)
            reserve = 2 * (longest + n_img) + 3 * new_tokens + 64
            state = TreeState(len(groups), self.device, n_img, len(self.model.model.layers), reserve)
        self._register_images(state, requests)
        units = [self._units(state, r) for r in requests]
        if labels is not None:
            for i, (u, lab) in enumerate(zip(units, labels)):
                bad = [j for j, (a, b) in enumerate(zip(u, lab)) if b != IGNORE_INDEX and a != b]
                if bad:
                    raise ValueError(f"scoring request {i}: labels differ from input_ids at {bad[:5]}")

        plan: dict[int, list[Segment]] = {}
        leaves: list[tuple[int, int]] = [None] * len(requests)  # type: ignore[list-item]
        if parents[0] is not None:
            for i, (req, u) in enumerate(zip(requests, units)):
                p = req.parent
                path_lps = state.path_lps(p.row, p.branch)
                cut = _common_prefix(state.path_units(p.row, p.branch), u)
                if labels is not None:
                    cut = _first_unknown_label(labels[i], path_lps, cut)
                cut = max(min(cut, len(u)) - 1, 0)  # feed one shared unit again: its logits are needed
                b = state.new_branch(p.row, p.branch, cut)
                first_lp = path_lps[cut] if cut < len(path_lps) else float("nan")
                lps = [first_lp] + [float("nan")] * (len(u) - cut - 1)
                # Log-probs cost an lm_head row each. Scoring needs all of its own; a continuation
                # records those before its first image: a later request that replays this turn
                # may label them (DualFocus: the box answer and its "</s>"), never the prompt after.
                new = u[cut:]
                record = len(new) if labels is not None else next(
                    (k for k, t in enumerate(new) if _is_image_unit(t)), len(new))
                plan.setdefault(p.row, []).append(Segment(b, new, lps, record))
                leaves[i] = (p.row, b)
        else:
            everything = labels is not None  # scoring: every log-prob may be labelled
            for row, members in enumerate(groups.values()):
                trunk_len = max(_common_prefix_all([units[i] for i in members]) - 1, 0)
                trunk = state.new_branch(row)
                segs = [Segment(trunk, units[members[0]][:trunk_len], record=trunk_len if everything else 0)]
                for i in members:
                    rest = units[i][trunk_len:]  # a child of the trunk, made in _extend
                    segs.append(Segment(-1 - trunk, rest, record=len(rest) if everything else 0))
                    leaves[i] = (row, len(segs) - 1)  # provisional: segment index
                plan[row] = segs
        hidden, cols = self._extend(state, plan)
        if parents[0] is None:
            for i, (row, seg_index) in enumerate(leaves):
                leaves[i] = (row, plan[row][seg_index].branch)
        return state, leaves, hidden, cols

    def _register_images(self, state: TreeState, requests) -> None:
        new = []
        for r in requests:
            for im in r.images:
                if id(im) not in state.slots:
                    state.slots[id(im)] = len(state.images)
                    state.images.append(im)
                    new.append(im)
        if not new:
            return
        feats = [
            self.model.encode_images(self.pixel_values(new[i : i + self.image_batch]))
            for i in range(0, len(new), self.image_batch)
        ]
        feats = torch.cat(feats)  # (n_new, num_tokens, C)
        state.features = feats if state.features is None else torch.cat([state.features, feats])

    def _units(self, state: TreeState, req) -> list[int]:
        """Token ids with each image marker expanded to that image's patch units."""
        ids = self.request_ids(req)
        n_markers = sum(1 for t in ids if t == IMAGE_TOKEN_INDEX)
        if n_markers != len(req.images):
            raise ValueError(f"prompt has {n_markers} <image> markers but {len(req.images)} images were given")
        out, k, n = [], 0, state.num_image_tokens
        for t in ids:
            if t == IMAGE_TOKEN_INDEX:
                slot = state.slots[id(req.images[k])]
                out += [_IMAGE_BASE - (slot * n + j) for j in range(n)]
                k += 1
            else:
                out.append(int(t))
        return out

    def _label_units(self, req: ScoringRequest) -> list[int]:
        """Labels aligned with units (image markers expand to IGNORE_INDEX runs)."""
        if len(req.labels) != len(req.input_ids):
            raise ValueError(f"labels ({len(req.labels)}) and input_ids ({len(req.input_ids)}) differ in length")
        out = []
        for t, lab in zip(req.input_ids, req.labels):
            out += [IGNORE_INDEX] * self.model.model.vision_tower.num_tokens if t == IMAGE_TOKEN_INDEX else [int(lab)]
        return out

    # -- the forward over new columns -----------------------------------------------------------
    def _extend(self, state: TreeState, plan: dict[int, list[Segment]]):
        """Append each row's segments as new columns, run the model over them, record log-probs.

        Returns hidden states (R, S, C) of the new columns and, per (row, branch), the new
        column indices (absolute) in order. Bookkeeping is built on the host, then moved in one go.
        """
        R, T = state.rows, state.width
        S = max((sum(len(s.units) for s in segs) for segs in plan.values()), default=0)
        nan = float("nan")
        unit = [[PAD] * S for _ in range(R)]
        branch_of = [[-1] * S for _ in range(R)]
        pos = [[0] * S for _ in range(R)]
        lp = [[nan] * S for _ in range(R)]
        pred = [[-1] * S for _ in range(R)]  # the new column holding each column's path predecessor
        want = [[False] * S for _ in range(R)]  # log-prob wanted if unknown
        cols: dict[tuple[int, int], list[int]] = {}
        for row, segs in plan.items():
            s = 0
            for seg in segs:
                if seg.branch < 0:  # a new child of branch -1 - seg.branch, seeing its whole path
                    parent = -1 - seg.branch
                    seg.branch = state.new_branch(row, parent, len(state.paths[row][parent]))
                b, n = seg.branch, len(seg.units)
                path = state.paths[row][b]
                new = list(range(T + s, T + s + n))
                if n:
                    unit[row][s : s + n] = seg.units
                    branch_of[row][s : s + n] = [b] * n
                    pos[row][s : s + n] = range(len(path), len(path) + n)
                    pred[row][s : s + n] = [path[-1] - T if path and path[-1] >= T else -1, *range(s, s + n - 1)]
                    if seg.lps is not None:
                        lp[row][s : s + n] = seg.lps
                    want[row][s : s + min(seg.record, n)] = [True] * min(seg.record, n)
                    path.extend(new)
                    state.pending_vis.append((row, b, new))
                cols.setdefault((row, b), []).extend(new)
                s += n
        self._apply_vis(state, S)
        dev = state.device
        unit_t = torch.tensor(unit, dtype=torch.long, device=dev).view(R, S)
        ints = torch.tensor([branch_of, pos, pred], dtype=torch.long, device=dev).view(3, R, S)
        hidden = self._forward(state, unit_t, ints[0], ints[1])
        if any(any(w) for w in want):
            lp = self._record_logprobs(hidden, unit_t, ints[2], lp, want)
        state.width += S
        for row in range(R):
            state.units[row].extend(unit[row])
            state.lps[row].extend(lp[row])
        return hidden, cols

    def _apply_vis(self, state: TreeState, S: int) -> None:
        """Widen `vis` by S columns (and its branch axis as needed) and set the pending columns."""
        nb = max(len(p) for p in state.paths)
        grow_b = max(0, nb - state.vis.shape[1])
        vis = state.vis
        if grow_b or S:
            vis = vis.new_zeros(state.rows, max(nb, vis.shape[1]), state.width + S)
            vis[:, : state.vis.shape[1], : state.width] = state.vis
        if state.pending_vis:
            r = [row for row, _, c in state.pending_vis for _ in c]
            b = [br for _, br, c in state.pending_vis for _ in c]
            k = [col for _, _, c in state.pending_vis for col in c]
            idx = torch.tensor([r, b, k], dtype=torch.long, device=state.device)
            vis[idx[0], idx[1], idx[2]] = True
            state.pending_vis = []
        state.vis = vis

    def _forward(self, state: TreeState, unit, branch_of, pos) -> torch.Tensor:
        R, S = unit.shape
        T = state.width  # columns before this forward
        embeds = self._embed(state, unit)
        # allowed[r, s, k]: column k is on the path of the branch of new column T+s, and k <= T+s.
        rows = torch.arange(R, device=state.device)[:, None]
        allowed = state.vis[rows, branch_of.clamp(min=0)]  # (R, S, T+S)
        k = torch.arange(T + S, device=state.device)
        allowed &= k[None, None, :] <= (T + torch.arange(S, device=state.device))[None, :, None]
        # Unused columns attend to themselves only: finite, and seen by no one.
        diag = k[None, None, :] == (T + torch.arange(S, device=state.device))[None, :, None]
        allowed = torch.where((branch_of < 0)[:, :, None], diag.expand(R, S, T + S), allowed)
        dtype = embeds.dtype
        mask = torch.zeros(R, 1, S, T + S, dtype=dtype, device=state.device)
        mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
        llama = self.model.model
        hidden = embeds
        rope = llama.rotary_emb(hidden, pos)  # (cos, sin), each (R, S, head_dim)
        for layer in llama.layers:
            out = layer(hidden, attention_mask=mask, position_ids=pos, position_embeddings=rope,
                        use_cache=True, **{LAYER_CACHE_KWARG: state.cache})
            hidden = out[0] if isinstance(out, tuple) else out
        state.cache.length += S
        return llama.norm(hidden)  # (R, S, C)

    def _embed(self, state: TreeState, unit: torch.Tensor) -> torch.Tensor:
        emb = self.model.model.embed_tokens(unit.clamp(min=0))  # (R, S, C)
        if state.features is None:
            return emb
        is_image = (unit <= _IMAGE_BASE) & (unit > PAD)
        code = (_IMAGE_BASE - unit).clamp(0, state.features.shape[0] * state.num_image_tokens - 1)
        n = state.num_image_tokens
        image_emb = state.features[code // n, code % n].to(emb.dtype)  # (R, S, C)
        return torch.where(is_image[..., None], image_emb, emb)

    def _record_logprobs(self, hidden, unit, pred, lp: list[list[float]], want: list[list[bool]]):
        """log p(unit) for wanted new text columns whose path predecessor is also new."""
        unknown = torch.tensor(lp, device=hidden.device).isnan()
        todo = torch.tensor(want, device=hidden.device) & (pred >= 0) & (unit >= 0) & unknown
        r, s = todo.nonzero(as_tuple=True)
        logits = self.model.lm_head(hidden[r, pred[r, s]]).float()  # (N, V)
        values = torch.log_softmax(logits, -1).gather(1, unit[r, s][:, None]).squeeze(1)
        for row, col, v in zip(r.tolist(), s.tolist(), values.tolist()):
            lp[row][col] = v
        return lp

    # -- generation -----------------------------------------------------------------------------
    def _decode(self, state: TreeState, leaves, params_list, hidden, cols) -> list[list[int]]:
        tokens: list[list[int]] = [[] for _ in leaves]
        active = list(range(len(leaves)))
        last = [cols[leaf][-1] - (state.width - hidden.shape[1]) for leaf in leaves]  # index into hidden
        generators = {}
        while active:
            rows = torch.tensor([leaves[i][0] for i in active], device=state.device)
            idx = torch.tensor([last[i] for i in active], device=state.device)
            logits = self.model.lm_head(hidden[rows, idx]).float()  # (A, V)
            logprobs = torch.log_softmax(logits, -1)
            gens = []
            for i in active:
                p = params_list[i]
                if p.temperature > 0 and i not in generators:
                    generators[i] = torch.Generator(device=state.device).manual_seed(p.seed)
                gens.append(generators.get(i))
            picked = pick_tokens(logits, [params_list[i] for i in active], [len(tokens[i]) for i in active], gens)
            picked_lp = logprobs.gather(1, torch.tensor(picked, device=state.device)[:, None]).squeeze(1).tolist()
            still = []
            plan: dict[int, list[Segment]] = {}
            for j, i in enumerate(active):
                t = int(picked[j])
                tokens[i].append(t)
                if is_finished(t, len(tokens[i]), params_list[i], self.eos_token_id):
                    continue
                row, b = leaves[i]
                plan.setdefault(row, []).append(Segment(b, [t], lps=[picked_lp[j]]))
                still.append(i)
            active = still
            if not active:
                break
            hidden, cols = self._extend(state, plan)
            base = state.width - hidden.shape[1]
            for i in active:
                last[i] = cols[leaves[i]][-1] - base
        return tokens

    # -- scoring --------------------------------------------------------------------------------
    def _score(self, state: TreeState, leaf, labels: list[int], computed_here: bool = False) -> Score | None:
        """Mean NLL of the labelled units; None when a reused column lacks its log-prob.

        `computed_here`: every log-prob was computed in this request's own forward, so a NaN is the
        model's (e.g. fp16 overflow) and is returned as the loss.
        """
        row, b = leaf
        lps = state.path_lps(row, b)  # aligned with the units of this request
        if len(lps) != len(labels):
            raise RuntimeError(f"internal: path of {len(lps)} units for {len(labels)} labels")
        picked = [lps[j] for j in range(1, len(labels)) if labels[j] != IGNORE_INDEX]  # LLaVA shifts by one
        missing = [j for j in range(1, len(labels)) if labels[j] != IGNORE_INDEX and lps[j] != lps[j]]
        if missing and not computed_here:
            log.warning("row %d branch %d: labelled units %s have no log-prob", row, b, missing[:5])
            return None
        n = len(picked)
        return Score(-sum(picked) / n if n else float("nan"), n)


def _is_image_unit(unit: int) -> bool:
    return PAD < unit <= _IMAGE_BASE


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _common_prefix_all(seqs: list[list[int]]) -> int:
    n = len(seqs[0])
    for s in seqs[1:]:
        n = min(n, _common_prefix(seqs[0], s))
    return n


def _first_unknown_label(labels: list[int], path_lps: list[float], limit: int) -> int:
    """Index of the first labelled unit below `limit` whose log-prob the path lacks (else limit)."""
    for j in range(1, min(limit, len(labels))):
        if labels[j] != IGNORE_INDEX and path_lps[j] != path_lps[j]:  # NaN
            return j
    return limit
