"""The vision tower runs only the CLIP layers LLaVA reads, and gives what CLIP's own
`output_hidden_states` gives at `mm_vision_select_layer` (tiny random towers, fp32)."""

from __future__ import annotations

import pytest
import torch

from dualfocus.model.vision_tower import CLIPVisionTower
from dualfocus.tiny.checkpoint import TinySpec, clip_config


@pytest.mark.parametrize("select_layer", [-2, -1, -3, 0, 1, 2])
@pytest.mark.parametrize("select_feature", ["patch", "cls_patch"])
def test_features_equal_clips_hidden_states_at_the_selected_layer(select_layer, select_feature):
    torch.manual_seed(0)
    config = clip_config(TinySpec(vision_layers=3, image_size=42))
    tower = CLIPVisionTower(config, select_layer, select_feature).eval()
    pixels = torch.randn(5, 3, 42, 42)
    with torch.no_grad():
        got = tower(pixels)
        full = tower.vision_tower(pixels, output_hidden_states=True).hidden_states[select_layer]
    want = full[:, 1:] if select_feature == "patch" else full
    assert got.shape == (5, 9 + (select_feature == "cls_patch"), config.hidden_size)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_the_last_layer_is_not_run_for_layer_minus_two():
    tower = CLIPVisionTower(clip_config(TinySpec(vision_layers=3)), -2)
    ran = []
    for k, layer in enumerate(tower.vision_tower.encoder.layers):
        layer.register_forward_hook(lambda *_, k=k: ran.append(k))
    with torch.no_grad():
        tower(torch.randn(2, 3, 28, 28))
    assert ran == [0, 1]
