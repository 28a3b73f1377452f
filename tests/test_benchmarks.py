"""Every benchmark script under workflow/benchmarks/ imports and documents its command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted((ROOT / "workflow" / "benchmarks").glob("*.py"))


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
    script = ROOT / "workflow" / "benchmarks" / "wall_time_split.py"
    out = subprocess.run(
        [sys.executable, str(script), "--run", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    # evaluate: 100 s = 10 s imports + 20 s engine + 68 s compute + 2 s teardown
    assert "| evaluate | 1 | 10 s | 20 s | 68 s | 2 s | 100 s |" in out.stdout
    assert "lost to the kill (unfinished jobs, rerun after resuming): 0 min 30.0 s" in out.stdout
    # wall 18:00:00 -> 18:02:13 (the killed job's last line): 133 s, of which 100 s in the job, 30 s lost
    assert "Snakemake overhead (wall outside every job): 0 min  3.0 s" in out.stdout
