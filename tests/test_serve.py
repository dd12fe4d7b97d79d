"""The terminal demo on the trained focus model: every step printed, the picture saved."""

from __future__ import annotations

import subprocess
import sys

import pytest
from focus_model import CASES, MAX_NEW_TOKENS
from PIL import Image

from dualfocus import boxes
from dualfocus.serve import cli
from dualfocus.serve.visualize import BOX_COLOUR, CROP_COLOUR


def case(qid: str):
    return next(c for c in CASES if c.question_id == qid)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_images")
    paths = {}
    for c in CASES:
        paths[c.question_id] = out / f"{c.question_id}.png"
        c.image().save(paths[c.question_id])
    return paths


def seed_args(c, focus_checkpoint, image_path, *extra) -> list[str]:
    q = c.query()
    return ["--model-path", str(focus_checkpoint), "--image", str(image_path), "--question", q.question,
            "--options", *q.option_texts, "--device", "cpu", "--max-new-tokens", str(MAX_NEW_TOKENS), *extra]


def test_cli_prints_each_step_and_saves_the_picture(focus_checkpoint, images, tmp_path):
    """`python -m dualfocus.serve.cli` as a user runs it; s2 is trained to make the answers differ."""
    c = case("s2")
    png = tmp_path / "vis" / "focus.png"
    run = subprocess.run([sys.executable, "-m", "dualfocus.serve.cli",
                          *seed_args(c, focus_checkpoint, images["s2"], "--save-vis", str(png))],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    region = boxes.focus_region(boxes.parse_box(c.box), *c.size)
    w, h = region[2] - region[0], region[3] - region[1]
    for expected in ("macro answer: B   (raw: 'B')",
                     "box text: '[0.10, 0.10, 0.50, 0.40]'",
                     "parsed box: [0.1, 0.1, 0.5, 0.4]",
                     f"crop pixels: {list(region)} ({w}x{h} of {c.size[0]}x{c.size[1]})",
                     "micro answer: D   (raw: 'D')"):
        assert expected in lines, run.stdout
    losses = next(line for line in lines if line.startswith("candidate losses: "))
    assert losses.startswith("candidate losses: 'green' (macro) ") and "'yellow' (micro) " in losses
    choice = next(line for line in lines if line.startswith("choice: "))
    assert choice in ("choice: scored_macro", "choice: scored_micro")
    assert lines[-2] == ("answer: B" if choice.endswith("macro") else "answer: D")
    assert lines[-1] == f"picture: {png}"
    picture = Image.open(png).convert("RGB")
    assert 400 <= picture.width <= 2000 and 300 <= picture.height <= 2000
    colours = {colour for _, colour in picture.getcolors(maxcolors=1 << 20)}
    assert BOX_COLOUR in colours and CROP_COLOUR in colours  # both rectangles drawn


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_cli_free_form_question_with_its_protocol(focus_checkpoint, images, capsys, engine):
    c = case("t1")
    argv = ["--model-path", str(focus_checkpoint), "--image", str(images["t1"]), "--question", c.text,
            "--protocol", "textvqa", "--engine", engine, "--device", "cpu", "--max-new-tokens", str(MAX_NEW_TOKENS)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"image: {images['t1']} (60x60)  engine: {engine}  protocol: textvqa" in out
    assert "macro answer: stop   (raw: 'stop')" in out and "micro answer: exit   (raw: 'exit')" in out
    assert any(line.startswith("candidate losses: 'stop' (macro) ") for line in out)


def test_cli_shows_a_fallback_and_its_picture(focus_checkpoint, images, capsys, tmp_path):
    c = case("s3")  # trained to answer "none" for the box
    assert cli.main(seed_args(c, focus_checkpoint, images["s3"], "--save-vis", str(tmp_path / "s3.png"))) == 0
    out = capsys.readouterr().out.splitlines()
    assert "box text: 'none'" in out
    assert "parsed box: unusable (no_box): the micro pass is skipped" in out
    assert "micro answer: - (no micro pass)" in out and "candidate losses: - (nothing to score)" in out
    assert out[-3:-1] == ["choice: no_micro: no_box", "answer: C"]
    assert Image.open(tmp_path / "s3.png").size[0] >= 400


def test_cli_macro_mode(focus_checkpoint, images, capsys):
    assert cli.main(seed_args(case("s1"), focus_checkpoint, images["s1"], "--mode", "macro")) == 0
    out = capsys.readouterr().out.splitlines()
    assert "box: - (mode macro: one pass)" in out and out[-2:] == ["choice: macro_only", "answer: A"]


@pytest.mark.parametrize("extra, message", [
    (["--options", "red", "blue", "--protocol", "textvqa"], "free-form"),
    (["--protocol", "gqa"], "multiple choice"),
])
def test_cli_refuses_options_that_do_not_fit_the_protocol(extra, message, capsys):
    argv = ["--model-path", "unused", "--image", "unused.png", "--question", "What?", *extra]
    assert cli.main(argv) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("python -m dualfocus.serve.cli: error: ") and message in line


def test_make_query_asks_like_the_benchmarks():
    q = cli.make_query("What color is the car?", ["red", "green", "blue", "yellow"], "seed")
    assert q.text == case("s1").text and q.letters == ("A", "B", "C", "D")
    gqa = cli.make_query("What color is the car?", ["red", "green"], "gqa")
    assert gqa.text == "What color is the car?\nA. red\nB. green\nAnswer with the option's letter from the given " \
                       "choices directly."
    assert cli.make_query("What is it?\nAnswer the question using a single word or phrase.", None, "vqa").question \
        == "What is it?"


@pytest.mark.parametrize("image, extra, code, message", [
    ("missing.png", [], 1, "--image {dir}/missing.png: file not found; give a readable image file"),
    ("corrupt.png", [], 1, "--image {dir}/corrupt.png: not a readable image"),
    ("ok.png", ["--conv-mode", "vicuna"], 2, "unknown conv_mode 'vicuna'; choose one of ["),
    ("ok.png", ["--model-path", "{dir}"], 1, "--model-path {dir}: missing config.json"),
    ("ok.png", ["--model-path", "checkpoints/dualfocus-zoom-tiny", "--question", "word " * 3000], 1,
     "--question is too long for this model: "),
])
def test_cli_bad_image_or_conv_mode_is_one_line(tmp_path, image, extra, code, message):
    """One line on stderr, no traceback; the image and the options are checked before the model loads."""
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    run = subprocess.run([sys.executable, "-m", "dualfocus.serve.cli", "--model-path", str(tmp_path / "no-ckpt"),
                          "--image", str(tmp_path / image), "--question", "What?",
                          *(a.format(dir=tmp_path) for a in extra)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == code and run.stdout == ""
    [line] = run.stderr.splitlines()  # one line: no traceback, no torchvision advice
    assert line.startswith("python -m dualfocus.serve.cli: error: " + message.format(dir=tmp_path)), line


def test_cli_flags_take_both_spellings_and_help_shows_one():
    dashed = ["--model-path", "ckpt", "--image", "a.png", "--question", "q?", "--max-new-tokens", "9",
              "--conv-mode", "llava_v1", "--save-vis", "v.png"]
    underscored = ["--" + a[2:].replace("-", "_") if a.startswith("--") else a for a in dashed]
    parser = cli.build_parser()
    assert vars(parser.parse_args(underscored)) == vars(parser.parse_args(dashed))
    assert parser.parse_args(underscored).max_new_tokens == 9
    usage = parser.format_help()
    assert "--max-new-tokens" in usage and "--max_new_tokens MAX" not in usage
