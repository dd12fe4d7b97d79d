"""Drive the web page in headless Chromium (the system's browser) with Playwright; record what it shows.

Run by tests/test_web.py in the web environment (``DUALFOCUS_WEB_PYTHON``, scripts/ci/web_env.sh):

    python tests/web_browser.py URL STEPS.json OUT_DIR

STEPS.json is a list of {"name", "upload", "question"} or {"name", "example", "question"}: for each,
upload the file and type the question, or pick the zoom-bench example and wait for its question to
appear; press Ask, wait for the answer or the message, then save a screenshot (OUT_DIR/NAME.png) and the
"where it looked" picture as served (OUT_DIR/NAME_focus.png), and record the page's texts. Writes
OUT_DIR/page.json: {name: {"status", "answer", "steps", "trace", "screenshot", "focus"}}.
No assertions here: the test makes them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("DUALFOCUS_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 120_000
DONE = ("Answered in", "Could not answer")  # how #status starts once a request has finished


def text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text().strip()


def ask(page, url: str, step: dict, out: Path) -> dict:
    page.goto(url, timeout=TIMEOUT_MS)  # a fresh page: the upload box is empty again
    page.locator("#ask").wait_for(timeout=TIMEOUT_MS)
    before = text(page, "status")
    question = page.locator("#question textarea")
    if "example" in step:  # picking it must fill in its question
        page.locator("#example input").click()
        page.get_by_role("option", name=step["example"], exact=True).click()
        page.wait_for_function("q => document.querySelector('#question textarea').value === q",
                               arg=step["question"], timeout=TIMEOUT_MS)
    else:
        page.locator("#upload input[type=file]").set_input_files(step["upload"])
        # uploaded: its download link is there (while "Uploading 1 file..." shows, only its name is)
        page.locator(f'#upload a[download="{Path(step["upload"]).name}"]').wait_for(timeout=TIMEOUT_MS)
        question.fill(step["question"])
    page.locator("#ask").click()
    page.wait_for_function(
        """([before, done]) => {
            const now = document.querySelector('#status').innerText.trim();
            return now !== before && done.some(d => now.startsWith(d));
        }""", arg=[before, list(DONE)], timeout=TIMEOUT_MS)
    record = {key: text(page, key) for key in ("status", "answer", "steps")}
    record["trace"] = page.locator("#trace textarea").input_value()
    record["screenshot"] = str(out / f"{step['name']}.png")
    page.screenshot(path=record["screenshot"], full_page=True)
    record["focus"] = save_focus(page, out / f"{step['name']}_focus.png")
    return record


def save_focus(page, path: Path) -> str | None:
    """The picture the page shows in #focus, fetched from its URL (PNG: the pixels as drawn)."""
    image = page.locator("#focus img")
    if image.count() == 0:
        return None
    response = page.request.get(image.first.get_attribute("src"), timeout=TIMEOUT_MS)
    path.write_bytes(response.body())
    return str(path)


def main(url: str, steps_file: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = json.loads(Path(steps_file).read_text())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)  # every action: a loaded 2-core CI machine is slow
        pages = {step["name"]: ask(page, url, step, out) for step in steps}
        browser.close()
    (out / "page.json").write_text(json.dumps(pages, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
