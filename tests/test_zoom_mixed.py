"""The mixed zoom bench (issue 18): global questions next to today's local ones, and the metrics by kind.

* a local-only bench is today's, byte for byte (the shipped checkpoint's numbers still hold), and a
  mixed bench's local part is the same questions with a `kind`;
* a global question's evidence is never in the crop around one sign, and is in the whole image at
  the model's 56 px;
* the files are deterministic, the counts are what the flags ask, the training records speak the
  protocols' prompts with the evidence box as `sub_area`;
* the per-kind summary and the choice statistics, on a hand-made answer file.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dualfocus import boxes
from dualfocus.benchmarks import get_protocol
from dualfocus.zoom import bench, by_kind
from dualfocus.zoom import global_kind as gk
from dualfocus.zoom import scene as sc
from dualfocus.zoom.evaluate import iou, kind_metrics, pooled


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    manifest = bench.generate(root, n_train=2, n_test=2, seed=3, kinds=("local", "global"), n_train_global=2,
                              n_test_global=3)
    return root, manifest


def test_a_local_bench_is_todays_and_the_mixed_one_extends_it(tmp_path, mixed):
    root, manifest = mixed
    local = bench.generate(tmp_path, n_train=2, n_test=2, seed=3)
    assert "kinds" not in local and local == bench.generate(tmp_path / "again", n_train=2, n_test=2, seed=3,
                                                             kinds=("local",))
    assert all("kind" not in r for r in _rows(tmp_path / "test_vqa.jsonl") + _rows(tmp_path / "test_seed.jsonl"))
    for name in ("test_vqa.jsonl", "test_seed.jsonl"):
        rows = _rows(root / name)
        assert [r["kind"] for r in rows] == ["local"] * 6 + ["global"] * 9  # local first: --limit N keeps today's
        assert [{k: v for k, v in r.items() if k != "kind"} for r in rows[:6]] == _rows(tmp_path / name)
    assert manifest["kinds"] == ["local", "global"] and manifest["test_questions_per_kind"] == {"local": 6, "global": 9}
    assert (root / "images/test_00001.png").read_bytes() == (tmp_path / "images/test_00001.png").read_bytes()
    with pytest.raises(ValueError, match="kinds"):
        bench.generate(tmp_path / "bad", 1, 1, kinds=("globl",))


def test_mixed_bench_is_deterministic(tmp_path, mixed):
    root, manifest = mixed
    again = bench.generate(tmp_path, n_train=2, n_test=2, seed=3, kinds=("local", "global"), n_train_global=2,
                           n_test_global=3)
    assert again == manifest and _files(tmp_path) == _files(root)
    regions = _rows(root / "regions_train.jsonl")
    n_global = sum(r["id"].startswith("train_global") for r in regions)
    assert n_global == 6  # 2 scenes x 3 questions
    # per local question 5 records (DualFocus x 2 formats, one macro, two listings), per global one 3
    assert manifest["train_records"] == 5 * (len(regions) - n_global) + 3 * n_global


def test_global_questions_and_their_records(mixed):
    root, _ = mixed
    vqa, seed = _rows(root / "test_vqa.jsonl")[6:], _rows(root / "test_seed.jsonl")[6:]
    assert [r["type"] for r in vqa] == list(gk.TYPES) * 3
    mc = get_protocol("seed")
    for free, choice in zip(vqa, seed):
        q = mc.from_record(choice)
        assert q.option_texts[q.letters.index(choice["answer"])] == free["answer"]
        assert len(set(q.option_texts)) == 4 and choice["box"] == free["box"]
    records = {r["id"]: r for r in json.loads((root / "train.json").read_text())}
    vqa_protocol = get_protocol("vqa")
    for region in (r for r in _rows(root / "regions_train.jsonl") if r["id"].startswith("train_global")):
        record = records[region["id"]]
        query = vqa_protocol.from_record({"question_id": region["id"], "text": region["question"]})
        turns = [t["value"] for t in record["conversations"]]
        assert turns == [vqa_protocol.box_prompt(query), boxes.box_to_text(record["sub_area"]),
                         vqa_protocol.micro_prompt(query), region["answer"]]
        assert record["sub_area"][0] < 0.15 and record["sub_area"][2] > 0.85  # the evidence spans the pegboard
        assert records[f"{region['id']}_mc"]["sub_area"] == record["sub_area"]


def test_global_evidence_is_never_in_one_crop():
    """Every answer needs >= 3 signs or all 4 corners; the crop around any one sign shows one sign and
    at most one corner cell."""
    def overlaps(a, b):
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    corner_cells = [(c % sc.CELLS * sc.CELL, c // sc.CELLS * sc.CELL) for c in gk.CORNERS.values()]
    corner_boxes = [(x, y, x + sc.CELL, y + sc.CELL) for x, y in corner_cells]
    sizes = set()
    for index in range(60):
        rng = np.random.default_rng([11, index])
        scene = gk.make_global_scene(rng)
        questions = {q.type: q for q in gk.global_questions(scene, rng)}
        sizes.add(len(scene.signs))
        assert questions["count"].answer == str(len(scene.signs)) and len(scene.signs) >= 3
        colour = questions["colour_count"].text.rsplit(" ", 1)[1].rstrip("?")
        assert questions["colour_count"].answer == str(sum(s.colour == colour for s in scene.signs))
        assert len({gk.cell_of(s.box) for s in scene.signs}) == len(scene.signs)
        assert gk.CORNERS[questions["empty_corner"].answer] not in {gk.cell_of(s.box) for s in scene.signs}
        for sign in scene.signs:
            region = boxes.focus_region([v / sc.IMAGE_SIZE for v in sign.box], sc.IMAGE_SIZE, sc.IMAGE_SIZE)
            assert [overlaps(region, s.box) for s in scene.signs].count(True) == 1
            assert sum(overlaps(region, c) for c in corner_boxes) <= 1
        assert gk.evidence_box(scene) == [min(s.box[0] for s in scene.signs), min(s.box[1] for s in scene.signs),
                                          max(s.box[2] for s in scene.signs), max(s.box[3] for s in scene.signs)]
    assert sizes == {3, 4, 5, 6}


def test_the_whole_image_shows_each_signs_colour_and_place():
    """In the 56 px macro view every sign's patch (one per pegboard cell) holds a pixel within 40 of
    its colour and nearest to it; a patch without a sign holds none within 60 of any sign colour."""
    from dualfocus.mm_utils import process_images
    from dualfocus.tiny.checkpoint import image_processor
    from dualfocus.zoom.model import SPEC

    processor, cfg = image_processor(SPEC), SimpleNamespace(image_aspect_ratio="pad")
    mean, std = torch.tensor(processor.image_mean).view(3, 1, 1), torch.tensor(processor.image_std).view(3, 1, 1)
    colours = np.array(list(sc.SIGN_COLOURS.values()), float)
    names = list(sc.SIGN_COLOURS)
    patch = SPEC.image_size // sc.CELLS
    for index in range(12):
        scene = gk.make_global_scene(np.random.default_rng([12, index]))
        pixels = (process_images([scene.image], processor, cfg)[0] * std + mean).clamp(0, 1).numpy() * 255
        signs = {gk.cell_of(s.box): s.colour for s in scene.signs}
        for cell in range(sc.CELLS * sc.CELLS):
            row, col = divmod(cell, sc.CELLS)
            block = pixels[:, row * patch:(row + 1) * patch, col * patch:(col + 1) * patch].reshape(3, -1).T
            dist = np.linalg.norm(block[:, None, :] - colours[None], axis=-1)  # (196, 6)
            nearest = names[int(np.unravel_index(dist.argmin(), dist.shape)[1])]
            if cell in signs:
                assert dist.min() <= 40 and nearest == signs[cell], (index, cell)
            else:
                assert dist.min() > 60, (index, cell)


# -- metrics by kind ------------------------------------------------------------------------------------
def _answer(qid: str, prompt: str, macro: str, micro: str | None, final: str, box=None) -> dict:
    return {"question_id": qid, "prompt": prompt, "text": final, "metadata": {
        "macro_answer": macro, "micro_answer": micro, "answer": final, "box": box, "mode": "dualfocus",
        "fallback": None if micro is not None else "no_box", "choice": "scored_micro" if final == micro else "agree"}}


def test_metrics_by_kind_on_a_hand_made_answer_file():
    box = [0.1, 0.1, 0.2, 0.2]
    rows = [{"question_id": f"l{i}", "text": "q", "image": "x.png", "box": box, "answer": "7", "kind": "local"}
            for i in range(4)]
    rows += [{"question_id": f"g{i}", "text": "n", "image": "x.png", "box": [0.1, 0.1, 0.9, 0.9], "answer": "4",
              "kind": "global"} for i in range(3)]
    records = [
        _answer("l0", "q", "3", "7", "7", box),  # differed, one right, picked micro: right
        _answer("l1", "q", "3", "7", "3", box),  # differed, one right, picked macro: wrong
        _answer("l2", "q", "7", "7", "7", box),  # agreed
        _answer("l3", "q", "3", "5", "5", [0.5, 0.5, 0.6, 0.6]),  # differed, both wrong
        _answer("g0", "n", "4", "5", "4", [0.1, 0.1, 0.9, 0.9]),  # differed, one right, picked macro: right
        _answer("g1", "n", "4", None, "4"),  # no micro pass
        _answer("g2", "n", "4", "4", "4", [0.1, 0.1, 0.5, 0.9]),
    ]
    assert [r["question_id"] for r in by_kind.first_of_each_kind(rows, 2)] == ["l0", "l1", "g0", "g1"]
    local = kind_metrics("vqa", by_kind.by_kind(rows)["local"], records)
    assert (local["n"], local["accuracy_macro"], local["accuracy_micro"], local["accuracy_dualfocus"],
            local["accuracy_oracle"], local["fallback_rate"]) == (4, 25.0, 75.0, 50.0, 75.0, 0.0)
    assert local["mean_box_iou"] == 0.75
    assert local["choice"] == {"agreed": 1, "picked_macro": 1, "picked_micro": 2, "no_micro": 0, "differed": 3,
                               "one_right": 2, "picked_right": 1, "picked_right_rate": 0.5}
    glob = kind_metrics("vqa", by_kind.by_kind(rows)["global"], records)
    assert (glob["accuracy_macro"], glob["accuracy_micro"], glob["accuracy_dualfocus"]) == (100.0, 66.67, 100.0)
    assert glob["fallback_rate"] == 0.3333 and glob["mean_box_iou"] == round((1 + 0 + iou([0.1, 0.1, 0.5, 0.9],
                                                                                            [0.1, 0.1, 0.9, 0.9])) / 3, 4)
    assert glob["choice"]["picked_right_rate"] == 1.0 and glob["choice"]["no_micro"] == 1
    both = pooled({"vqa": local, "seed": glob})
    assert both["n"] == 7 and both["accuracy_dualfocus"] == round((50 * 4 + 100 * 3) / 7, 2)
    result = {"kinds": {"local": {**pooled({"vqa": local}), "choice": by_kind.summed({"vqa": local}),
                                  "formats": {"vqa": local}}}}
    table = by_kind.format_kind_table(result)
    assert "| local | free form | 4 | 25.0 | 75.0 | 50.0 | 75.0 | 0.750 | 0.0% | 1 | 1 / 2 | 1 of 2 (50%) |" in table


def test_option_lookup_records(tmp_path):
    """--lookups: per training question the multiple-choice text, its answer written before the
    instruction, no image -> the letter of the option that shows the answer."""
    plain = bench.generate(tmp_path / "plain", n_train=2, n_test=0, seed=4, kinds=("local", "global"), n_train_global=1)
    manifest = bench.generate(tmp_path / "a", n_train=2, n_test=0, seed=4, kinds=("local", "global"), n_train_global=1,
                              lookups=2)
    assert manifest["train_records"] == plain["train_records"] + 2 * plain["train_questions"]
    records = {r["id"]: r for r in json.loads((tmp_path / "a" / "train.json").read_text())}
    regions = _rows(tmp_path / "a" / "regions_train.jsonl")
    seed = get_protocol("seed")
    for region in regions:
        mc = records[f"{region['id']}_mc"]["conversations"]
        for rid in (f"{region['id']}_lookup", f"{region['id']}_lookup2"):
            record = records[rid]
            assert "image" not in record and "<image>" not in record["conversations"][0]["value"]
            lines = record["conversations"][0]["value"].split("\n")
            assert lines[-2] == f"The answer is {region['answer']}." and lines[-1] == mc[2]["value"].split("\n")[-1]
            assert "\n".join(lines[:-2] + lines[-1:]) == mc[2]["value"].split(": ", 1)[1]
            q = seed.from_record({"question_id": rid, "text": "\n".join(lines[:-2] + lines[-1:])})
            assert q.option_texts[q.letters.index(record["conversations"][1]["value"])] == region["answer"]
