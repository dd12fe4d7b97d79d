"""README's usage examples run as written, on the shipped zoom model, and answer right; what a clone of
the repository needs to know is in README and docs/, and every path they point to is in the clone."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
CHECKPOINT = REPO / "checkpoints" / "dualfocus-zoom-tiny"

needs_checkpoint = pytest.mark.skipif(not (CHECKPOINT / "config.json").is_file(), reason="zoom checkpoint not shipped")
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def code_block(language: str, containing: str) -> str:
    """The README's first fenced `language` block whose text contains `containing`."""
    blocks = re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)
    return next(b for b in blocks if containing in b)


def gold(image: str, question: str) -> str:
    """The zoom bench's answer for this image and question (KeyError: not a held-out question)."""
    with open(REPO / "playground" / "zoom" / "test_vqa.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {(r["image"], r["text"]): r["answer"] for r in rows}[(image, question)]


def cli_argv(tmp_path: Path) -> list[str]:
    """README's serve.cli command, continuation lines joined, --save-vis moved into tmp_path."""
    block = code_block("bash", "dualfocus.serve.cli")
    argv = shlex.split(block.replace("\\\n", " "), comments=True)
    argv[argv.index("--save-vis") + 1] = str(tmp_path / "focus.png")
    return argv


@needs_checkpoint
def test_readme_python_snippet_answers_a_trained_question_right():
    snippet = code_block("python", "load_pretrained_model(")
    image = re.search(r'Image\.open\("playground/zoom/([^"]+)"\)', snippet).group(1)
    question = re.search(r'"text": "([^"]+)"', snippet).group(1)
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == gold(image, question), proc.stdout


@needs_checkpoint
def test_readme_serve_cli_example_answers_right(tmp_path):
    argv = cli_argv(tmp_path)
    assert argv[:3] == ["python", "-m", "dualfocus.serve.cli"]
    image = argv[argv.index("--image") + 1].removeprefix("playground/zoom/")
    expected = gold(image, argv[argv.index("--question") + 1])
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"answer: {expected}" in proc.stdout.splitlines(), proc.stdout
    assert (tmp_path / "focus.png").is_file()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_point_only_into_the_clone(doc):
    """No `../shared/...` (a folder outside the repository), and every relative link resolves."""
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which a clone does not have"


def test_readme_says_what_a_newcomer_needs():
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in README
    assert re.search(r"The whole suite took \d+ minutes( \d+ s)? in CI on 2 CPU cores", " ".join(README.split()))
    seed = README[README.index("SEED-Bench's question file"):][:600]
    assert "LLaVA's `llava-seed-bench.jsonl`" in seed and "`playground/data/eval/seed_bench/`" in seed
    assert "SPLIT=llava-seed-bench bash scripts/eval/eval_seed.sh" in seed
