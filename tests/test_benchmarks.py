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
