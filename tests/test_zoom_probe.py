"""The multiple-choice probe's record builders (scripts/train/zoom_mc_probe.py): what docs/zoom.md's
probe tables were trained on is what they say (the yes/no answer follows the glyph asked about, the
text lookup writes the sign's glyph, the glyph probe finds the answer's option line, not "Answer")."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from script_module import load_script

from dualfocus.conversation import conv_templates
from dualfocus.model.builder import load_pretrained_model
from dualfocus.train.data import SupervisedDataset
from dualfocus.train.sub_area import CropPolicy
from dualfocus.zoom import bench

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "train" / "zoom_mc_probe.py"
SHIPPED = REPO / "checkpoints" / "dualfocus-zoom-tiny"


@pytest.fixture(scope="module")
def probe():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    bench.generate(out, 12, 1, seed=0)
    return out


@pytest.fixture(scope="module")
def mc_records(bench_dir) -> list[dict]:
    return [r for r in json.loads((bench_dir / "train.json").read_text()) if r["id"].endswith("_mc")]


def gold_glyph(record: dict) -> str:
    text = record["conversations"][2]["value"]
    letter = record["conversations"][3]["value"]
    return next(line[3:] for line in text.split("\n") if line.startswith(f"{letter}. "))


def test_yes_no_answers_whether_the_glyph_asked_is_the_signs(probe, mc_records):
    made = [probe.yes_no(r, random.Random(k)) for k, r in enumerate(mc_records)]
    answers = [m["conversations"][3]["value"] for m in made]
    assert {"Yes", "No"} == set(answers)
    for record, m in zip(mc_records, made):
        question = m["conversations"][2]["value"].split("\n", 1)[1]
        glyph = question.split(" written on")[0].split(" ")[-1]  # "... Is 7 written on the sign that is red?"
        assert m["conversations"][3]["value"] == ("Yes" if glyph == gold_glyph(record) else "No")
        assert question.endswith(record["conversations"][0]["value"].rsplit(" ", 1)[1])  # the same colour, last
        assert m["conversations"][1] == record["conversations"][1] and m["sub_area"] == record["sub_area"]


def test_text_lookup_writes_the_signs_glyph_before_the_instruction(probe, mc_records):
    for record in mc_records:
        lines = probe.text_lookup(record)["conversations"][0]["value"].split("\n")
        assert lines[-2] == f"The sign reads {gold_glyph(record)}."
        assert lines[-1] == bench.OPTION_INSTRUCTION


def test_letter_states_takes_the_glyph_of_the_answers_option(probe, bench_dir, mc_records):
    tok, model, processor, _ = load_pretrained_model(str(SHIPPED), None, None, device="cpu")
    records = [r for r in mc_records if r["conversations"][3]["value"] == "A"][:2]  # "A" is also in "Answer"
    records += [r for r in mc_records if r["conversations"][3]["value"] != "A"][:2]
    policy = CropPolicy(units="normalized", process=True)
    data = SupervisedDataset(records, tok, processor, conv_templates["vicuna_v1"], image_folder=str(bench_dir),
                             crop_policy=policy)
    states, glyphs = probe.letter_states(model.float().eval(), tok, [data[i] for i in range(len(records))])
    expected = [tok(f"A. {gold_glyph(r)}", add_special_tokens=False).input_ids[-1] for r in records]
    assert glyphs == expected
    assert states.shape == (len(records), model.config.num_hidden_layers + 1, model.config.hidden_size)


def test_synthetic_lookups_asked_both_ways(probe, monkeypatch):
    # The records themselves (the tokenizing dataset is bypassed): a forward record's answer is the
    # glyph of the option it names; a reverse one's the letter of the option showing its answer.
    monkeypatch.setattr(probe, "SupervisedDataset", lambda records, *a, **k: records)
    monkeypatch.setattr(probe, "tensors", lambda records: records)
    made = probe.synthetic_lookups(200, None, None, forward=0.5, wording="line")
    forward = 0
    for record in made:
        *options, asked = record["conversations"][0]["value"].split("\n")[1:]
        answer = record["conversations"][1]["value"]
        shown = dict(line.split(". ", 1) for line in options if line[1:3] == ". ")
        if record["id"].startswith("f"):
            assert asked in {f"{x}." for x in probe.LETTERS} and answer == shown[asked[0]], record
            forward += 1
        else:
            assert asked == bench.OPTION_INSTRUCTION and f"The answer is {shown[answer]}." in options, record
    assert 70 <= forward <= 130
    assert all(r["id"].startswith("s") for r in probe.synthetic_lookups(50, None, None, seed=99))
