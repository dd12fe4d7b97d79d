"""The training dataset: sub_area crop as the second image, what it hands to the label masking, the
up-front validation that names bad records, the collator, LLaVA's sampler and the argument checks."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dualfocus import boxes
from dualfocus.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from dualfocus.conversation import conv_templates
from dualfocus.mm_utils import process_images
from dualfocus.model.tokenizer import load_tokenizer
from dualfocus.tiny.checkpoint import TinySpec, image_processor
from dualfocus.train.arguments import parse_args
from dualfocus.train.data import (
    CropPolicy,
    DataCollator,
    DataError,
    SupervisedDataset,
    load_records,
    normalized_sub_area,
    validate_records,
)
from dualfocus.train.trainer import modality_grouped_indices

BOX = [0.1, 0.2, 0.4, 0.5]
BOX_TEXT = "[0.10, 0.20, 0.40, 0.50]"
W, H = 64, 48


def dualfocus_record(rid="r0", image="a.png", sub_area=BOX, answer="red"):
    return {"id": rid, "image": image, "sub_area": sub_area, "conversations": [
        {"from": "human", "value": "<image>\nPlease provide the bounding box coordinate of the region this "
                                   "question asks: What colour is the car?"},
        {"from": "gpt", "value": BOX_TEXT},
        {"from": "human", "value": "Please combine the information from these two images and answer this "
                                   "question: What colour is the car?\n<image>"},  # tag moved to the front
        {"from": "gpt", "value": answer},
    ]}


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    t = load_tokenizer(tiny_tokenizer_dir)
    t.pad_token = t.unk_token
    return t


@pytest.fixture(scope="module")
def proc():
    return image_processor(TinySpec())


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    return tmp_path


def dataset(records, tok, proc, folder, template="vicuna_v1", **kw):
    return SupervisedDataset(records, tok, proc, conv_templates[template], image_folder=str(folder), **kw)


def spans(ids, labels):
    """Labelled runs of token ids."""
    out, cur = [], []
    for i, lab in zip(ids.tolist(), labels.tolist()):
        if lab != IGNORE_INDEX:
            cur.append(i)
        elif cur:
            out, cur = out + [cur], []
    return out + ([cur] if cur else [])


def expected_pixels(folder, proc, box_norm=BOX, policy=None):
    policy = policy or CropPolicy()
    image = Image.open(folder / "a.png").convert("RGB")
    crop = boxes.crop(image, policy.region(box_norm, W, H))
    return process_images([image, crop], proc, type("Cfg", (), {"image_aspect_ratio": "pad"}))


# -- images: order and crop ---------------------------------------------------------------------------
def test_full_image_first_then_the_inference_crop(tok, proc, folder):
    item = dataset([dualfocus_record()], tok, proc, folder)[0]
    assert item["images"].shape == (2, 3, 28, 28)
    torch.testing.assert_close(item["images"], expected_pixels(folder, proc), rtol=0, atol=0)
    # the crop is the pipeline's: squared about the centre, 25 px around, clipped
    assert CropPolicy().region(BOX, W, H) == boxes.focus_region(BOX, W, H)
    assert not torch.equal(item["images"][0], item["images"][1])


def test_pixel_sub_area_gives_the_same_crop(tok, proc, folder):
    pixel = [BOX[0] * W, BOX[1] * H, BOX[2] * W, BOX[3] * H]  # [6.4, 9.6, 25.6, 24.0]
    a = dataset([dualfocus_record()], tok, proc, folder)[0]["images"]
    b = dataset([dualfocus_record(sub_area=pixel)], tok, proc, folder)[0]["images"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert normalized_sub_area([6, 12, 32, 36], W, H) == pytest.approx((6 / W, 12 / H, 32 / W, 36 / H))
    # a pixel box inside the top-left pixel only reads as pixels when told
    assert normalized_sub_area([0, 0, 1, 1], W, H) == (0, 0, 1, 1)
    assert normalized_sub_area([0, 0, 1, 1], W, H, "pixel") == (0, 0, 1 / W, 1 / H)


def test_process_sub_area_false_crops_the_box_itself(tok, proc, folder):
    policy = CropPolicy(process=False)
    item = dataset([dualfocus_record()], tok, proc, folder, crop_policy=policy)[0]
    assert policy.region(BOX, W, H) == (6, 9, 25, 24)  # truncated pixels, no square, no padding
    torch.testing.assert_close(item["images"], expected_pixels(folder, proc, policy=policy), rtol=0, atol=0)


def test_draw_sub_region_marks_the_crop_not_the_full_image(tok, proc, folder):
    plain = dataset([dualfocus_record()], tok, proc, folder)[0]["images"]
    drawn_ds = dataset([dualfocus_record()], tok, proc, folder, crop_policy=CropPolicy(draw=True))
    drawn = drawn_ds[0]["images"]
    torch.testing.assert_close(drawn[0], plain[0], rtol=0, atol=0)  # as the original: first image clean
    assert not torch.equal(drawn[1], plain[1])
    crop = drawn_ds.images_of(0)[1]
    x1, y1 = 6 - boxes.focus_region(BOX, W, H)[0], 9 - boxes.focus_region(BOX, W, H)[1]
    assert crop.getpixel((x1, y1 + 5)) == (0, 255, 0)  # on the box's left edge, in crop coordinates


# -- what reaches the label masking --------------------------------------------------------------------
@pytest.mark.parametrize("template", ["vicuna_v1", "llava_llama_2"])
def test_two_image_conversation_labels_both_answers(tok, proc, folder, template):
    item = dataset([dualfocus_record()], tok, proc, folder, template=template)[0]
    ids, labels = item["input_ids"], item["labels"]
    markers = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
    assert len(markers) == 2 and labels[markers].eq(IGNORE_INDEX).all()
    # each <image> opens its human turn (LLaVA's preprocess_multimodal moved the second one)
    after = [tok.decode(ids[m + 1 : m + 12].tolist()) for m in markers]
    assert after[0].strip().startswith("Please provide") and after[1].strip().startswith("Please combine")
    labelled = [tok.decode(s).strip() for s in spans(ids, labels)]
    assert len(labelled) == 2
    assert labelled[0].startswith(BOX_TEXT) and labelled[0].endswith("</s>")
    assert labelled[1].startswith("red") and labelled[1].endswith("</s>")
    first_labelled = int(labels.ne(IGNORE_INDEX).nonzero()[0])
    assert markers[0] < first_labelled < markers[1]  # the box answer sits between the two images


def test_round2_only_labels_the_answer_alone(tok, proc, folder):
    item = dataset([dualfocus_record()], tok, proc, folder, round2_only=True)[0]
    labelled = [tok.decode(s).strip() for s in spans(item["input_ids"], item["labels"])]
    assert labelled == ["red</s>"] or (len(labelled) == 1 and labelled[0].startswith("red"))


def test_plain_template_takes_one_image_and_a_caption(tok, proc, folder):
    caption = {"id": "cap", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "a red car"}]}
    item = dataset([caption], tok, proc, folder, template="plain")[0]
    assert item["images"].shape[0] == 1 and int((item["input_ids"] == IMAGE_TOKEN_INDEX).sum()) == 1
    assert [tok.decode(s) for s in spans(item["input_ids"], item["labels"])] == ["a red car\n"]
    with pytest.raises(DataError, match=r"record 1 \(id 'r0'\).*plain.*takes one image"):
        validate_records([caption, dualfocus_record()], str(folder), conv=conv_templates["plain"])


def test_text_only_record_has_no_images(tok, proc, folder):
    text = {"id": "t", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Yes"}]}
    validate_records([text], str(folder))
    item = dataset([text], tok, proc, folder)[0]
    assert item["images"].shape == (0, 3, 28, 28) and IMAGE_TOKEN_INDEX not in item["input_ids"].tolist()


# -- bad data: named, all of it, before training --------------------------------------------------------
def test_validation_lists_every_bad_record_by_index_and_id(folder):
    one_tag = dualfocus_record("one_tag")
    one_tag["conversations"][2]["value"] = "no image here"
    records = [
        dualfocus_record("good"),
        dualfocus_record("missing_image", image="nope.png"),
        dualfocus_record("outside", sub_area=[10, 10, 80, 40]),  # pixels, 80 > width 64
        one_tag,
        dualfocus_record("inverted", sub_area=[0.5, 0.2, 0.1, 0.6]),
        {"id": "no_turns", "image": "a.png"},
        {"id": "crop_only", "sub_area": BOX, "conversations": [{"from": "human", "value": "<image>\nq"}]},
        {"id": "order", "image": "a.png", "conversations": [
            {"from": "human", "value": "<image>\nq"}, {"from": "human", "value": "again"}]},
    ]
    with pytest.raises(DataError) as err:
        validate_records(records, str(folder))
    msg = str(err.value)
    assert msg.startswith("7 of 8 training records are unusable")
    assert "'good'" not in msg
    assert "record 1 (id 'missing_image'): image" in msg and "nope.png not found" in msg
    assert "record 2 (id 'outside')" in msg and "outside the 64 x 48 image" in msg
    assert "record 3 (id 'one_tag'): 1 <image> tag(s) in the conversation for 2 image(s)" in msg
    assert "record 4 (id 'inverted'): bad sub_area: inverted" in msg
    assert "record 5 (id 'no_turns'): no conversations" in msg
    assert "record 6 (id 'crop_only'): sub_area without an image" in msg
    assert "record 7 (id 'order'): turn 1 is from 'human'" in msg


def test_a_file_removed_after_validation_still_names_the_record(tok, proc, folder):
    ds = dataset([dualfocus_record("late")], tok, proc, folder)
    (folder / "a.png").unlink()
    with pytest.raises(DataError, match=r"record 0 \(id 'late'\).*a.png: file not found"):
        ds[0]


def test_load_records_json_list_or_lines(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"id": 1}, {"id": 2}]))
    (tmp_path / "b.jsonl").write_text('{"id": 1}\n\n{"id": 2}\n')
    assert load_records(tmp_path / "a.json") == load_records(tmp_path / "b.jsonl") == [{"id": 1}, {"id": 2}]
    (tmp_path / "c.jsonl").write_text('{"id": 1}\n{oops\n')
    with pytest.raises(DataError, match="line 2"):
        load_records(tmp_path / "c.jsonl")


# -- batching -------------------------------------------------------------------------------------------
def test_collator_pads_and_keeps_images_in_conversation_order(tok, proc, folder):
    caption = {"id": "c", "image": "b.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "noise"}]}
    ds = dataset([dualfocus_record(), caption], tok, proc, folder)
    items = [ds[0], ds[1]]
    batch = DataCollator(tok.pad_token_id, 2048)(items)
    n0, n1 = len(items[0]["input_ids"]), len(items[1]["input_ids"])
    assert batch["input_ids"].shape == (2, max(n0, n1)) and n0 > n1
    assert batch["attention_mask"][1].tolist() == [True] * n1 + [False] * (n0 - n1)
    assert batch["labels"][1, n1:].eq(IGNORE_INDEX).all() and batch["input_ids"][1, n1:].eq(tok.pad_token_id).all()
    torch.testing.assert_close(batch["images"], torch.cat([items[0]["images"], items[1]["images"]]))


def test_truncation_drops_images_whose_marker_was_cut(tok, proc, folder):
    item = dataset([dualfocus_record()], tok, proc, folder, model_max_length=60)[0]
    assert len(item["input_ids"]) == 60
    assert item["images"].shape[0] == int((item["input_ids"] == IMAGE_TOKEN_INDEX).sum()) == 1


def test_modality_grouping_never_mixes_image_and_text_batches():
    lengths = [5, -3, 7, -2, 9, 4, -6, 8, -1, 3]
    order = modality_grouped_indices(lengths, batch_size=2, world_size=1, generator=torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(len(lengths)))
    batches = [order[i : i + 2] for i in range(0, len(order) - 2, 2)]  # the last one may be the leftover mix
    assert all(len({lengths[i] > 0 for i in b}) == 1 for b in batches)


# -- arguments --------------------------------------------------------------------------------------------
BASE = ["--model_name_or_path", "m", "--data_path", "d", "--output_dir", "/tmp/dualfocus-test-out"]


@pytest.mark.parametrize("extra, match", [
    (["--bits", "4"], "add --lora_enable True"),
    (["--mm_use_im_start_end", "True"], "not supported"),
    (["--lora_enable", "True", "--tune_mm_mlp_adapter", "True"], "exclude each other"),
    (["--sub_area_units", "inches"], "sub_area_units"),
])
def test_argument_combinations_refused(extra, match):
    with pytest.raises(ValueError, match=match):
        parse_args(BASE + extra)


def test_llava_argument_names_parse():
    m, d, t = parse_args(BASE + [
        "--version", "v1", "--vision_tower", "openai/clip-vit-large-patch14-336", "--mm_projector_type", "mlp2x_gelu",
        "--mm_vision_select_layer", "-2", "--pretrain_mm_mlp_adapter", "p.bin", "--tune_mm_mlp_adapter", "False",
        "--image_aspect_ratio", "pad", "--group_by_modality_length", "True", "--lora_enable", "True",
        "--lora_r", "128", "--lora_alpha", "256", "--lora_dropout", "0.05", "--bits", "16", "--mm_projector_lr", "2e-5",
        "--image_folder", "imgs", "--process_sub_area", "True", "--round2_only", "True", "--draw_sub_region", "False",
        "--model_max_length", "2048", "--lazy_preprocess", "True", "--gradient_checkpointing", "True",
        "--warmup_ratio", "0.03", "--evaluation_strategy", "no",  # LLaVA's names, gone from transformers 5
    ])
    assert t.warmup_steps == 0.03 and t.eval_strategy == "no"
    assert (m.version, m.mm_vision_select_layer, t.lora_r, t.mm_projector_lr, d.round2_only) == ("v1", -2, 128, 2e-5, True)
    assert t.group_by_modality_length and t.gradient_checkpointing and not t.remove_unused_columns


def test_qlora_without_bitsandbytes_or_cuda_is_a_clear_error():
    from dualfocus.train.train import build

    with pytest.raises((ImportError, RuntimeError), match="QLoRA.*(bitsandbytes|CUDA)"):
        build(*parse_args(BASE + ["--bits", "4", "--lora_enable", "True"]))


def test_plain_llama_with_vision_tower_and_pretrained_projector(tiny_checkpoint, tmp_path):
    """LLaVA's other starting point: Llama weights + --vision_tower + --pretrain_mm_mlp_adapter
    assemble exactly the model the full checkpoint holds."""
    from dualfocus.model.builder import load_pretrained_model
    from dualfocus.model.checkpoint_io import load_state_dict, save_state_dict, weight_files
    from dualfocus.train.model import load_model

    cfg = json.loads((tiny_checkpoint / "config.json").read_text())
    state = load_state_dict(weight_files(tiny_checkpoint))
    llm = tmp_path / "llm"
    save_state_dict({k: v for k, v in state.items() if "mm_projector" not in k}, llm)
    plain = {k: v for k, v in cfg.items() if not k.startswith(("mm_", "use_mm", "tokenizer_", "image_"))}
    (llm / "config.json").write_text(json.dumps({**plain, "model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        (llm / f).write_bytes((tiny_checkpoint / f).read_bytes())
    torch.save({k: v for k, v in state.items() if "mm_projector" in k}, tmp_path / "mm_projector.bin")
    m, _, t = parse_args(["--model_name_or_path", str(llm), "--vision_tower", cfg["mm_vision_tower"],
                          "--pretrain_mm_mlp_adapter", str(tmp_path / "mm_projector.bin"), "--data_path", "d",
                          "--output_dir", str(tmp_path / "out")])
    model, tokenizer, proc = load_model(m, t, torch.float32)
    _, reference, _, _ = load_pretrained_model(str(tiny_checkpoint), device="cpu")
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], msg=key)
    with pytest.raises(ValueError, match="plain language model.*--vision_tower"):
        load_model(parse_args(["--model_name_or_path", str(llm), "--data_path", "d", "--output_dir", "o"])[0], t,
                   torch.float32)
