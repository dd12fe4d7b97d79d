"""The runner without a model: sharding, device choice, resume, error records, batching, summary.

A scripted pipeline stands in for DualFocus (same `run` and `config`), so every path is exact and
fast; tests/test_eval_cli.py runs the same runner on a tiny real checkpoint.
"""

import json
import shutil
from pathlib import Path

import pytest

from dualfocus.benchmarks import get_benchmark, score_answer
from dualfocus.eval import merge
from dualfocus.eval.runner import (
    AnswerWriter,
    ModelLoadError,
    TooManyErrors,
    format_summary,
    get_chunk,
    read_answer_file,
    repair_last_line,
    resolve_shard,
    run_benchmark,
    split_list,
)
from dualfocus.eval.shards import task_device
from dualfocus.files import DiskFullError, FileBusyError
from dualfocus.focus.pipeline import FocusConfig, FocusResult

DEMO = Path(__file__).resolve().parent.parent / "playground" / "demo"
SEED_Q = DEMO / "seed_bench" / "llava-seed-bench.jsonl"
MMBENCH_Q = DEMO / "mmbench" / "mmbench_demo.tsv"
TEXTVQA_Q = DEMO / "textvqa" / "llava_textvqa_val_v051_ocr.jsonl"


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so the runner does not turn it into an error record."""


class ScriptedPipeline:
    """DualFocus's interface with scripted answers: question_id -> (macro, micro or None, final)."""

    def __init__(self, script=None, default=("A", None, "A"), fail_on=(), kill_after=None):
        self.config = FocusConfig()
        self.script, self.default, self.fail_on = script or {}, default, set(fail_on)
        self.kill_after, self.answered, self.calls = kill_after, 0, []

    def run(self, items):
        self.calls.append([q.question_id for q, _ in items])
        if any(str(q.question_id) in self.fail_on for q, _ in items):
            raise RuntimeError("engine blew up")
        results = []
        for q, image in items:
            assert image.mode == "RGB"
            if self.kill_after is not None and self.answered >= self.kill_after:
                raise Killed()
            macro, micro, final = self.script.get(str(q.question_id), self.default)
            results.append(FocusResult(q.question_id, text=final, answer=final, macro_raw=macro, macro_answer=macro,
                                       micro_answer=micro, fallback=None if micro else "no_box",
                                       choice="agree" if micro else "no_micro: no_box"))
            self.answered += 1
        return results


def seed_rows(n=None):
    bench = get_benchmark("seed")
    rows = bench.read_questions(str(SEED_Q))
    return bench, rows if n is None else rows[:n]


# -- sharding and device ----------------------------------------------------------------------------
def test_split_list_is_llavas_contiguous_chunking():
    assert split_list(list(range(10)), 3) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [get_chunk(list(range(10)), 3, k) for k in range(3)] == split_list(list(range(10)), 3)
    assert get_chunk(list(range(3)), 8, 2) == [2]
    assert get_chunk(list(range(3)), 8, 7) == []  # LLaVA: IndexError
    assert get_chunk([], 4, 0) == []
    with pytest.raises(ValueError):
        get_chunk([1], 2, 2)


def test_resolve_shard_precedence():
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    assert resolve_shard(2, 1, env) == (2, 1)  # arguments first
    assert resolve_shard(env=env) == (4, 3)  # then Slurm
    assert resolve_shard(env={"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}) == (8, 5)  # then torchrun's RANK
    assert resolve_shard(env={"LOCAL_RANK": "1", "WORLD_SIZE": "2"}) == (2, 1)
    assert resolve_shard(env={}) == (1, 0)
    assert resolve_shard(env={"SLURM_PROCID": "0"}) == (1, 0)  # a rank without a size is not a shard
    with pytest.raises(ValueError, match="both"):
        resolve_shard(4, None, {})
    with pytest.raises(ValueError, match="does not exist"):
        resolve_shard(env={"SLURM_PROCID": "4", "SLURM_NTASKS": "4"})


def test_task_device_follows_the_local_rank(monkeypatch):
    import torch

    assert task_device("cuda:3", {}) == "cuda:3"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert task_device(None, {"SLURM_LOCALID": "1"}) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert task_device(None, {"SLURM_LOCALID": "3", "LOCAL_RANK": "0"}) == "cuda:1"
    assert task_device(None, {"LOCAL_RANK": "1"}) == "cuda:1"
    assert task_device(None, {}) == "cuda"


# -- the answer file --------------------------------------------------------------------------------
def test_repair_cuts_a_half_written_last_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"question_id": 1}\n{"question_id": 2, "te')
    assert repair_last_line(str(path)) == len('{"question_id": 2, "te')
    assert path.read_text() == '{"question_id": 1}\n'
    assert repair_last_line(str(path)) == 0
    path.write_text('{"question_id": 1')  # no complete line at all
    repair_last_line(str(path))
    assert path.read_text() == ""


def test_a_corrupt_line_in_the_middle_is_an_error_not_a_silent_skip(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"question_id": 1}\nnot json\n{"question_id": 2}\n')
    with pytest.raises(ValueError, match=":2: corrupt"):
        AnswerWriter(str(path))


# -- the loop ---------------------------------------------------------------------------------------
def test_records_have_llavas_fields_and_the_trace(tmp_path):
    bench, rows = seed_rows()
    out = tmp_path / "answers" / "a.jsonl"
    summary = run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(DEMO), model_id="ckpt",
                            progress=False)
    records = read_answer_file(str(out))
    assert [r["question_id"] for r in records] == [r["question_id"] for r in rows]
    for record, row in zip(records, rows):
        assert set(record) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
        assert record["prompt"] == row["text"] and record["model_id"] == "ckpt" and record["text"] == "A"
        assert record["metadata"]["macro_answer"] == "A" and record["metadata"]["choice"] == "no_micro: no_box"
    assert summary["answered"] == summary["questions"] == len(rows) and summary["errors"] == 0
    assert summary["fallback_rate"] == 1.0


def test_batches_are_batch_size_questions(tmp_path):
    bench, rows = seed_rows()
    pipe = ScriptedPipeline()
    run_benchmark(pipe, bench, rows, str(tmp_path / "a.jsonl"), image_folder=str(DEMO), batch_size=3, progress=False)
    assert [len(c) for c in pipe.calls] == [3, 1]


def test_killed_run_resumes_without_duplicates(tmp_path):
    bench, rows = seed_rows()
    out = tmp_path / "a.jsonl"
    with pytest.raises(Killed):
        run_benchmark(ScriptedPipeline(kill_after=2), bench, rows, str(out), image_folder=str(DEMO), batch_size=1,
                      progress=False)
    assert len(read_answer_file(str(out))) == 2
    with open(out, "a") as f:  # and the kill landed mid-write
        f.write('{"question_id": "9003", "prompt": "Wh')
    pipe = ScriptedPipeline()
    summary = run_benchmark(pipe, bench, rows, str(out), image_folder=str(DEMO), batch_size=1, progress=False)
    assert [c[0] for c in pipe.calls] == ["9003", "9004"]  # only what was missing
    assert summary["resumed_from"] == 2 and summary["new"] == 2 and summary["repaired_bytes"] > 0
    records = merge.merge_answers([str(out)], merge.read_question_ids(str(SEED_Q)), report=lambda m: None)
    assert len(records) == len(rows)
    # A third run has nothing to do and writes nothing.
    before = out.read_bytes()
    assert run_benchmark(ScriptedPipeline(), bench, rows, str(out), progress=False)["new"] == 0
    assert out.read_bytes() == before


def test_repeated_question_ids_resume_by_count(tmp_path):
    """TextVQA's question id is the image id: two questions share "sign"; resume counts them."""
    bench = get_benchmark("textvqa")
    rows = bench.read_questions(str(TEXTVQA_Q))
    assert [r["question_id"] for r in rows] == ["sign", "sign", "house"]
    out = tmp_path / "a.jsonl"
    with pytest.raises(Killed):
        run_benchmark(ScriptedPipeline(kill_after=1), bench, rows, str(out), image_folder=str(DEMO), batch_size=1,
                      progress=False)
    run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(DEMO), progress=False)
    prompts = [r["prompt"] for r in read_answer_file(str(out))]
    assert prompts == [r["text"] for r in rows]  # each question once, in order


def _bad_inputs(tmp_path):
    """The SEED demo file plus a missing image, a corrupt image and an unreadable row."""
    images = tmp_path / "images"
    shutil.copytree(DEMO / "images", images)
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    rows = [json.loads(line) for line in SEED_Q.read_text().splitlines()]
    text = rows[0]["text"]
    rows += [
        {"question_id": "m1", "image": "images/missing.png", "text": text},
        {"question_id": "c1", "image": "images/corrupt.png", "text": text},
        {"question_id": "b1", "image": "images/shapes.png", "text": "What?\nA. one\nC. three"},  # letters skip B
        {"question_id": "n1", "text": text},  # no image at all
    ]
    question_file = tmp_path / "q.jsonl"
    question_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return question_file, rows


def test_bad_images_and_rows_become_error_records(tmp_path):
    question_file, rows = _bad_inputs(tmp_path)
    bench = get_benchmark("seed")
    out = tmp_path / "a.jsonl"
    summary = run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(tmp_path), batch_size=16,
                            progress=False)
    records = {r["question_id"]: r for r in read_answer_file(str(out))}
    assert "missing.png: file not found" in records["m1"]["error"]
    assert "corrupt.png" in records["c1"]["error"] and records["c1"]["error"].startswith("image:")
    assert records["b1"]["error"].startswith("bad record:") and "option line" in records["b1"]["error"]
    assert "no image" in records["n1"]["error"]
    for qid in ("m1", "c1", "b1", "n1"):
        assert records[qid]["text"] == "" and records[qid]["prompt"]
        assert records[qid]["metadata"]["error"] == records[qid]["error"]
    assert summary["errors"] == 4 and summary["answered"] == len(rows)
    merge.merge_answers([str(out)], merge.read_question_ids(str(question_file)), report=lambda m: None)


def test_a_failing_batch_is_retried_one_by_one(tmp_path):
    bench, rows = seed_rows()
    pipe = ScriptedPipeline(fail_on={"9002"})
    summary = run_benchmark(pipe, bench, rows, str(tmp_path / "a.jsonl"), image_folder=str(DEMO), batch_size=4,
                            progress=False)
    records = read_answer_file(str(tmp_path / "a.jsonl"))
    assert [bool(r.get("error")) for r in records] == [False, True, False, False]
    assert records[1]["error"] == "pipeline: RuntimeError: engine blew up"
    assert pipe.calls[0] == ["9001", "9002", "9003", "9004"] and len(pipe.calls) == 5
    assert summary["errors"] == 1


def test_more_shards_than_questions_writes_an_empty_file(tmp_path):
    bench, rows = seed_rows()
    out = tmp_path / "8_7.jsonl"
    summary = run_benchmark(ScriptedPipeline(), bench, get_chunk(rows, 8, 7), str(out), progress=False)
    assert out.exists() and out.read_text() == ""
    assert summary["questions"] == 0 and summary["accuracy"] is None


# -- MMBench --------------------------------------------------------------------------------------
def test_mmbench_all_rounds_are_keyed_by_index_and_round(tmp_path):
    bench = get_benchmark("mmbench", all_rounds=True)
    rows = bench.expand(bench.read_questions(str(MMBENCH_Q)))
    assert [(r["index"], r["round_id"]) for r in rows] == [(0, k) for k in range(4)] + [(1, k) for k in range(3)] + \
        [(2, k) for k in range(4)]
    out = tmp_path / "a.jsonl"
    with pytest.raises(Killed):
        run_benchmark(ScriptedPipeline(kill_after=5), bench, rows, str(out), batch_size=2, progress=False)
    summary = run_benchmark(ScriptedPipeline(), bench, rows, str(out), batch_size=2, progress=False)
    records = read_answer_file(str(out))
    assert [(r["question_id"], r["round_id"]) for r in records] == [(r["index"], r["round_id"]) for r in rows]
    assert records[1]["options"] == ["blue", "green", "yellow", "red"] and records[1]["option_char"] == list("BCDA")
    assert records[4]["options"] == ["square", "circle", "triangle"]
    # The trace's answer stays; the TSV's gold answer is kept as record_answer.
    assert records[0]["metadata"]["answer"] == "A" and records[0]["metadata"]["record_answer"] == "A"
    assert records[1]["metadata"]["record_answer"] == "D"  # red moved to D in round 1
    merge.merge_answers([str(out)], merge.read_question_ids(str(MMBENCH_Q)), report=lambda m: None)
    assert summary["with_gold"] == len(rows)


# -- the summary ------------------------------------------------------------------------------------
def test_summary_accuracies_come_from_the_trace(tmp_path):
    bench, rows = seed_rows()  # gold: 9001 A, 9002 B, 9003 C, 9004 D (from SEED-Bench.json)
    annotations = bench.load_annotations(str(DEMO / "seed_bench" / "SEED-Bench.json"))
    script = {
        "9001": ("A", "B", "A"),  # macro right, micro wrong, final right
        "9002": ("A", "B", "B"),  # micro right, final right
        "9003": ("C", None, "C"),  # no micro pass: micro-only falls back to macro
        "9004": ("A", "B", "A"),  # all wrong
    }
    summary = run_benchmark(ScriptedPipeline(script), bench, rows, str(tmp_path / "a.jsonl"), image_folder=str(DEMO),
                            progress=False, annotations=annotations)
    assert summary["with_gold"] == 4
    assert summary["accuracy"] == {"macro": 50.0, "micro": 50.0, "final": 75.0, "oracle": 75.0}
    assert summary["fallbacks"] == 1 and summary["fallback_rate"] == 0.25


def test_score_answer():
    assert score_answer("B", "B") == 1.0 and score_answer("b", "B") == 0.0 and score_answer(None, "B") == 0.0
    assert score_answer("Sun", ["sun"] * 7 + ["the sun"] * 3) == 1.0
    assert score_answer("the sun.", ["sun"]) == 1.0  # VQA normalisation, fewer than 10 answers: exact match
    assert score_answer("moon", ["sun", "star"]) == 0.0


def test_a_failed_step_with_an_answer_is_counted_not_an_error_record(tmp_path):
    class ScoringFails(ScriptedPipeline):
        def run(self, items):
            results = super().run(items)
            results[0].error = "scoring: cannot mask the candidate"
            return results

    bench, rows = seed_rows()
    summary = run_benchmark(ScoringFails(), bench, rows, str(tmp_path / "a.jsonl"), image_folder=str(DEMO),
                            progress=False)
    first = read_answer_file(str(tmp_path / "a.jsonl"))[0]
    assert "error" not in first and first["metadata"]["error"].startswith("scoring:") and first["text"] == "A"
    assert summary["errors"] == 0 and summary["step_errors"] == 1


def test_a_run_where_everything_fails_stops_and_keeps_its_answers(tmp_path):
    """A wrong image folder fails every question: after max_consecutive_errors in a row the run stops
    (the error says why and where the answers are); good answers before stay, a rerun resumes."""
    bench = get_benchmark("seed")
    rows = [json.loads(line) for line in SEED_Q.read_text().splitlines()]
    out = tmp_path / "a.jsonl"
    with pytest.raises(TooManyErrors, match=r"2 questions in a row failed, the last with: image: .*fix the cause, "
                       r"then rerun the same command \(answered questions are skipped, failed ones asked again\)"):
        run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(tmp_path / "nowhere"),
                      batch_size=1, progress=False, max_consecutive_errors=2)
    assert len(read_answer_file(str(out))) == 2
    with pytest.raises(TooManyErrors, match=r"rerun the same command without --skip-failed \(it would keep"):
        run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(tmp_path / "nowhere"),
                      batch_size=1, progress=False, max_consecutive_errors=2, skip_failed=True)
    summary = run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(tmp_path / "nowhere"),
                            batch_size=1, progress=False, max_consecutive_errors=0)
    assert summary["errors"] == len(rows)  # 0: never stops


def test_fewer_failures_in_a_row_than_the_limit_do_not_stop_the_run(tmp_path):
    """The four bad inputs come last, one after another: 4 < 5, the run finishes."""
    question_file, rows = _bad_inputs(tmp_path)
    summary = run_benchmark(ScriptedPipeline(), get_benchmark("seed"), rows, str(tmp_path / "a.jsonl"),
                            image_folder=str(tmp_path), batch_size=1, progress=False, max_consecutive_errors=5)
    assert summary["errors"] == 4


# -- resume retries what failed (issue 14, item 1) --------------------------------------------------
def test_error_records_are_asked_again_on_resume_and_counted_once(tmp_path):
    """A typo in the image folder fails every question; the rerun with the fix answers them all:
    the score is a clean run's, the error lines are gone, the summary says how many were retried."""
    bench, rows = seed_rows()
    out = tmp_path / "a.jsonl"
    first = run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(tmp_path / "typo"),
                          progress=False, max_consecutive_errors=0)
    assert first["errors"] == 4 and first["retried"] == 0
    pipe = ScriptedPipeline()
    summary = run_benchmark(pipe, bench, rows, str(out), image_folder=str(DEMO), progress=False)
    assert [c for call in pipe.calls for c in call] == ["9001", "9002", "9003", "9004"]
    assert summary["retried"] == 4 and summary["errors"] == 0 and summary["answered"] == 4
    assert "4 question(s) asked again after an error" in format_summary(summary)
    records = read_answer_file(str(out))
    assert len(records) == 4 and not any(r.get("error") for r in records)
    merge.merge_answers([str(out)], merge.read_question_ids(str(SEED_Q)), report=lambda m: None)


def test_skip_failed_keeps_error_records_as_answers(tmp_path):
    bench, rows = seed_rows()
    out = tmp_path / "a.jsonl"
    run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(tmp_path / "typo"), progress=False,
                  max_consecutive_errors=0)
    before = out.read_bytes()
    pipe = ScriptedPipeline()
    summary = run_benchmark(pipe, bench, rows, str(out), image_folder=str(DEMO), progress=False, skip_failed=True)
    assert pipe.calls == [] and summary["errors"] == 4 and summary["retried"] == 0 and out.read_bytes() == before


def test_a_retried_question_with_a_shared_id_gets_its_own_answer(tmp_path):
    """TextVQA: two questions share the id "sign"; the first failed. The retry is appended after the
    others, and still answers the first question, not the second a second time."""
    bench = get_benchmark("textvqa")
    rows = bench.read_questions(str(TEXTVQA_Q))

    class FailsFirst(ScriptedPipeline):
        def run(self, items):
            if any(q.prompt == rows[0]["text"] for q, _ in items):
                raise RuntimeError("engine blew up")
            return super().run(items)

    out = tmp_path / "a.jsonl"
    run_benchmark(FailsFirst(), bench, rows, str(out), image_folder=str(DEMO), batch_size=1, progress=False)
    pipe = ScriptedPipeline()
    summary = run_benchmark(pipe, bench, rows, str(out), image_folder=str(DEMO), progress=False)
    assert pipe.calls == [["sign"]] and summary["retried"] == 1 and summary["errors"] == 0
    prompts = [r["prompt"] for r in read_answer_file(str(out))]
    assert sorted(prompts) == sorted(r["text"] for r in rows)
    assert run_benchmark(ScriptedPipeline(), bench, rows, str(out), progress=False)["new"] == 0


def test_killed_while_retrying_loses_and_duplicates_nothing(tmp_path):
    bench, rows = seed_rows()
    out = tmp_path / "a.jsonl"
    run_benchmark(ScriptedPipeline(fail_on={"9002", "9004"}), bench, rows, str(out), image_folder=str(DEMO),
                  batch_size=1, progress=False)
    kept = {r["question_id"]: r["answer_id"] for r in read_answer_file(str(out)) if not r.get("error")}
    with pytest.raises(Killed):
        run_benchmark(ScriptedPipeline(kill_after=1), bench, rows, str(out), image_folder=str(DEMO), batch_size=1,
                      progress=False)
    summary = run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(DEMO), progress=False)
    assert summary["retried"] == 0 and summary["errors"] == 0  # the kill came after the error lines went
    records = merge.merge_answers([str(out)], merge.read_question_ids(str(SEED_Q)), report=lambda m: None)
    assert len(records) == 4 and {q: kept[q] for q in kept} == {
        r["question_id"]: r["answer_id"] for r in records if r["question_id"] in kept}


# -- a model that cannot load (item 2) ----------------------------------------------------------------
class Unloadable(ScriptedPipeline):
    def __init__(self):
        super().__init__()
        self.loads = 0

    def load(self):
        self.loads += 1
        raise ModelLoadError("cannot load the checkpoint /nowhere")


def test_a_model_that_cannot_load_stops_the_run_before_the_first_question(tmp_path):
    bench, rows = seed_rows()
    pipe, out = Unloadable(), tmp_path / "a.jsonl"
    with pytest.raises(ModelLoadError, match="/nowhere"):
        run_benchmark(pipe, bench, rows, str(out), image_folder=str(DEMO), batch_size=1, progress=False)
    assert pipe.loads == 1 and pipe.calls == [] and out.read_text() == ""


def test_lazy_pipeline_loads_once_and_a_failure_is_fatal(tmp_path, monkeypatch):
    import dualfocus.model.builder as builder
    from dualfocus.eval.config import EvalConfig
    from dualfocus.eval.lazy_model import LazyPipeline

    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("size mismatch for lm_head.weight:\n  copying a param of shape [4, 8]")

    monkeypatch.setattr(builder, "load_pretrained_model", broken)
    pipe = LazyPipeline(get_benchmark("seed").protocol, EvalConfig("/ckpt/x", "q.jsonl", "a.jsonl", device="cpu"))
    bench, rows = seed_rows()
    with pytest.raises(ModelLoadError, match=r"cannot load the checkpoint /ckpt/x: RuntimeError: size mismatch "
                                             r"for lm_head.weight: copying a param of shape \[4, 8\]; check"):
        run_benchmark(pipe, bench, rows, str(tmp_path / "a.jsonl"), image_folder=str(DEMO), batch_size=1,
                      progress=False)
    assert len(calls) == 1


def test_a_finished_chunk_loads_no_model(tmp_path):
    bench, rows = seed_rows()
    out = tmp_path / "a.jsonl"
    run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(DEMO), progress=False)
    pipe = Unloadable()
    assert run_benchmark(pipe, bench, rows, str(out), progress=False)["new"] == 0 and pipe.loads == 0


# -- bad rows (items 4, 5, 6) -----------------------------------------------------------------------
@pytest.mark.parametrize("field, value, expected", [
    ("text", None, "'text' is NoneType None"), ("text", 7, "'text' is int 7"),
    ("image", 5, "'image' is int 5"), ("image", ["a.png", "b.png"], "'image' is list"),
])
def test_a_wrongly_typed_field_is_a_named_error_record(tmp_path, field, value, expected):
    bench, rows = seed_rows()
    rows = [*rows[:1], {**rows[1], "question_id": "bad", field: value}, *rows[2:]]
    summary = run_benchmark(ScriptedPipeline(), bench, rows, str(tmp_path / "a.jsonl"), image_folder=str(DEMO),
                            progress=False)
    records = {r["question_id"]: r for r in read_answer_file(str(tmp_path / "a.jsonl"))}
    assert records["bad"]["error"].startswith("bad record: seed record 'bad': ") and expected in records["bad"]["error"]
    assert summary["errors"] == 1 and summary["answered"] == 4


def test_half_an_emoji_pair_in_a_question_is_written_and_reads_back(tmp_path):
    bench, rows = seed_rows()
    rows[0] = {**rows[0], "text": "Which \ud83d shape?\n" + rows[0]["text"].split("\n", 1)[1]}
    out = tmp_path / "a.jsonl"
    summary = run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(DEMO), progress=False)
    records = read_answer_file(str(out))
    assert summary["answered"] == 4 and records[0]["prompt"] == rows[0]["text"] and "\\ud83d" in out.read_text()
    assert run_benchmark(ScriptedPipeline(), bench, rows, str(out), progress=False)["new"] == 0


def test_a_malformed_question_line_is_an_error_record_and_the_rest_are_answered(tmp_path):
    lines = SEED_Q.read_text().splitlines()
    lines.insert(1, '{"question_id": "broken", "text": "What')  # cut short
    lines.insert(3, "[1, 2]")
    question_file = tmp_path / "q.jsonl"
    question_file.write_text("\n".join(lines) + "\n")
    bench = get_benchmark("seed")
    rows = bench.read_questions(str(question_file))
    out = tmp_path / "a.jsonl"
    summary = run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(DEMO), progress=False)
    records = {r["question_id"]: r for r in read_answer_file(str(out))}
    assert "q.jsonl:2: not a JSON line" in records["broken"]["error"]
    assert "q.jsonl:4: a question is a JSON object, got list" in records["line 4"]["error"]
    assert summary["answered"] == 6 and summary["errors"] == 2
    merge.merge_answers([str(out)], merge.read_question_ids(str(question_file)), report=lambda m: None)


# -- one runner per answer file (item 9) --------------------------------------------------------------
def test_a_second_runner_on_the_same_answer_file_is_refused_naming_the_holder(tmp_path):
    import os
    import socket

    bench, rows = seed_rows()
    out = tmp_path / "a.jsonl"
    with AnswerWriter(str(out)):
        with pytest.raises(FileBusyError, match=rf"a.jsonl is being written by pid {os.getpid()} on "
                                                rf"{socket.gethostname()}"):
            run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(DEMO), progress=False)
    assert out.read_text() == ""
    assert run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(DEMO), progress=False)["new"] == 4


# -- a full disk (item 10) ------------------------------------------------------------------------------
def test_a_full_disk_stops_the_run_with_one_message(tmp_path, monkeypatch):
    """The second answer line hits ENOSPC: one DiskFullError naming the file; the first line stays."""
    import errno

    from dualfocus.eval import answers

    class FillsUp:
        def __init__(self, f):
            self.f, self.lines = f, 0

        def write(self, text):
            if self.lines:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.lines += 1
            return self.f.write(text)

        def __getattr__(self, name):
            return getattr(self.f, name)

    def fake_open(path, mode="r", **kwargs):
        f = open(path, mode, **kwargs)
        return FillsUp(f) if mode == "a" else f

    monkeypatch.setattr(answers, "open", fake_open, raising=False)
    bench, rows = seed_rows()
    out = tmp_path / "a.jsonl"
    with pytest.raises(DiskFullError, match=r"no space left on the device writing .*a.jsonl .*free some space"):
        run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(DEMO), batch_size=1,
                      progress=False)
    assert len(read_answer_file(str(out))) == 1


def test_a_rewritten_answer_file_and_its_lock_follow_the_umask(tmp_path):
    """Item 13: the retry rewrite goes through mkstemp (0600); it must keep the umask's mode."""
    import os

    bench, rows = seed_rows()
    out = tmp_path / "a.jsonl"
    old = os.umask(0o022)
    try:
        run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(tmp_path), progress=False,
                      max_consecutive_errors=0)
        run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(DEMO), progress=False)
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"a.jsonl": 0o644, ".a.jsonl.lock": 0o644}


@pytest.mark.parametrize("seed", range(6))
def test_kills_and_failures_across_reruns_end_exactly_once(tmp_path, seed):
    """Reruns that fail some questions and are killed at random points; the last clean rerun leaves
    each question answered once, and an answer finished before a kill is never rewritten."""
    import random

    rng = random.Random(seed)
    bench = get_benchmark("textvqa")  # repeated ids: the hard case for matching retries
    rows = bench.read_questions(str(TEXTVQA_Q)) * 3
    rows = [{**r, "text": f"{r['text']} #{i}"} for i, r in enumerate(rows)]
    out, kept = tmp_path / "a.jsonl", {}
    for _ in range(4):
        pipe = ScriptedPipeline(fail_on=rng.sample(["sign", "house"], rng.randint(0, 1)), kill_after=rng.randint(0, 5))
        try:
            run_benchmark(pipe, bench, rows, str(out), image_folder=str(DEMO), batch_size=rng.randint(1, 3),
                          progress=False)
        except Killed:
            pass
        for r in read_answer_file(str(out)):
            if not r.get("error"):
                assert kept.setdefault(r["prompt"], r["answer_id"]) == r["answer_id"]
    run_benchmark(ScriptedPipeline(), bench, rows, str(out), image_folder=str(DEMO), progress=False)
    records = read_answer_file(str(out))
    assert sorted(r["prompt"] for r in records) == sorted(r["text"] for r in rows)
    assert all(kept.get(r["prompt"], r["answer_id"]) == r["answer_id"] for r in records)


def test_temporary_files_a_killed_rewrite_left_are_removed_and_only_those(tmp_path):
    """A kill during the retry rewrite leaves `.tmp-<answers>-*`; the next writer (holding the lock)
    removes its own file's, never another shard's."""
    out = tmp_path / "2_0.jsonl"
    out.write_text(json.dumps({"question_id": 1, "text": "a"}) + "\n")
    mine = tmp_path / ".tmp-2_0.jsonl-abc123.jsonl"
    other = tmp_path / ".tmp-2_1.jsonl-def456.jsonl"
    mine.write_text("half a rewr")
    other.write_text("another shard's write in progress")
    with AnswerWriter(str(out)) as writer:
        assert [r["question_id"] for r in writer.existing] == [1]
    assert not mine.exists() and other.exists()


# -- one policy for a half-written last line, seen by every reader -----------------------------------
def test_a_half_written_last_line_is_never_a_record_for_the_writer_merge_and_the_reader(tmp_path, capsys):
    """The bytes after the last newline are not a record, even when they parse as JSON (the newline
    was never written): the writer cuts them, merge drops and reports them, the reader fails."""
    from dualfocus.eval.answers import AnswerFileError, read_answers

    whole, tail = json.dumps({"question_id": 1}) + "\n", json.dumps({"question_id": 2})  # valid JSON, no newline
    path = tmp_path / "1_0.jsonl"
    path.write_text(whole + tail)
    shard = read_answers(str(path))
    assert [r["question_id"] for r in shard.records] == [1] and shard.partial == tail and shard.partial_lineno == 2
    with pytest.raises(AnswerFileError, match=r"1_0.jsonl:2: half-written last line"):
        read_answer_file(str(path))
    assert [r["question_id"] for r in merge.read_answers(str(path))] == [1]
    assert "1_0.jsonl:2: dropped a half-written last line" in capsys.readouterr().out
    with pytest.raises(merge.MergeError, match=r"1_0.jsonl:2: half-written last line \(a killed run\)"):
        merge.read_answers(str(path), cut_ok=False)
    with AnswerWriter(str(path)) as writer:
        assert [r["question_id"] for r in writer.existing] == [1] and writer.repaired == len(tail)
    assert path.read_text() == whole


def test_a_corrupt_whole_line_fails_every_reader(tmp_path):
    from dualfocus.eval.answers import AnswerFileError

    path = tmp_path / "a.jsonl"
    path.write_text('{"question_id": 1}\n{"no_id": 2}\n{"question_id": 3}\n')
    with pytest.raises(AnswerFileError, match=r"a.jsonl:2: not an answer record \(no question_id\)"):
        read_answer_file(str(path))
    with pytest.raises(merge.MergeError, match=r"a.jsonl:2: not an answer record"):
        merge.read_answers(str(path))
    with pytest.raises(AnswerFileError, match=r"a.jsonl:2"):
        AnswerWriter(str(path))
