"""The task configs' functions: documents in the benchmarks' official formats, read and scored by
the project's benchmark adapters (`dualfocus.benchmarks`), as our runner reads and scores them.

Data come from LLaVA's layout under the working directory (``playground/data/eval``, see
playground/data/eval/README.md): the YAMLs name the question files, and these functions find the
images and the annotation files (gold answers) there. ``DUALFOCUS_<NAME>_IMAGES`` and
``DUALFOCUS_<NAME>_ANNOTATIONS`` (NAME: SEED, MMBENCH, GQA, TEXTVQA) override the two, e.g. for a
copy of a config that points at other files. The zoom-bench tasks read ``playground/zoom`` (shipped
with the repository).
"""

from __future__ import annotations

import functools
import os

from dualfocus.benchmarks import get_benchmark, score_answer

DATA_ROOT = "playground/data/eval"
ZOOM_ROOT = "playground/zoom"
# benchmark -> (image folder, annotation file) under DATA_ROOT; MMBench's TSV holds both
LAYOUT = {
    "seed": ("seed_bench", "seed_bench/SEED-Bench.json"),
    "mmbench": ("mmbench", None),
    "gqa": ("gqa/data/images", "gqa/data/testdev_balanced_questions.json"),
    "textvqa": ("textvqa/train_images", "textvqa/TextVQA_0.5.1_val.json"),
}


@functools.cache
def benchmark(name: str):
    return get_benchmark(name)


def image_folder(name: str) -> str:
    return os.environ.get(f"DUALFOCUS_{name.upper()}_IMAGES") or os.path.join(DATA_ROOT, LAYOUT[name][0])


@functools.cache
def annotations(name: str, path: str | None):
    """The benchmark's gold-answer index, or None where the documents carry the answers."""
    return benchmark(name).load_annotations(path) if path else None


def annotation_file(name: str) -> str | None:
    default = LAYOUT[name][1]
    return os.environ.get(f"DUALFOCUS_{name.upper()}_ANNOTATIONS") or (os.path.join(DATA_ROOT, default) if default else None)


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


def seed_doc_to_text(doc):
    return _text("seed", doc)


def seed_doc_to_visual(doc):
    return _visual("seed", doc)


def seed_process_results(doc, results):
    return _results("seed", doc, results)


def mmbench_doc_to_text(doc):
    return _text("mmbench", doc)


def mmbench_doc_to_visual(doc):
    return _visual("mmbench", doc)


def mmbench_process_results(doc, results):
    return _results("mmbench", doc, results)


def gqa_doc_to_text(doc):
    return _text("gqa", doc)


def gqa_doc_to_visual(doc):
    return _visual("gqa", doc)


def gqa_process_results(doc, results):
    return _results("gqa", doc, results)


def textvqa_doc_to_text(doc):
    return _text("textvqa", doc)


def textvqa_doc_to_visual(doc):
    return _visual("textvqa", doc)


def textvqa_process_results(doc, results):
    return _results("textvqa", doc, results)


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
