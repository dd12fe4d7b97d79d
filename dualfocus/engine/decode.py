"""The fast engine's generation loop: one forward per step for every unfinished request, with drafts.

Each step feeds a request its pending token (chosen, not yet fed) and, when its request carries a
`draft` and decodes greedily or forced, the drafted tokens after it, in the same forward. The
logits of all those columns then decide, left to right, exactly as plain decoding would: the
model's choice after the pending token is emitted; if it equals the first drafted token, that
token's column is already on the path and the choice after it is emitted too, and so on. The first
choice that differs from the draft becomes the next pending token; the drafted columns after it
are retracted from the branch's path (plan.Forest.retract: seen by no one). Every emitted token is
the model's own choice given exactly the tokens before it, so outputs equal plain decoding; only
the number of forwards changes (`Generation.forwards`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dualfocus.engine.base import Draft, GenerationRequest, SamplingParams, max_new_tokens
from dualfocus.engine.sampling import is_finished, sample
from dualfocus.engine.tree import plan


@dataclass
class Decoding:
    """One request on its way through the loop."""

    leaf: plan.Leaf
    params: SamplingParams
    budget: int  # most tokens it may emit
    draft: Draft | None  # None: plain decoding (no draft, or sampled)
    generator: torch.Generator | None
    fed: list[int]  # its columns in the last forward whose logits decide (indices into that forward's row)
    drafted: list[int] = field(default_factory=list)  # drafted tokens fed last forward, after the pending one
    tokens: list[int] = field(default_factory=list)  # emitted; the last one is pending until fed
    lp: float = plan.NAN  # log-prob of the pending token
    forwards: int = 1  # its prompt's
    done: bool = False


def start(requests: list[GenerationRequest], leaves: list[plan.Leaf], step: plan.Step,
          device: torch.device) -> list[Decoding]:
    """The loop's state after the prompts' forward `step`: each request decides from its last column."""
    out = []
    for req, leaf in zip(requests, leaves):
        p = req.params
        sampled = p.forced is None and p.temperature > 0
        generator = torch.Generator(device=device).manual_seed(p.seed) if sampled else None
        out.append(Decoding(leaf, p, max_new_tokens(req), None if sampled else req.draft, generator,
                            [step.columns[leaf][-1] - step.start]))
    return out


def decide(model, forest: plan.Forest, step: plan.Step, hidden: torch.Tensor, live: list[Decoding],
           eos: int) -> None:
    """Emit each live request's tokens from the logits of the columns it fed (hidden: (R, S, C))."""
    rows = torch.tensor([d.leaf[0] for d in live for _ in d.fed], device=hidden.device)
    cols = torch.tensor([c for d in live for c in d.fed], device=hidden.device)
    logits = model.logits(hidden[rows, cols]).float()  # (N, V): N = the fed columns of all live requests
    greedy = logits.argmax(-1).tolist()
    choices, k = [], 0
    for d in live:  # what each fed column's request emits after it, forced, greedy or sampled
        for j in range(len(d.fed)):
            if d.params.forced is not None:
                choices.append(d.params.forced[len(d.tokens) + j])
            elif d.params.temperature > 0:
                choices.append(int(sample(logits[k + j : k + j + 1], d.params, d.generator)[0]))
            else:
                choices.append(greedy[k + j])
        k += len(d.fed)
    lps = torch.log_softmax(logits, -1).gather(1, torch.tensor(choices, device=logits.device)[:, None])
    lps = lps.squeeze(1).tolist()
    k = 0
    for d in live:
        accept(forest, step, d, choices[k : k + len(d.fed)], lps[k : k + len(d.fed)], eos)
        k += len(d.fed)


def accept(forest: plan.Forest, step: plan.Step, d: Decoding, choices: list[int], lps: list[float],
           eos: int) -> None:
    """Emit choices while each equals the token drafted after it; retract the drafted rest."""
    accepted = 0
    for j, (t, lp) in enumerate(zip(choices, lps)):
        d.tokens.append(t)
        d.lp = lp
        if is_finished(t, len(d.tokens), d.params, eos):
            d.done = True
            break
        if j < len(d.drafted) and t == d.drafted[j]:
            forest.set_lp(d.leaf[0], step.columns[d.leaf][-len(d.drafted) + j], lp)  # its column ran
            accepted += 1
            continue
        break
    forest.retract(d.leaf, len(d.drafted) - accepted)


def feed(builder: plan.StepBuilder, d: Decoding, eos: int) -> None:
    """Lay out the pending token and, after it, the draft (cut so that drafts never end a generation:
    no EOS, and the token after them is still within the budget)."""
    draft = list(d.draft(d.tokens))[: max(d.budget - len(d.tokens) - 1, 0)] if d.draft is not None else []
    if eos in draft:
        draft = draft[: draft.index(eos)]
    d.drafted = [int(t) for t in draft]
    builder.append(*d.leaf, [d.tokens[-1], *d.drafted], lps=[d.lp] + [plan.NAN] * len(d.drafted))


def run(engine, call, decodings: list[Decoding], hidden: torch.Tensor, step: plan.Step) -> None:
    """Step until every request has finished; `engine._forward(call, step)` runs one forward."""
    eos = engine.eos_token_id
    live = list(decodings)
    while live:
        decide(engine.model, call.forest, step, hidden, live, eos)
        live = [d for d in live if not d.done]
        if not live:
            return
        builder = plan.StepBuilder(call.forest)
        for d in live:
            feed(builder, d, eos)
        step = builder.finish(call.tree.decode_widths)
        hidden = engine._forward(call, step)
        for d in live:
            d.fed = [c - step.start for c in step.columns[d.leaf]]
            d.forwards += 1
