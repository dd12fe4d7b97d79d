"""A web page for DualFocus: upload an image (or pick a zoom-bench example), ask, see where it looked.

    pip install -e ".[web]"
    python -m dualfocus.serve.web                       # the shipped zoom model, http://127.0.0.1:7860
    python -m dualfocus.serve.web --model-path CKPT --device cuda --host 0.0.0.0 --port 8000

The page shows the image with the box the model wrote (red) and the crop region the micro pass saw
(blue), the crop itself, the macro and micro answers, the two candidate losses, the choice and its
reason, and, when the box could not be used, why in words. Engine and selection are chosen on the
page; the other model and method flags are serve.cli's. With options the question is multiple choice
(SEED-Bench's prompts), without them free form (protocol "vqa").

One model is loaded at start and reused; requests are queued and answered one at a time (Gradio's
queue with a concurrency limit of 1, and a lock around the model for any other caller; both tested). Bad input (no image, a corrupt
or non-image file, an image over the size limits, an empty question) is answered with a message
on the page. The server binds to localhost unless --host says otherwise.

Built on Gradio (the optional extra ``[web]``): LLaVA's own demo is a Gradio server, so its users
know the page and its API client; this module is the only one that imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from dualfocus.benchmarks import get_protocol
from dualfocus.engine.base import ContextLengthError
from dualfocus.eval.cli import FlagParser
from dualfocus.focus.pipeline import DualFocus, FocusResult
from dualfocus.focus.protocols import SELECTIONS, FocusQuery
from dualfocus.mm_utils import ImageLoadError, load_image
from dualfocus.paths import ZOOM_CHECKPOINT, ZOOM_DATA
from dualfocus.serve import cli
from dualfocus.serve.explain import choice_words, fallback_line
from dualfocus.serve.visualize import crop_panel, focus_panel

PANEL = 640  # px: the longer side of each picture on the page
EXAMPLES = 12  # zoom-bench questions offered on the page
OUTPUTS = ("status", "answer", "focus", "crop", "steps", "trace")


class BadInput(ValueError):
    """Input the page refuses; the message is shown to the user as it is."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 * 2**20  # an upload's size on disk
    max_pixels: int = 25_000_000  # width x height, read from the header before decoding


def read_upload(path: str, limits: Limits) -> Image.Image:
    """The uploaded file as an RGB image, or `BadInput` saying what is wrong with it."""
    name = Path(path).name
    size = os.path.getsize(path)
    if size > limits.max_bytes:
        raise BadInput(f"{name} is {size / 2**20:.1f} MB, over the {limits.max_bytes / 2**20:g} MB limit: "
                       "upload a smaller image.")
    try:
        with Image.open(path) as header:
            width, height = header.size
    except Image.UnidentifiedImageError as e:
        raise BadInput(f"{name} is not an image (Pillow cannot identify it): upload a PNG, JPEG or WebP file.") from e
    except Image.DecompressionBombError as e:
        raise BadInput(f"{name} is too large to decode safely: upload a smaller image.") from e
    if width * height > limits.max_pixels:
        raise BadInput(f"{name} is {width} x {height} pixels, over the limit of {limits.max_pixels:,}: "
                       "upload a smaller image.")
    try:
        return load_image(path)
    except ImageLoadError as e:
        cause = e.__cause__ or e
        raise BadInput(f"{name} is a corrupt image ({type(cause).__name__}: {cause}): upload an intact copy.") from e


def zoom_examples(data: Path = ZOOM_DATA, n: int = EXAMPLES) -> dict[str, tuple[str, str]]:
    """Held-out zoom-bench questions: "image: question" -> (image path, question)."""
    path = data / "test_vqa.jsonl"
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines()[:n]]
    return {f"{Path(r['image']).stem}: {r['text']}": (str(data / r["image"]), r["text"]) for r in records}


def parse_options(text: str | None) -> list[str] | None:
    """One option per non-empty line; None for free form."""
    options = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return options or None


def answer_markdown(query: FocusQuery, result: FocusResult) -> str:
    text = result.text
    if result.answer in query.letters:
        text = f"{result.answer} ({query.option_texts[query.letters.index(result.answer)]})"
    return f"## Answer: {text}"


def steps_markdown(result: FocusResult, size: tuple[int, int]) -> str:
    """The method's steps as a table, then the fallback in words."""
    rows = [("macro answer (the whole image)", f"`{result.macro_answer}`")]
    if result.mode != "macro":
        rows.append(("box the model wrote", f"`{result.box_text}`"))
        if result.crop is not None:
            x1, y1, x2, y2 = result.crop
            rows.append(("crop (pixels)", f"{list(result.crop)}: {x2 - x1} x {y2 - y1} of {size[0]} x {size[1]}"))
            rows.append(("micro answer (the crop)", f"`{result.micro_answer}`"))
    if result.losses is not None:
        pairs = zip(("macro", "micro"), result.candidates, result.losses)
        rows.append(("candidate losses", " · ".join(f"`{c}` ({who}) {x:.4f}" for who, c, x in pairs)))
    rows.append(("choice", f"`{result.choice}`: {choice_words(result.choice)}"))
    lines = ["| step | result |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    notes = [note for note in (fallback_line(result), result.error and f"Error: {result.error}") if note]
    return "\n".join(lines + [""] + notes)


class FocusDemo:
    """One loaded model, an engine of each kind over it, and a lock: one question at a time."""

    def __init__(self, args: argparse.Namespace, limits: Limits = Limits(), loaded: tuple | None = None):
        self.args, self.limits = args, limits
        self.loaded = loaded or cli.load_model(args)  # (tokenizer, model, image_processor)
        self.engines: dict[str, object] = {}
        self.examples = zoom_examples()
        self.lock = threading.Lock()

    def engine(self, name: str):
        if name not in self.engines:
            self.engines[name] = cli.make_engine(name, *self.loaded)
        return self.engines[name]

    def image(self, upload: str | None, example: str | None) -> Image.Image:
        if upload:
            return read_upload(upload, self.limits)
        if example in self.examples:
            return load_image(self.examples[example][0])
        raise BadInput("No image: upload one or pick a zoom-bench example.")

    def ask(self, image: Image.Image, question: str, options: list[str] | None, engine: str,
            selection: str) -> tuple[FocusQuery, FocusResult]:
        protocol = "seed" if options else "vqa"
        if not question.strip():
            raise BadInput("The question is empty: type a question about the image.")
        try:
            query = cli.make_query(question.strip(), options, protocol)
        except ValueError as e:  # a RecordError: e.g. "<image>" typed into the question
            raise BadInput(f"The question cannot be asked: {e}") from e
        config = cli.focus_config(self.args, selection=selection)
        with self.lock:  # Gradio's queue runs one request at a time; this guards other callers
            try:
                return query, DualFocus(self.engine(engine), get_protocol(protocol), config).run([(query, image)])[0]
            except ContextLengthError as e:
                raise BadInput(f"The question is too long for this model: {e}.") from e

    def respond(self, upload: str | None, example: str | None, question: str | None, options: str | None,
                engine: str, selection: str) -> tuple:
        """The page's outputs, in `OUTPUTS` order; bad input gives a message and empty results."""
        start = time.perf_counter()
        try:
            image = self.image(upload, example)
            query, result = self.ask(image, question or "", parse_options(options), engine, selection)
        except BadInput as e:
            return f"**Could not answer:** {e}", "", None, None, "", ""
        status = (f"Answered in {time.perf_counter() - start:.1f} s ({engine} engine, selection {selection}, "
                  f"{'multiple choice' if query.options else 'free form'}).")
        return (status, answer_markdown(query, result), focus_panel(image, result, PANEL),
                crop_panel(image, result, PANEL // 2), steps_markdown(result, image.size),
                "\n".join(cli.format_steps(result, image.size)))


INTRO = """# DualFocus: the whole image, then a closer look
Upload an image or pick a zoom-bench example, ask a question, and see where the model looked: the box
it wrote (red), the crop it read (blue), both answers and how one was chosen."""


def build_app(demo: FocusDemo):
    """The Gradio page over `demo`; `.launch()` it."""
    import gradio as gr

    with gr.Blocks(title="DualFocus", analytics_enabled=False) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image", type="filepath", elem_id="upload")
                example = gr.Dropdown(list(demo.examples), value=None, label="... or a zoom-bench example",
                                      elem_id="example")
                question = gr.Textbox(label="Question", elem_id="question")
                options = gr.Textbox(label="Options (optional; one per line: multiple choice)", lines=3,
                                     elem_id="options")
                engine = gr.Radio(list(cli.ENGINES), value=demo.args.engine, label="Engine", elem_id="engine")
                selection = gr.Radio(list(SELECTIONS), value=demo.args.selection, label="Selection",
                                     elem_id="selection")
                ask = gr.Button("Ask", variant="primary", elem_id="ask")
            with gr.Column(scale=2):
                outputs = _output_components(gr)
        example.input(lambda key: (demo.examples[key][1] if key in demo.examples else gr.skip(), None),
                      example, [question, upload])  # an example replaces the upload
        upload.upload(lambda _: None, upload, example)
        ask.click(demo.respond, [upload, example, question, options, engine, selection], outputs, api_name="ask",
                  concurrency_limit=1)
    return app.queue(default_concurrency_limit=1)


def _output_components(gr) -> list:
    status = gr.Markdown(elem_id="status")
    answer = gr.Markdown(elem_id="answer")
    with gr.Row():
        focus = gr.Image(label="Where it looked: box (red), crop (blue)", format="png",
                         interactive=False, elem_id="focus")
        crop = gr.Image(label="The crop the micro pass read", format="png", interactive=False, elem_id="crop")
    steps = gr.Markdown(elem_id="steps")
    trace = gr.Textbox(label="Trace (as serve.cli prints it)", lines=10, interactive=False, elem_id="trace")
    return [status, answer, focus, crop, steps, trace]


def build_parser() -> argparse.ArgumentParser:
    p = FlagParser(prog="python -m dualfocus.serve.web", description=__doc__)
    cli.add_model_arguments(p, model_path_default=str(ZOOM_CHECKPOINT))
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-image-mb", type=float, default=Limits.max_bytes / 2**20, help="largest upload")
    p.add_argument("--max-image-pixels", type=int, default=Limits.max_pixels, help="largest width x height")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    try:
        import gradio as gr
    except ImportError:
        sys.exit('the web page needs Gradio: pip install -e ".[web]"')
    limits = Limits(int(args.max_image_mb * 2**20), args.max_image_pixels)
    app = build_app(FocusDemo(args, limits))
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # system fonts: no font download
    app.launch(server_name=args.host, server_port=args.port, theme=theme, ssr_mode=False,
               max_file_size=2 * limits.max_bytes)  # Gradio's own cap, above ours so ours speaks first
    return 0


if __name__ == "__main__":
    sys.exit(main())
