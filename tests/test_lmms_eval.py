"""The lmms-eval plugin (dualfocus.integrations.lmms_eval).

The first part runs here: how a request becomes a DualFocus question, the loglikelihood ids, the
trace file, and that importing the plugin package is cheap. The tests marked `lmms` run the real
lmms-eval 0.7.3 in the side environment ``bash scripts/ci/lmms_env.sh`` builds (.ci/run does it
and exports DUALFOCUS_LMMS_PYTHON; without it they skip locally and fail in CI): its install
(CPU torch, no CUDA package), the entry point, and ``lmms-eval --model dualfocus`` end to end on
the shipped zoom bench with the shipped zoom checkpoint, compared with our runner question by
question, plus the official-format task configs on the demo fixtures.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from side_env import required_env

from dualfocus.benchmarks import get_benchmark
from dualfocus.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from dualfocus.focus.pipeline import FocusConfig
from dualfocus.integrations.lmms_eval.generate import cut_at_stop, focus_config
from dualfocus.integrations.lmms_eval.likelihood import scoring_ids, user_turn
from dualfocus.integrations.lmms_eval.queries import context_query, option_block
from dualfocus.integrations.lmms_eval.trace import TraceWriter, rank_path
from dualfocus.mm_utils import tokenizer_image_token

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "dualfocus" / "integrations" / "lmms_eval" / "tasks"
ZOOM, ZOOM_CKPT, DEMO = ROOT / "playground" / "zoom", ROOT / "checkpoints" / "dualfocus-zoom-tiny", ROOT / "playground" / "demo"
N_ZOOM = 64  # zoom questions per task in the end-to-end run (the first N of each file)


def zoom_rows(fmt: str, n: int = N_ZOOM) -> list[dict]:
    with open(ZOOM / f"test_{fmt}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f][:n]


# --- requests -> questions --------------------------------------------------------------------------
def test_context_with_options_is_the_seed_question_the_runner_asks():
    row = zoom_rows("seed", 1)[0]
    query, protocol = context_query(row["text"], "t/0")
    expected = get_benchmark("seed").to_query(row)
    assert protocol.name == "seed" and protocol.multiple_choice
    for name in ("question", "text", "options", "option_texts", "instruction", "prompt"):
        assert getattr(query, name) == getattr(expected, name), name
    assert protocol.macro_prompt(query) == protocol.macro_prompt(expected)
    assert protocol.box_prompt(query) == protocol.box_prompt(expected)


def test_options_are_recovered_from_other_layouts():
    context = "Hint: look left.\nQuestion: which fruit?\nOptions:\n(A) apple\n(B) pear\n(C) plum\nAnswer with the letter."
    query, protocol = context_query(context, 1)
    assert query.option_texts == ("apple", "pear", "plum") and query.options[1] == "B. pear"
    assert query.question == "Hint: look left.\nQuestion: which fruit?\nOptions:"
    assert query.instruction == "Answer with the letter."
    assert protocol.parse_answer("(b)", query) == "B" and protocol.parse_answer("plum", query) == "C"
    assert option_block(["A) x", "C) y"]) is None  # letters must run A, B, ...
    assert option_block(["x", "A. one", "B. two"]) == (1, 3)


def test_context_without_options_is_free_form():
    query, protocol = context_query("<image>\nWhat is written on the sign?", 2)
    assert protocol.name == "vqa" and not protocol.multiple_choice and not query.options
    assert query.text == "What is written on the sign?"  # the marker goes: images are passed apart


def test_task_generation_settings_reach_the_pipeline():
    base = FocusConfig(max_new_tokens=128, box_max_new_tokens=128)
    cfg = focus_config(base, {"max_new_tokens": 16, "temperature": 0, "do_sample": True, "until": ["\n"]})
    assert (cfg.max_new_tokens, cfg.box_max_new_tokens, cfg.temperature, cfg.top_p) == (16, 128, 0.0, None)
    cfg = focus_config(base, {"temperature": 0.5, "top_p": 0.9})  # as lmms-eval's llava: > 0 samples
    assert (cfg.max_new_tokens, cfg.temperature, cfg.top_p) == (128, 0.5, 0.9)
    with pytest.raises(ValueError, match="beam search"):
        focus_config(base, {"num_beams": 3})
    assert cut_at_stop("B\n\nmore", ["\n\n"]) == "B" and cut_at_stop("B", []) == "B"


def test_loglikelihood_labels_only_the_answer():
    from PIL import Image

    from dualfocus.integrations.lmms_eval.likelihood import read_scoring
    from dualfocus.model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(ZOOM_CKPT))
    ids, labels = scoring_ids("What is on the sign?", "K", 1, tokenizer, "vicuna_v1")
    assert ids.count(IMAGE_TOKEN_INDEX) == 1 and len(ids) == len(labels)
    scored = [t for t in labels if t != IGNORE_INDEX]
    assert tokenizer.convert_ids_to_tokens(scored) == ["▁K", "</s>"]  # the answer as the model writes it
    assert ids[: len(ids) - 2] == tokenizer_image_token(
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <image>\nWhat is on the sign? ASSISTANT:",
        tokenizer)
    image = Image.new("RGB", (8, 8))
    request = ("What is on the sign?", " K", lambda doc: [image], 0, "t", "test")  # lmms-eval's " " delimiter
    req = read_scoring(request, lambda task, split, doc_id: {}, tokenizer, "vicuna_v1")
    assert (list(req.input_ids), list(req.labels), list(req.images)) == (ids, labels, [image])
    assert user_turn("Q", 2) == "<image> <image>\nQ" and user_turn("<image> Q", 1) == "<image> Q"


class _Request:  # lmms-eval's Instance, as the model reads it
    def __init__(self, *args):
        self.args = args


def test_generate_until_answers_in_order_traces_each_and_isolates_a_bad_request(tmp_path):
    from dualfocus.engine.fast import FastEngine
    from dualfocus.focus.pipeline import DualFocus
    from dualfocus.integrations.lmms_eval.generate import generate_until
    from dualfocus.mm_utils import load_image
    from dualfocus.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(str(ZOOM_CKPT), None, None, device="cpu")
    engine = FastEngine(model, tokenizer, processor)
    docs = zoom_rows("vqa", 1) + [{"text": "no picture"}] + zoom_rows("seed", 1)
    visual = lambda doc: [load_image(str(ZOOM / doc["image"]))] if "image" in doc else []  # noqa: E731
    kwargs = {"max_new_tokens": 32, "until": ["\n\n"]}
    requests = [_Request(doc["text"], dict(kwargs), visual, i, "zoom", "test") for i, doc in enumerate(docs)]
    writer = TraceWriter(str(tmp_path / "trace.jsonl"))
    base = FocusConfig(max_new_tokens=32, box_max_new_tokens=32)
    answers = generate_until(requests, lambda task, split, i: docs[i], engine, base, 2, writer)

    expected = []
    for doc, name in ((docs[0], "vqa"), (docs[2], "seed")):
        bench = get_benchmark(name)
        [result] = DualFocus(engine, bench.protocol, base).run([(bench.to_query(doc), visual(doc)[0])])
        expected.append(result.text)
    assert answers == [expected[0], "", expected[1]]
    traces = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert [t["doc_id"] for t in traces] == [0, 1, 2]
    assert [t["protocol"] for t in traces] == ["vqa", "vqa", "seed"]
    assert "doc_to_visual gave no image" in traces[1]["error"] and "metadata" not in traces[1]
    assert traces[2]["metadata"]["box"] is not None and traces[2]["metadata"]["choice"]


def test_trace_file_is_replaced_per_run_and_named_per_rank(tmp_path):
    path = tmp_path / "out" / "trace.jsonl"
    path.parent.mkdir()
    path.write_text("stale\n")
    writer = TraceWriter(str(path))
    writer.write([{"doc_id": 0}])
    writer.write([{"doc_id": 1}])
    assert [json.loads(x)["doc_id"] for x in path.read_text().splitlines()] == [0, 1]
    assert rank_path("o/t.jsonl", 0, 1) == "o/t.jsonl" and rank_path("o/t.jsonl", 3, 4) == "o/t.rank3.jsonl"


def test_importing_the_plugin_package_is_cheap():
    code = "import sys, dualfocus.integrations.lmms_eval; print(sorted(m for m in ('torch', 'lmms_eval', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


# --- the real lmms-eval -------------------------------------------------------------------------------
def _env(name: str) -> str:
    return required_env(name, "lmms_env.sh")


def side(code: str) -> str:
    """Run `code` in the lmms-eval environment; its stdout."""
    run = subprocess.run([_env("DUALFOCUS_LMMS_PYTHON"), "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=side_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def side_env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **extra}
    return env


@pytest.mark.lmms
def test_side_environment_keeps_a_cpu_torch_and_no_cuda_package():
    out = json.loads(side(
        "import json, importlib.metadata as md, torch, filelock, filelock._api;"
        "names = sorted(d.metadata['Name'].lower() for d in md.distributions());"
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'filelock': filelock.__version__,"
        "'lmms': md.version('lmms_eval'), 'names': names}))"))
    assert out["torch"].endswith("+cpu") and out["cuda"] is None
    assert not [n for n in out["names"] if n.startswith(("nvidia", "cuda-", "triton")) or n == "torchvision"]
    assert int(out["filelock"].split(".")[0]) < 4  # lmms-eval's evaluator imports filelock._api (gone in 4)
    assert out["lmms"].startswith("0.7.")


@pytest.mark.lmms
def test_the_lmms_eval_behaviours_we_work_around_are_still_there():
    """If one of these fails, lmms-eval changed: the pin or the workaround named can go."""
    out = json.loads(side(
        "import json, inspect, lmms_eval.evaluator as ev;"
        "from lmms_eval.api.instance import GenerationResult, unwrap_generation_output as un;"
        "print(json.dumps({'filelock_api': 'import filelock._api' in inspect.getsource(ev),"
        "'pair': repr(un((-1.5, False))[0]), 'wrapped': repr(un(GenerationResult(text=(-1.5, False)))[0])}))"))
    assert out["filelock_api"]  # hence filelock<4 in the `lmms` extra
    assert out["pair"] == "'(-1.5, False)'"  # a bare (logprob, is_greedy) pair becomes a string...
    assert out["wrapped"] == "(-1.5, False)"  # ...so the model wraps it (DualFocusLMMs.loglikelihood)


@pytest.mark.lmms
def test_entry_point_resolves_the_model_without_loading_one():
    out = side(
        "import sys; from lmms_eval.models import get_model; cls = get_model('dualfocus');"
        "print(cls.__module__, cls.__name__, 'dualfocus.model.builder' in sys.modules)")
    assert out.split() == ["dualfocus.integrations.lmms_eval.model", "DualFocusLMMs", "False"]
    run = subprocess.run([_env("DUALFOCUS_LMMS_PYTHON"), "-X", "importtime", "-m", "lmms_eval", "eval", "--help"],
                         capture_output=True, text=True, env=side_env(), timeout=120)
    assert run.returncode == 0 and "--model_args" in run.stdout
    assert "dualfocus.model" not in run.stderr and "dualfocus.engine" not in run.stderr  # importtime's lines


@pytest.mark.lmms
def test_lmms_eval_builtin_task_prompts_are_read_as_their_question_type():
    """The contexts lmms-eval's own tasks build (their doc_to_text, on made-up documents)."""
    contexts = json.loads(side(
        "import json\n"
        "from lmms_eval.tasks.hrbench.utils import hrbench_doc_to_text as hr\n"
        "from lmms_eval.tasks.vstar_bench.utils import vstar_doc_to_text as vstar\n"
        "from lmms_eval.tasks.mme_realworld.utils import mme_realworld_doc_to_text as mme\n"
        "from lmms_eval.tasks.textvqa.utils import textvqa_doc_to_text as tvqa\n"
        "post = {'pre_prompt': '', 'post_prompt': '\\nAnswer with the option letter.'}\n"
        "print(json.dumps([hr({'question': 'Sign?', 'A': '7', 'B': 'K', 'C': '4', 'D': 'Z'}),"
        "vstar({'text': 'Sign? (A) 7 (B) K (C) 4 (D) Z'}, post),"
        "mme({'question': 'Sign?', 'multi-choice options': ['(A) 7', '(B) K', '(C) 4', '(D) Z', '(E) 5']}),"
        "tvqa({'question': 'what does the sign say?', 'ocr_tokens': ['STOP']},"
        "{'pre_prompt': '', 'post_prompt': '\\nAnswer the question using a single word or phrase.', 'ocr': True})]))"))
    for context, options in zip(contexts[:3], (4, 4, 5)):
        query, protocol = context_query(context, 0)
        assert protocol.multiple_choice and query.option_texts[:4] == ("7", "K", "4", "Z") and len(query.options) == options
        assert query.question.startswith("Sign?")
        assert protocol.parse_answer("(B)", query) == "B" and protocol.parse_answer("K", query) == "B"
    query, protocol = context_query(contexts[3], 0)
    assert not protocol.multiple_choice and query.question == "What does the sign say?\nReference OCR token: STOP"


def _include(tmp: Path, name: str, task: str, data: str | None = None) -> None:
    """A task config that includes a shipped one, renamed and (optionally) pointed at other data."""
    lines = [f"include: {TASKS / name}.yaml", f"task: {task}"]
    if data is not None:
        lines += ["dataset_kwargs:", "  data_files:", f"    test: {data}"]
        if data.endswith(".tsv"):
            lines += ['  sep: "\\t"']
    (tmp / f"{task}.yaml").write_text("\n".join(lines) + "\n")


DEMO_FILES = {  # benchmark -> (question file, annotation file) of the demo fixtures, official formats
    "seed": ("seed_bench/llava-seed-bench.jsonl", "seed_bench/SEED-Bench.json"),
    "mmbench": ("mmbench/mmbench_demo.tsv", None),
    "gqa": ("gqa/llava_gqa_testdev_balanced_mcq.jsonl", "gqa/testdev_balanced_questions.json"),
    "textvqa": ("textvqa/llava_textvqa_val_v051_ocr.jsonl", "textvqa/TextVQA_0.5.1_val.json"),
}


@pytest.fixture(scope="module")
def lmms_run(tmp_path_factory):
    """One `lmms-eval --model dualfocus` run over the zoom tasks and the four benchmarks' demo files."""
    _env("DUALFOCUS_LMMS_PYTHON")
    tmp = tmp_path_factory.mktemp("lmms")
    tasks_dir, out = tmp / "tasks", tmp / "out"
    tasks_dir.mkdir()
    for fmt in ("vqa", "seed", "ppl"):
        _include(tasks_dir, f"dualfocus_zoom_{fmt}", f"zoom_{fmt}")
    env = {}
    for name, (questions, gold_file) in DEMO_FILES.items():
        _include(tasks_dir, f"dualfocus_{name}", f"demo_{name}", str(DEMO / questions))
        env[f"DUALFOCUS_{name.upper()}_IMAGES"] = str(DEMO)
        if gold_file:
            env[f"DUALFOCUS_{name.upper()}_ANNOTATIONS"] = str(DEMO / gold_file)
    tasks = [f"zoom_{f}" for f in ("vqa", "seed", "ppl")] + [f"demo_{n}" for n in DEMO_FILES]
    cli = os.path.join(os.path.dirname(_env("DUALFOCUS_LMMS_PYTHON")), "lmms-eval")
    cmd = [cli, "--model", "dualfocus", "--model_args",
           f"pretrained={ZOOM_CKPT},device=cpu,batch_size=16,trace_file={out}/trace.jsonl",
           "--tasks", ",".join(tasks), "--include_path", str(tasks_dir), "--limit", str(N_ZOOM),
           "--output_path", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=side_env(**env), timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    [results] = glob.glob(str(out / "*" / "*_results.json"))
    with open(results, encoding="utf-8") as f:
        scores = {task: r for task, r in json.load(f)["results"].items()}
    with open(out / "trace.jsonl", encoding="utf-8") as f:
        traces = [json.loads(line) for line in f]
    return scores, traces


def runner_answers(tmp_path, name: str, question_file: Path, image_folder: Path, annotations=None, **kw):
    """Our runner on the same questions: (its summary, its answer records in file order)."""
    from dualfocus.eval.runner import read_answer_file, run_eval

    answers = tmp_path / f"{name}.jsonl"
    summary = run_eval(name, str(ZOOM_CKPT), str(question_file), str(answers), image_folder=str(image_folder),
                       device="cpu", batch_size=16, progress=False,
                       annotation_file=str(annotations) if annotations else None, **kw)
    return summary, read_answer_file(str(answers))


def _task_traces(traces, task):
    rows = sorted((t for t in traces if t["task"] == task), key=lambda t: t["doc_id"])
    return rows


@pytest.mark.lmms
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["vqa", "seed"])  # the zoom files' formats are also our adapters' names
def test_zoom_bench_through_lmms_eval_scores_what_our_runner_scores(lmms_run, tmp_path, fmt):
    scores, traces = lmms_run
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in zoom_rows(fmt)))
    summary, records = runner_answers(tmp_path, fmt, questions, ZOOM, max_new_tokens=32)
    mine = _task_traces(traces, f"zoom_{fmt}")
    assert [t["doc_id"] for t in mine] == list(range(N_ZOOM))  # one trace per question
    assert [t["text"] for t in mine] == [r["text"] for r in records]
    assert [t["metadata"]["box"] for t in mine] == [r["metadata"]["box"] for r in records]
    assert [t["metadata"]["choice"] for t in mine] == [r["metadata"]["choice"] for r in records]
    assert scores[f"zoom_{fmt}"]["accuracy,none"] == pytest.approx(summary["accuracy"]["final"], abs=0.01)
    assert summary["accuracy"]["final"] > 0  # the shipped model reads some glyphs: a real comparison


@pytest.mark.lmms
@pytest.mark.slow
@pytest.mark.parametrize("name", list(DEMO_FILES))
def test_official_format_task_configs_answer_and_score_as_our_runner(lmms_run, tmp_path, name):
    scores, traces = lmms_run
    questions, gold_file = DEMO_FILES[name]
    summary, records = runner_answers(tmp_path, name, DEMO / questions, DEMO,
                                      DEMO / gold_file if gold_file else None, max_new_tokens=128)
    mine = _task_traces(traces, f"demo_{name}")
    assert [t["protocol"] for t in mine] == [name] * len(records)
    assert [t["text"] for t in mine] == [r["text"] for r in records]
    assert [t["metadata"]["answer"] for t in mine] == [r["metadata"]["answer"] for r in records]
    assert scores[f"demo_{name}"]["accuracy,none"] == pytest.approx(summary["accuracy"]["final"], abs=0.01)


@pytest.mark.lmms
@pytest.mark.slow
def test_multiple_choice_by_perplexity_runs_on_the_engine_scoring(lmms_run):
    """lmms-eval's `multiple_choice` task: its accuracy is the argmax of our engine's log-probs."""
    from dualfocus.engine.base import ScoringRequest
    from dualfocus.engine.reference import ReferenceEngine
    from dualfocus.mm_utils import load_image
    from dualfocus.model.builder import load_pretrained_model

    scores, _ = lmms_run
    tokenizer, model, processor, _ = load_pretrained_model(str(ZOOM_CKPT), None, None, device="cpu")
    engine = ReferenceEngine(model, tokenizer, processor)
    right = 0
    for row in zoom_rows("seed"):
        options = get_benchmark("seed").to_query(row).option_texts
        image = load_image(str(ZOOM / row["image"]))
        reqs = [ScoringRequest(*scoring_ids(row["text"].split("\n")[0], o, 1, tokenizer, "vicuna_v1"), [image])
                for o in options]
        lps = [-s.loss * s.n_tokens for s in engine.loglikelihood(reqs)]
        right += lps.index(max(lps)) == "ABCD".index(row["answer"])
    assert scores["zoom_ppl"]["acc,none"] == pytest.approx(right / N_ZOOM, abs=1e-6)
