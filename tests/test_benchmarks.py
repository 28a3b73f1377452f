"""Every benchmark script under perf/ imports and documents its command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted((ROOT / "perf").glob("*.py"))


def test_benchmark_scripts_are_committed():
    assert {p.name for p in SCRIPTS} >= {"generate_traces.py", "precompute_teacher_logprobs.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_benchmark_script_runs_its_help(script):
    out = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


def test_wall_time_split_attributes_each_part_of_a_job(tmp_path):
    (tmp_path / ".snakemake" / "log").mkdir(parents=True)
    (tmp_path / ".snakemake" / "log" / "run.snakemake.log").write_text(
        "  Date: 2026-11-29 18:00:00\n"
        "[Sun Nov 29 18:00:02 2026]\nlocalrule evaluate:\n    log: logs/eval.log\n    jobid: 3\n"
        "[Sun Nov 29 18:01:42 2026]\nFinished jobid: 3 (Rule: evaluate)\n"
        "[Sun Nov 29 18:01:43 2026]\nlocalrule distill_student:\n    log: logs/distill.log\n    jobid: 4\n"
    )
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "eval.log").write_text(
        "2026-11-29 18:00:12,000 INFO pipeline.logs: job started, logging to logs/eval.log\n"
        "2026-11-29 18:00:32,000 INFO pipeline.engines.vllm_engine: vllm engine: m started in 20.0s\n"
        "2026-11-29 18:01:40,000 INFO pipeline.evaluate: done\n"
    )
    (tmp_path / "logs" / "distill.log").write_text(
        "2026-11-29 18:01:50,000 INFO pipeline.logs: job started\n2026-11-29 18:02:13,000 INFO pipeline.training: step 1\n"
    )
    script = ROOT / "perf" / "wall_time_split.py"
    out = subprocess.run(
        [sys.executable, str(script), "--run", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    # evaluate: 100 s = 10 s imports + 20 s engine + 68 s compute + 2 s teardown
    assert "| evaluate | 1 | 10 s | 20 s | 68 s | 2 s | 100 s |" in out.stdout
    assert "lost to the kill (unfinished jobs, rerun after resuming): 0 min 30.0 s" in out.stdout
    # wall 18:00:00 -> 18:02:13 (the killed job's last line): 133 s, of which 100 s in the job, 30 s lost
    assert "Snakemake overhead (wall outside every job): 0 min  3.0 s" in out.stdout


def _distill_student_module():
    import importlib.util

    path = ROOT / "perf" / "distill_student.py"
    spec = importlib.util.spec_from_file_location("bench_distill_student", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_distill_student_against_trl_without_trl_names_the_bench_extra(tmp_path):
    # trl hidden (sys.modules["trl"] = None), whether or not the bench extra is installed
    script = ROOT / "perf" / "distill_student.py"
    code = (
        "import runpy, sys; sys.modules['trl'] = None; "
        f"sys.argv = [{str(script)!r}, '--results', {str(tmp_path)!r}, '--against-trl']; "
        f"runpy.run_path({str(script)!r}, run_name='__main__')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "pip install -e '.[bench]'" in out.stderr


def test_distill_student_trl_rows_carry_the_prompt_the_critique_and_the_answer(tmp_path):
    import polars as pl

    bench = _distill_student_module()
    results = tmp_path / "results" / "seed_0"
    (results / "traces/shared").mkdir(parents=True)
    (results / "contexts/critique").mkdir(parents=True)
    (tmp_path / "results/problems").mkdir(parents=True)
    pl.DataFrame({"trace_id": ["t1"], "problem_id": ["p1"], "user_message": ["Question: 2 + 3?"]}).write_parquet(
        results / "traces/shared/round_0.parquet"
    )
    teacher = "<|im_start|>user\nQuestion: 2 + 3?\n\nStep 1 is wrong.\n\nCorrectly solve it.<|im_end|>\n<|im_start|>assistant\n"
    pl.DataFrame({"trace_id": ["t1"], "context_text": ["Step 1 is wrong."], "teacher_prompt": [teacher]}).write_parquet(
        results / "contexts/critique/round_0.parquet"
    )
    pl.DataFrame({"problem_id": ["p1"], "answer": ["5"]}).write_parquet(tmp_path / "results/problems/train.parquet")
    args = type("Args", (), {"results": results, "kind": "critique", "problems": None})()
    (record,) = bench.trl_records(args, pl.DataFrame({"trace_id": ["t1"]}), 1)
    assert record == {
        "prompt": [{"role": "user", "content": "Question: 2 + 3?"}],
        "privileged_context": "Step 1 is wrong.\n\nCorrectly solve it.",
        "answer": "5",
    }
    completions = [[{"role": "assistant", "content": "<step_1> 2 + 3 = 5 </step_1>\n<answer> 5 </answer>"}]] * 2
    assert bench.answer_reward(None, completions, ["5", "6"]) == [1.0, 0.0]


@pytest.mark.parametrize("trainer", ["sdft", "sdpo"])
def test_distill_student_trl_config_is_the_stage_settings(trainer, tmp_path):
    pytest.importorskip("trl", reason="the bench extra (pip install -e '.[bench]') is not installed")
    bench = _distill_student_module()
    config = bench.trl_config(trainer, str(tmp_path), steps=2, batch=4, micro=2, max_completion_length=128)
    assert (config.bf16, config.gradient_checkpointing, config.use_cpu) == (False, False, True)
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps, config.max_steps) == (2, 2, 2)
    assert config.generation_batch_size == 4  # one generation per optimizer step: no stale rollouts
    assert (config.teacher_model_kind, config.distillation_mode, config.distillation_topk) == (
        "base",
        "topk_logits",
        20,
    )
    assert (config.distillation_alpha, config.distillation_add_tail) == (0.0, True)  # forward KL, tail bucket
    assert config.learning_rate == 1e-5 and config.max_completion_length == 128
