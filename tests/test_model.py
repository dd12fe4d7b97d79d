"""The model core against transformers' LlavaForConditionalGeneration on the same weights.

Our input holds one IMAGE_TOKEN_INDEX (-200) per image; llava-hf's holds its `<image>` id repeated
num_image_tokens times. The spliced sequences then have the same length and every position
corresponds, so logits are compared position by position.
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from dualfocus.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from dualfocus.model.builder import load_pretrained_model
from dualfocus.model.convert import original_to_hf
from dualfocus.model.llava_llama import causal_lm_loss, pad_embeddings

TOL = 1e-4
N_IMG_TOKENS = 4  # TinySpec: 28 px images, 14 px patches, CLS dropped


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    _, model, _, _ = load_pretrained_model(str(tiny_checkpoint), device="cpu")
    return model


def hand_mapped_hf(model) -> LlavaForConditionalGeneration:
    """llava-hf with our weights, copied module by module (not through dualfocus.model.convert)."""
    cfg, vocab = model.config, model.config.vocab_size
    text = LlamaConfig(
        vocab_size=vocab + 1, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=False,
    )
    hf_cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(**cfg.mm_vision_config), text_config=text, image_token_index=vocab,
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )
    hf = LlavaForConditionalGeneration(hf_cfg).eval()
    ours = model.model
    with torch.no_grad():
        hf.model.vision_tower.load_state_dict(ours.vision_tower.vision_tower.state_dict(), strict=True)
        for hf_lin, our_lin in ((hf.model.multi_modal_projector.linear_1, ours.mm_projector[0]),
                                (hf.model.multi_modal_projector.linear_2, ours.mm_projector[2])):
            hf_lin.weight.copy_(our_lin.weight)
            hf_lin.bias.copy_(our_lin.bias)
        lm = hf.model.language_model
        for hf_layer, our_layer in zip(lm.layers, ours.layers, strict=True):
            hf_layer.load_state_dict(our_layer.state_dict(), strict=True)
        lm.norm.load_state_dict(ours.norm.state_dict(), strict=True)
        lm.embed_tokens.weight[:vocab] = ours.embed_tokens.weight
        hf.lm_head.weight[:vocab] = model.lm_head.weight
    return hf


def hf_ids(ids: list[int], image_token: int) -> list[int]:
    out = []
    for t in ids:
        out += [image_token] * N_IMG_TOKENS if t == IMAGE_TOKEN_INDEX else [t]
    return out


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 28, 28, generator=torch.Generator().manual_seed(seed))


PROMPTS = {
    "one_image": [1, 10, 20, IMAGE_TOKEN_INDEX, 30, 40, 50, 60],
    "two_images": [1, 10, IMAGE_TOKEN_INDEX, 20, 30, IMAGE_TOKEN_INDEX, 40, 50],
}


@pytest.mark.parametrize("name", sorted(PROMPTS))
@pytest.mark.parametrize("build", ["convert", "by_hand"])
def test_logits_match_llava_hf(model, name, build):
    ids = PROMPTS[name]
    n_img = ids.count(IMAGE_TOKEN_INDEX)
    pixels = images(n_img, seed=1)
    hf = original_to_hf(model).eval() if build == "convert" else hand_mapped_hf(model)
    vocab = model.config.vocab_size
    with torch.no_grad():
        ours = model(input_ids=torch.tensor([ids]), images=pixels).logits  # (1, T', V)
        theirs = hf(input_ids=torch.tensor([hf_ids(ids, hf.config.image_token_id)]), pixel_values=pixels).logits
    assert ours.shape == (1, len(ids) + n_img * (N_IMG_TOKENS - 1), vocab)
    assert theirs.shape[:2] == ours.shape[:2]
    assert (ours - theirs[..., :vocab]).abs().max().item() <= TOL


def test_image_changes_the_logits(model):
    """Parity above would be vacuous if images were ignored."""
    ids = torch.tensor([PROMPTS["one_image"]])
    with torch.no_grad():
        a = model(input_ids=ids, images=images(1, seed=1)).logits
        b = model(input_ids=ids, images=images(1, seed=2)).logits
    assert (a - b).abs().max().item() > 1e-2


def test_two_images_each_take_their_own_place(model):
    """The k-th marker takes the k-th image: swapping images changes the logits after the first marker."""
    ids = torch.tensor([PROMPTS["two_images"]])
    pixels = images(2, seed=3)
    with torch.no_grad():
        a = model(input_ids=ids, images=pixels).logits
        b = model(input_ids=ids, images=pixels.flip(0)).logits
    first = PROMPTS["two_images"].index(IMAGE_TOKEN_INDEX)
    assert torch.equal(a[:, :first], b[:, :first])
    assert (a[:, first:] - b[:, first:]).abs().max().item() > 1e-2


def test_image_count_mismatch_is_an_error(model):
    with pytest.raises(ValueError, match="2 image tokens but 1 images"):
        model(input_ids=torch.tensor([PROMPTS["two_images"]]), images=images(1, seed=0))


def hand_loss(model, ids: list[int], labels: list[int], pixels: torch.Tensor) -> tuple[float, int]:
    """One sample alone, no padding: (mean of -log p(next label) over labelled positions, their count)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), images=pixels).logits[0]  # (T', V)
    spliced = []
    for t, lab in zip(ids, labels):
        spliced += [IGNORE_INDEX] * N_IMG_TOKENS if t == IMAGE_TOKEN_INDEX else [lab]
    logp = F.log_softmax(logits.double(), dim=-1)
    terms = [-logp[i, spliced[i + 1]].item() for i in range(len(spliced) - 1) if spliced[i + 1] != IGNORE_INDEX]
    return sum(terms) / len(terms), len(terms)


def test_per_sample_loss_with_padding_matches_hand_computation(model):
    samples = [  # (ids, labels): prompt ignored, answer labelled
        ([1, 10, IMAGE_TOKEN_INDEX, 20, 30, 40, 50, 60, 70], [IGNORE_INDEX] * 5 + [50, 60, 70, 2]),
        ([1, IMAGE_TOKEN_INDEX, 11, 12, 13], [IGNORE_INDEX] * 3 + [12, 13]),
        ([1, 5, IMAGE_TOKEN_INDEX, 7, 8, 9, 3], [IGNORE_INDEX] * 6 + [3]),
    ]
    width, pad = max(len(s[0]) for s in samples), 0
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in samples])
    labels = torch.tensor([lab + [IGNORE_INDEX] * (width - len(lab)) for _, lab in samples])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in samples])
    pixels = images(len(samples), seed=4)
    with torch.no_grad():
        per_sample = model(input_ids=input_ids, attention_mask=mask, images=pixels, labels=labels,
                           reduction="none").loss
        mean = model(input_ids=input_ids, attention_mask=mask, images=pixels, labels=labels).loss
    expected = [hand_loss(model, ids, lab, pixels[i : i + 1]) for i, (ids, lab) in enumerate(samples)]
    assert per_sample.shape == (3,)
    for got, (want, _) in zip(per_sample.tolist(), expected):
        assert got == pytest.approx(want, abs=1e-5)
    # "mean" is over all labelled tokens of the batch (LLaVA's training loss), not over samples.
    total = sum(loss * n for loss, n in expected) / sum(n for _, n in expected)
    assert mean.item() == pytest.approx(total, abs=1e-5)
    assert total != pytest.approx(sum(loss for loss, _ in expected) / 3, abs=1e-4)


def test_left_and_right_padded_inputs_give_the_same_logits(model):
    """Padding is dropped before the splice, so where it was does not matter."""
    a, b = [1, 10, IMAGE_TOKEN_INDEX, 20, 30, 40], [1, IMAGE_TOKEN_INDEX, 7]
    pixels = images(2, seed=5)
    right = torch.tensor([a, b + [0, 0, 0]]), torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    left = torch.tensor([a, [0, 0, 0] + b]), torch.tensor([[1] * 6, [0] * 3 + [1] * 3])
    with torch.no_grad():
        out_r = model(input_ids=right[0], attention_mask=right[1], images=pixels).logits
        out_l = model(input_ids=left[0], attention_mask=left[1], images=pixels).logits
        alone = model(input_ids=torch.tensor([b]), images=pixels[1:]).logits
    # config.tokenizer_padding_side is "right": the short sample sits at the start of row 1.
    assert (out_r - out_l).abs().max().item() <= 1e-5
    assert (out_r[1, : alone.shape[1]] - alone[0]).abs().max().item() <= 1e-5


def test_causal_lm_loss_reductions():
    logits = torch.randn(2, 4, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[IGNORE_INDEX, 3, 4, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 6]])
    logp = F.log_softmax(logits, -1)
    s0 = [-logp[0, 0, 3], -logp[0, 1, 4]]
    s1 = [-logp[1, 2, 6]]
    per = causal_lm_loss(logits, labels, "none")
    assert torch.allclose(per, torch.stack([sum(s0) / 2, s1[0]]), atol=1e-6)
    assert causal_lm_loss(logits, labels, "mean").item() == pytest.approx((sum(s0) + s1[0]).item() / 3, abs=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        causal_lm_loss(logits, labels, "sum")


def test_pad_embeddings_left_and_right():
    e = [torch.ones(3, 2), 2 * torch.ones(1, 2)]
    out, mask, labels, pos = pad_embeddings(e, [torch.tensor([5, 6, 7]), torch.tensor([8])], "left")
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert labels.tolist() == [[5, 6, 7], [IGNORE_INDEX, IGNORE_INDEX, 8]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert out[1, 2].tolist() == [2.0, 2.0] and out[1, 0].tolist() == [0.0, 0.0]
    out, mask, labels, pos = pad_embeddings(e, None, "right")
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]] and labels is None
    with pytest.raises(ValueError, match="padding_side"):
        pad_embeddings(e, None, "middle")


def test_generate_with_images_matches_llava_hf_greedy(model):
    """Left-padded batch of two prompts: new tokens equal llava-hf's greedy continuation of each."""
    hf = original_to_hf(model).eval()
    prompts = [PROMPTS["one_image"], [1, 33, IMAGE_TOKEN_INDEX, 44]]
    pixels = images(2, seed=6)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    gen = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        ours = model.generate(ids, images=pixels, attention_mask=mask, **gen)
        for i, p in enumerate(prompts):
            hp = torch.tensor([hf_ids(p, hf.config.image_token_id)])
            theirs = hf.generate(input_ids=hp, pixel_values=pixels[i : i + 1], **gen)[:, hp.shape[1]:]
            assert ours[i].tolist() == theirs[0].tolist()


def test_cached_continuation_matches_full_forward(model):
    """Prefill with an image, then one text token on the returned cache (the engines' pattern)."""
    from dualfocus.model.llava_llama import CACHE_KWARG

    ids = PROMPTS["one_image"]
    pixels = images(1, seed=8)
    with torch.no_grad():
        full = model(input_ids=torch.tensor([ids + [77]]), images=pixels).logits
        prefill = model(input_ids=torch.tensor([ids]), images=pixels, use_cache=True)
        cache = getattr(prefill, CACHE_KWARG)
        assert cache.get_seq_length() == len(ids) - 1 + N_IMG_TOKENS
        step = model(input_ids=torch.tensor([[77]]), use_cache=True, **{CACHE_KWARG: cache}).logits
    assert (step[0, -1] - full[0, -1]).abs().max().item() <= 1e-5
