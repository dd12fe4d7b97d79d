"""The web page (`dualfocus.serve.web`) on the shipped zoom model: its answers and messages as Python
returns them, and the page itself in headless Chromium (Debian's, driven by Playwright in the web
environment: scripts/ci/web_env.sh; tests/web_browser.py). Without that environment the browser
test skips locally and fails in CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from side_env import required_env

from dualfocus import boxes
from dualfocus.demo import ZOOM_CHECKPOINT, ZOOM_DATA
from dualfocus.focus.pipeline import IMAGE_TOKEN_IN_BOX, FocusResult
from dualfocus.serve import cli, explain, web
from dualfocus.serve.visualize import BOX_COLOUR, CROP_COLOUR

HERE = Path(__file__).parent
CHROMIUM = os.environ.get("DUALFOCUS_CHROMIUM", "/usr/bin/chromium")
# A held-out question the shipped model answers right only through the crop (macro "2", micro "P").
RECORD = next(r for r in map(json.loads, (ZOOM_DATA / "test_vqa.jsonl").read_text().splitlines())
              if r["question_id"] == "test_00002_1")
IMAGE = ZOOM_DATA / RECORD["image"]


def _env(name: str) -> str:
    return required_env(name, "web_env.sh")


def _chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"no browser at {CHROMIUM}: .ci/run installs Debian's chromium (scripts/ci/web_env.sh --install)")
    pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium, or set DUALFOCUS_CHROMIUM)")


@pytest.fixture(scope="module")
def demo():
    args = web.build_parser().parse_args(["--device", "cpu"])
    return web.FocusDemo(args, web.Limits(max_bytes=2**18, max_pixels=1000 * 1000))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_uploads")
    (out / "corrupt.png").write_bytes(IMAGE.read_bytes()[:3000])  # the header is intact, the pixels are cut
    (out / "notes.txt").write_text("not a picture\n")
    Image.new("RGB", (1200, 900)).save(out / "wide.png")  # 1.08 M pixels, a few KB
    (out / "heavy.bmp").write_bytes(b"BM" + bytes(300_000))  # over 256 KB
    return out


def outputs(values: tuple) -> dict:
    assert len(values) == len(web.OUTPUTS)
    return dict(zip(web.OUTPUTS, values))


def test_the_page_answers_through_the_crop(demo):
    out = outputs(demo.respond(str(IMAGE), None, RECORD["text"], "", "fast", "original"))
    assert out["status"].startswith("Answered in ") and out["answer"] == f"## Answer: {RECORD['answer']}"
    assert "| micro answer (the crop) | `P` |" in out["steps"]
    assert "| choice | `scored_micro`: the answers differed; the crop's answer had the lower loss |" in out["steps"]
    assert "`2` (macro) " in out["steps"] and "`P` (micro) " in out["steps"]
    assert out["trace"].splitlines()[-1] == "answer: P"
    assert out["focus"].size == (web.PANEL, web.PANEL) and out["crop"].size[0] == web.PANEL // 2


def test_multiple_choice_and_an_example(demo):
    key = next(k for k, (path, _) in demo.examples.items() if path == str(IMAGE) and "blue" in k)
    out = outputs(demo.respond(None, key, RECORD["text"], "3\nP\nK\n\n8", "reference", "macro"))
    assert "multiple choice" in out["status"] and "reference engine" in out["status"]
    assert "`macro_only`: selection 'macro'" in out["steps"]
    letter = out["answer"].removeprefix("## Answer: ")[0]
    assert out["answer"] == f"## Answer: {letter} ({dict(zip('ABCD', ('3', 'P', 'K', '8')))[letter]})"


@pytest.mark.parametrize("upload, question, message", [
    ("corrupt.png", "What?", "corrupt.png is a corrupt image (OSError: image file is truncated"),
    ("notes.txt", "What?", "notes.txt is not an image (Pillow cannot identify it): upload a PNG"),
    ("wide.png", "What?", "wide.png is 1200 x 900 pixels, over the limit of 1,000,000: upload a smaller image."),
    ("heavy.bmp", "What?", "heavy.bmp is 0.3 MB, over the 0.25 MB limit: upload a smaller image."),
    (None, "What?", "No image: upload one or pick a zoom-bench example."),
    ("image", "  ", "The question is empty: type a question about the image."),
    ("image", "What is <image>?", "The question cannot be asked: "),
    ("image", "Why? " * 1000, "The question is too long for this model: a prompt of "),
])
def test_bad_input_is_a_message(demo, bad_files, upload, question, message):
    path = {None: None, "image": str(IMAGE)}.get(upload, str(bad_files / str(upload)))
    out = outputs(demo.respond(path, None, question, "", "fast", "original"))
    assert out["status"].startswith(f"**Could not answer:** {message}"), out["status"]
    assert (out["answer"], out["focus"], out["crop"], out["steps"], out["trace"]) == ("", None, None, "", "")


def test_one_model_and_one_question_at_a_time(demo, monkeypatch):
    """Both engines share the loaded model; two callers at once are answered one after the other."""
    assert demo.engine("fast").model is demo.engine("reference").model is demo.loaded[1]
    active, most = [0], [0]
    engine = demo.engine("fast")
    generate = engine.generate

    def counting(requests):
        active[0] += 1
        most[0] = max(most[0], active[0])
        time.sleep(0.05)  # room for the other thread to come in
        try:
            return generate(requests)
        finally:
            active[0] -= 1

    monkeypatch.setattr(engine, "generate", counting)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(
        demo.respond(str(IMAGE), None, RECORD["text"], "", "fast", "original")[1])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == ["## Answer: P"] * 2 and most[0] == 1


def test_fallbacks_and_choices_in_words():
    assert set(boxes.BOX_ERROR_REASONS) | {IMAGE_TOKEN_IN_BOX} <= set(explain.FALLBACKS)
    result = FocusResult("q", macro_answer="2", box_text="[120, 45, 300, 200]", fallback=boxes.PIXEL_UNITS,
                         choice="no_micro: pixel_units", text="2", answer="2")
    md = web.steps_markdown(result, (896, 896))
    assert "The micro pass was skipped: the box was in pixel units, not fractions of the image." in md
    assert "no micro pass (the box was in pixel units, not fractions of the image)" in md
    assert "micro answer" not in md and "crop (pixels)" not in md
    assert explain.choice_words("scoring_failed") == ("the answers differed but could not be scored; the whole "
                                                     "image's stands")


def test_web_flags_are_the_cli_flags_with_a_default_model():
    args = web.build_parser().parse_args([])
    assert (args.host, args.port, args.model_path) == ("127.0.0.1", 7860, str(ZOOM_CHECKPOINT))
    cli_flags = {a.dest for a in cli.build_parser()._actions} - {"image", "question", "options", "protocol",
                                                                    "save_vis"}
    assert cli_flags <= {a.dest for a in web.build_parser()._actions}


@pytest.mark.web
def test_the_core_package_never_imports_gradio():
    """Where Gradio is installed, importing the package (web.py included) still leaves it out."""
    code = ("import importlib.util, sys, dualfocus.serve.web, dualfocus.serve.cli, dualfocus.eval.runner; "
            "print(importlib.util.find_spec('gradio') is not None, any(m.split('.')[0] == 'gradio' for m in sys.modules))")
    run = subprocess.run([_env("DUALFOCUS_WEB_PYTHON"), "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    assert run.returncode == 0 and run.stdout.strip() == "True False", run.stdout + run.stderr  # there, not imported


@pytest.mark.skipif(importlib.util.find_spec("gradio") is not None, reason="Gradio is installed here")
def test_without_gradio_the_command_says_what_to_install():
    run = subprocess.run([sys.executable, "-m", "dualfocus.serve.web", "--device", "cpu"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1 and run.stderr.strip() == 'the web page needs Gradio: pip install -e ".[web]"'


# -- the page in a real browser ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the web server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    pytest.fail(f"the web server did not answer at {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m dualfocus.serve.web` on 127.0.0.1 and a free port, in the web environment."""
    python = _env("DUALFOCUS_WEB_PYTHON")
    port = _free_port()
    log = tmp_path_factory.mktemp("web_server") / "server.log"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    with open(log, "w") as out:
        proc = subprocess.Popen([python, "-m", "dualfocus.serve.web", "--host", "127.0.0.1", "--port", str(port),
                                 "--device", "cpu"], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, proc, log)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _box_of(picture: Image.Image, colour: tuple[int, int, int]) -> list[float]:
    """The normalised bounding box of the pixels of exactly `colour`."""
    ys, xs = np.nonzero((np.asarray(picture.convert("RGB")) == colour).all(axis=-1))  # (H, W) mask
    assert xs.size, f"no pixel of {colour} in the picture"
    return [xs.min() / picture.width, ys.min() / picture.height, (xs.max() + 1) / picture.width,
            (ys.max() + 1) / picture.height]


@pytest.mark.web
def test_the_page_in_headless_chromium(server, bad_files, tmp_path):
    """Upload a zoom-bench image, ask, read the answer and the box off the page; then a corrupt file, a
    text file, and the same question picked from the built-in examples."""
    chromium = _chromium()
    url, proc = server
    steps = [{"name": "answer", "upload": str(IMAGE), "question": RECORD["text"]},
             {"name": "corrupt", "upload": str(bad_files / "corrupt.png"), "question": RECORD["text"]},
             {"name": "not_an_image", "upload": str(bad_files / "notes.txt"), "question": RECORD["text"]},
             {"name": "example", "example": f"{IMAGE.stem}: {RECORD['text']}", "question": RECORD["text"]}]
    (tmp_path / "steps.json").write_text(json.dumps(steps))
    run = subprocess.run([_env("DUALFOCUS_WEB_PYTHON"), str(HERE / "web_browser.py"), url,
                          str(tmp_path / "steps.json"), str(tmp_path)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "DUALFOCUS_CHROMIUM": chromium})
    assert run.returncode == 0, run.stderr[-3000:]
    page = json.loads((tmp_path / "page.json").read_text())

    answered = page["answer"]
    assert answered["status"].startswith("Answered in ") and answered["answer"] == f"Answer: {RECORD['answer']}"
    assert "scored_micro: the answers differed; the crop's answer had the lower loss" in answered["steps"]
    picture = Image.open(answered["focus"])
    assert picture.format == "PNG" and picture.size == (web.PANEL, web.PANEL)
    drawn = _box_of(picture, BOX_COLOUR)  # the model's box as drawn on the page, against the sign's
    assert all(abs(a - b) < 0.02 for a, b in zip(drawn, RECORD["box"])), (drawn, RECORD["box"])
    crop = _box_of(picture, CROP_COLOUR)
    assert crop[0] < drawn[0] and crop[1] < drawn[1] and crop[2] > drawn[2] and crop[3] > drawn[3]
    shot = Image.open(answered["screenshot"])
    assert shot.width == 1280 and shot.height >= 800

    assert page["corrupt"]["status"].startswith("Could not answer: corrupt.png is a corrupt image")
    assert page["corrupt"]["answer"] == "" and page["corrupt"]["focus"] is None
    assert page["not_an_image"]["status"].startswith("Could not answer: notes.txt is not an image")
    assert page["example"]["answer"] == answered["answer"] and page["example"]["steps"] == answered["steps"]
    assert proc.poll() is None  # the server is still up after the bad input
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200


@pytest.mark.web
def test_gradio_queues_the_page_s_requests_one_at_a_time():
    """The page as built, over a stand-in without a lock: three requests sent at once never overlap."""
    run = subprocess.run([_env("DUALFOCUS_WEB_PYTHON"), str(HERE / "web_queue.py"), str(_free_port())],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(HERE.parent), "GRADIO_ANALYTICS_ENABLED": "False"})
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"most": 1, "answers": ["Answered q0", "Answered q1", "Answered q2"]}
