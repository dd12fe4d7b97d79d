"""The task configs' functions: documents in the benchmarks' official formats, read and scored by
the project's benchmark adapters (`dualfocus.benchmarks`), as our runner reads and scores them.

Data come from LLaVA's layout under the working directory (``playground/data/eval``, see
playground/data/eval/README.md): the YAMLs name the question files, and these functions find the
images and the annotation files (gold answers) there. ``DUALFOCUS_<NAME>_IMAGES`` and
``DUALFOCUS_<NAME>_ANNOTATIONS`` (NAME: SEED, MMBENCH, GQA, TEXTVQA) override the two, e.g. for a
copy of a config that points at other files; the defaults are the benchmarks' registered layouts.
The zoom-bench tasks read ``playground/zoom`` (shipped with the repository).
"""

from __future__ import annotations

import functools
import os

from dualfocus.benchmarks import REGISTRY, get_benchmark, score_answer

DATA_ROOT = "playground/data/eval"
ZOOM_ROOT = "playground/zoom"


@functools.cache
def benchmark(name: str):
    return get_benchmark(name)


def image_folder(name: str) -> str:
    """The benchmark's image folder in LLaVA's layout (its registered `Layout`), or the override."""
    layout = REGISTRY[name].layout
    return os.environ.get(f"DUALFOCUS_{name.upper()}_IMAGES") or os.path.join(DATA_ROOT, layout.folder, *filter(None, [layout.images]))


@functools.cache
def annotations(name: str, path: str | None):
    """The benchmark's gold-answer index, or None where the documents carry the answers."""
    return benchmark(name).load_annotations(path) if path else None


def annotation_file(name: str) -> str | None:
    """The override, else the benchmark's annotation file in LLaVA's layout (None: the documents hold the answers)."""
    return os.environ.get(f"DUALFOCUS_{name.upper()}_ANNOTATIONS") or REGISTRY[name].layout.annotation_file(
        os.path.join(DATA_ROOT, REGISTRY[name].layout.folder))


# -- the official-format benchmarks ----------------------------------------------------------------
def _text(name: str, doc) -> str:
    """The question as LLaVA's prompt shows it (the model reads the document itself, by protocol)."""
    return benchmark(name).to_query(doc).text


def _visual(name: str, doc) -> list:
    bench = benchmark(name)
    return [bench.load_image(bench.to_query(doc), image_folder(name))]


def _results(name: str, doc, results) -> dict:
    """The answer text, read back by the protocol (GQA writes the option text), scored as our runner
    scores it: letters 1/0, TextVQA the VQA accuracy over its 10 answers; in percent."""
    bench = benchmark(name)
    query = bench.to_query(doc)
    gold = bench.gold(doc, query, annotations(name, annotation_file(name)))
    if gold is None:
        raise ValueError(f"{name} document {query.question_id!r} has no gold answer; set "
                         f"DUALFOCUS_{name.upper()}_ANNOTATIONS to the benchmark's annotation file")
    answer = bench.protocol.parse_answer(results[0], query)
    return {"accuracy": 100.0 * score_answer(answer, gold)}


def _task_functions(name: str) -> dict:
    """The YAML's `<name>_doc_to_text`, `<name>_doc_to_visual`, `<name>_process_results`."""

    def doc_to_text(doc):
        return _text(name, doc)

    def doc_to_visual(doc):
        return _visual(name, doc)

    def process_results(doc, results):
        return _results(name, doc, results)

    return {f"{name}_{f.__name__}": f for f in (doc_to_text, doc_to_visual, process_results)}


# Every registered benchmark with a data layout gets its three functions (seed_doc_to_text, ...).
for _name, _cls in REGISTRY.items():
    if _cls.layout is not None:
        globals().update(_task_functions(_name))


# -- the zoom bench (playground/zoom): any model sees only the context ----------------------------
def zoom_doc_to_text(doc):
    return doc["text"]


def zoom_doc_to_visual(doc):
    from dualfocus.mm_utils import load_image

    return [load_image(os.path.join(ZOOM_ROOT, doc["image"]))]


def _zoom_results(name: str, doc, results) -> dict:
    """The answer text read as the protocol reads it (free form: cleaned; multiple choice: the
    letter), scored as our runner scores it (VQA normalisation; letters 1/0), in percent."""
    bench = benchmark(name)
    query = bench.to_query(doc)
    answer = bench.protocol.parse_answer(results[0], query)
    return {"accuracy": 100.0 * score_answer(answer, bench.gold(doc, query))}


def zoom_vqa_process_results(doc, results):
    return _zoom_results("vqa", doc, results)


def zoom_seed_process_results(doc, results):
    return _zoom_results("seed", doc, results)


def zoom_ppl_doc_to_text(doc):
    """The question alone: the options are the continuations scored."""
    return doc["text"].split("\n")[0]


def zoom_ppl_doc_to_choice(doc):
    return list(benchmark("seed").to_query(doc).option_texts)


def zoom_ppl_doc_to_target(doc):
    return "ABCD".index(doc["answer"])
