"""Multimodal projectors: vision features (mm_hidden_size) -> language embeddings (hidden_size).

Module names follow the original LLaVA layout so checkpoints load unchanged:
`mlp2x_gelu` is nn.Sequential(Linear, GELU, Linear) -> keys `mm_projector.0.*`, `mm_projector.2.*`.
"""

import re

from torch import nn

_MLP_GELU = re.compile(r"^mlp(\d+)x_gelu$")


class IdentityProjector(nn.Module):
    def forward(self, x):
        return x


def build_projector(projector_type: str, mm_hidden_size: int, hidden_size: int) -> nn.Module:
    if projector_type == "linear":
        return nn.Linear(mm_hidden_size, hidden_size)
    if projector_type == "identity":
        if mm_hidden_size != hidden_size:
            raise ValueError(
                f"projector 'identity' needs mm_hidden_size == hidden_size, got {mm_hidden_size} != {hidden_size}"
            )
        return IdentityProjector()
    match = _MLP_GELU.match(projector_type or "")
    if match:
        depth = int(match.group(1))
        if depth < 1:
            raise ValueError(f"projector {projector_type!r}: depth must be >= 1")
        layers: list[nn.Module] = [nn.Linear(mm_hidden_size, hidden_size)]
        for _ in range(1, depth):
            layers += [nn.GELU(), nn.Linear(hidden_size, hidden_size)]
        return nn.Sequential(*layers)
    raise ValueError(
        f"unknown mm_projector_type {projector_type!r}: expected 'linear', 'identity' or 'mlp<N>x_gelu'"
    )
