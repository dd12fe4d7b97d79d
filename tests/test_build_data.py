"""build_data: region-annotated questions -> DualFocus records (exact wording), errors that name the
record, and records that train."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dualfocus.train.build_data import build_records, main
from dualfocus.train.data import DataError

BOX_Q = "<image>\nPlease provide the bounding box coordinate of the region this question asks: {q}"
COMBINE_Q = "<image>\nPlease combine the information from these two images and answer this question: {q}"


@pytest.fixture()
def regions(tmp_path):
    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / name)
    rows = [
        {"id": "q1", "image": "a.png", "question": "What colour is the car?", "answer": "red",
         "box": [0.1, 0.2, 0.4, 0.5]},
        {"question_id": 7, "image": "b.png", "question": "What is the man holding?", "answer": "a ball",
         "box": [32, 12, 60, 36]},  # pixels in a 64 x 48 image
    ]
    path = tmp_path / "regions.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path, images


def test_records_have_the_dualfocus_wording(regions, tmp_path):
    path, images = regions
    out = tmp_path / "train.json"
    assert main(["--input", str(path), "--output", str(out), "--image-folder", str(images), "--with-macro"]) == 0
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == ["q1", "q1_macro", 7, "7_macro"]
    assert records[0] == {
        "id": "q1", "image": "a.png", "sub_area": [0.1, 0.2, 0.4, 0.5],
        "conversations": [
            {"from": "human", "value": BOX_Q.format(q="What colour is the car?")},
            {"from": "gpt", "value": "[0.10, 0.20, 0.40, 0.50]"},
            {"from": "human", "value": COMBINE_Q.format(q="What colour is the car?")},
            {"from": "gpt", "value": "red"},
        ],
    }
    assert records[1]["conversations"] == [{"from": "human", "value": "<image>\nWhat colour is the car?"},
                                           {"from": "gpt", "value": "red"}]
    # pixels -> fractions of 64 x 48, two decimals; sub_area is the box as written
    assert records[2]["conversations"][1]["value"] == "[0.50, 0.25, 0.94, 0.75]"
    assert records[2]["sub_area"] == [0.5, 0.25, 0.94, 0.75]


def test_normalized_boxes_need_no_images(regions):
    path, _ = regions
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(build_records(rows[:1])) == 1
    with pytest.raises(DataError, match=r"record 1 \(id 7\): box \[32, 12, 60, 36\] is in pixels: pass --image-folder"):
        build_records(rows)


def test_bad_regions_are_all_named(regions, tmp_path, capsys):
    _, images = regions
    rows = [
        {"id": "ok", "image": "a.png", "question": "q?", "answer": "a", "box": [0.1, 0.1, 0.5, 0.5]},
        {"id": "no_answer", "image": "a.png", "question": "q?", "box": [0.1, 0.1, 0.5, 0.5]},
        {"id": "outside", "image": "a.png", "question": "q?", "answer": "a", "box": [10, 10, 100, 40]},
        {"id": "missing", "image": "zzz.png", "question": "q?", "answer": "a", "box": [0.1, 0.1, 0.5, 0.5]},
        {"id": "tiny", "image": "a.png", "question": "q?", "answer": "a", "box": [0.101, 0.1, 0.104, 0.5]},
        {"id": "ok", "image": "a.png", "question": "q?", "answer": "a", "box": [0.1, 0.1, 0.5, 0.5]},
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    assert main(["--input", str(path), "--output", str(tmp_path / "o.json"), "--image-folder", str(images)]) == 1
    err = capsys.readouterr().err
    assert "5 of 6 region records are unusable" in err  # the first 'ok' is fine, its duplicate is not
    assert "record 1 (id 'no_answer'): missing answer" in err
    assert "record 2 (id 'outside'): out_of_range: pixel sub_area [10.0, 10.0, 100.0, 40.0] is outside the 64 x 48 image" in err
    assert "record 3 (id 'missing'): image " in err and "zzz.png not found" in err
    assert "record 4 (id 'tiny'): box [0.101, 0.1, 0.104, 0.5] becomes [0.1, 0.1, 0.1, 0.5]" in err
    assert "record 5 (id 'ok'): duplicate id" in err
    assert not (tmp_path / "o.json").exists()


def test_built_records_train_one_step(regions, tmp_path, tiny_checkpoint):
    """The records go through the real CLI entry: validation, crops, masking, a forward and a step."""
    from dualfocus.train.train import train

    path, images = regions
    data = tmp_path / "train.json"
    assert main(["--input", str(path), "--output", str(data), "--image-folder", str(images), "--with-macro"]) == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = train([
            "--model_name_or_path", str(tiny_checkpoint), "--version", "v1", "--data_path", str(data),
            "--image_folder", str(images), "--output_dir", str(tmp_path / "out"), "--max_steps", "1",
            "--per_device_train_batch_size", "4", "--gradient_checkpointing", "True", "--save_strategy", "no",
            "--report_to", "none", "--disable_tqdm", "True", "--group_by_modality_length", "True",
        ])
    finally:
        torch.set_num_threads(threads)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h] + [trainer.state.log_history[-1]["train_loss"]]
    assert trainer.state.global_step == 1 and all(np.isfinite(losses))
    assert (tmp_path / "out" / "config.json").is_file() and (tmp_path / "out" / "model.safetensors").is_file()


def test_projector_only_training_saves_mm_projector_bin(regions, tmp_path, tiny_checkpoint):
    """--tune_mm_mlp_adapter: only the projector changes; mm_projector.bin loads onto the base."""
    from dualfocus.model.builder import load_pretrained_model
    from dualfocus.train.train import train

    path, images = regions
    data = tmp_path / "train.json"
    assert main(["--input", str(path), "--output", str(data), "--image-folder", str(images)]) == 0
    out = tmp_path / "proj"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(["--model_name_or_path", str(tiny_checkpoint), "--data_path", str(data), "--image_folder", str(images),
               "--output_dir", str(out), "--max_steps", "2", "--learning_rate", "1e-2", "--tune_mm_mlp_adapter", "True",
               "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True"])
    finally:
        torch.set_num_threads(threads)
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".bin", ".json") and p.name != "trainer_state.json") == [
        "config.json", "mm_projector.bin", "training_args.bin"]
    saved = torch.load(out / "mm_projector.bin", weights_only=True)
    assert set(saved) == {f"model.mm_projector.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}
    _, base, _, _ = load_pretrained_model(str(tiny_checkpoint), device="cpu")
    _, model, _, _ = load_pretrained_model(str(out), str(tiny_checkpoint), device="cpu")
    torch.testing.assert_close(model.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(model.model.mm_projector[0].weight, base.model.mm_projector[0].weight)
    torch.testing.assert_close(model.model.mm_projector[0].weight, saved["model.mm_projector.0.weight"])


@pytest.mark.parametrize("make, flag, message", [
    (lambda tmp: (tmp / "missing.jsonl", tmp / "out.json"), "--input",
     "missing.jsonl: no such file; give the region-annotated questions (JSON Lines or a JSON list)"),
    (lambda tmp: (tmp, tmp / "out.json"), "--input", ": cannot read it as UTF-8 text (IsADirectoryError"),
    (lambda tmp: (tmp / "in.jsonl", tmp / "no-folder" / "out.json"), "--output",
     "out.json: cannot write it (No such file or directory); check that its folder exists"),
])
def test_unreadable_input_or_unwritable_output_is_one_line(tmp_path, make, flag, message):
    """`python -m dualfocus.train.build_data` as a user runs it: exit 1, one line, no traceback."""
    (tmp_path / "in.jsonl").write_text(json.dumps({"image": "a.png", "question": "q", "answer": "a",
                                                   "box": [0.1, 0.1, 0.5, 0.5]}) + "\n")
    src, dst = make(tmp_path)
    run = subprocess.run([sys.executable, "-m", "dualfocus.train.build_data", "--input", str(src), "--output", str(dst)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stdout == ""
    [line] = run.stderr.splitlines()
    assert line.startswith(f"error: {flag} {tmp_path}") and message in line, line
