"""The Snakemake layer: lint, config validation before any job, the smoke DAG, and rerun triggers."""

from __future__ import annotations

import re
import shutil
import subprocess

import polars as pl
import pytest
import yaml

from pipeline.artifacts import CONTEXTS_SCHEMA, CRITIQUES_SCHEMA, PROBLEMS_SCHEMA, TRACES_SCHEMA, TRAIN_LOG_SCHEMA
from pipeline.engines.checkpoint import resolve_checkpoint
from pipeline.teacher import teacher_logprobs_schema
from tests.conftest import ROOT, SMOKE_CONFIG, SNAKEMAKE, snakemake


def test_lint_is_clean():
    out = subprocess.run([SNAKEMAKE, "--lint"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_bad_config_fails_before_any_job_naming_the_key(tmp_path):
    config = yaml.safe_load(SMOKE_CONFIG.read_text())
    config["problems"]["n_evl"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    out = snakemake(tmp_path, "--configfile", str(bad), check=False)
    assert out.returncode != 0
    assert "problems.n_evl: unknown key" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


@pytest.mark.slow
def test_smoke_dag_builds_models_and_problems(smoke_run):
    assert (smoke_run / "resources/models/tiny-qwen2/model.safetensors").is_file()
    for split in ("train", "eval"):
        frame = pl.scan_parquet(smoke_run / f"results/problems/{split}.parquet")
        assert frame.collect_schema() == PROBLEMS_SCHEMA
    assert (smoke_run / "logs/prepare_problems/prepare_problems.log").is_file()
    assert (smoke_run / "benchmarks/prepare_model/tiny-qwen2.tsv").is_file()
    assert "Nothing to be done" in snakemake(smoke_run, "--configfile", str(SMOKE_CONFIG), "-n").stdout


@pytest.mark.slow
def test_smoke_dag_writes_every_round_0_artifact_with_its_schema(smoke_run):
    results = smoke_run / "results"
    for condition in ("shared", "grpo"):
        traces = pl.read_parquet(results / f"traces/{condition}/round_0.parquet")
        assert traces.schema == TRACES_SCHEMA and traces.height > 0
        critiques = pl.read_parquet(results / f"critiques/{condition}/round_0.parquet")
        assert critiques.schema == CRITIQUES_SCHEMA
        assert critiques["trace_id"].sort().to_list() == traces["trace_id"].sort().to_list()
    for condition in ("reference", "critique"):
        assert pl.scan_parquet(results / f"contexts/{condition}/round_0.parquet").collect_schema() == CONTEXTS_SCHEMA
        teacher = pl.read_parquet(results / f"teacher_logprobs/{condition}/round_0.parquet")
        assert teacher.schema == teacher_logprobs_schema(20)
        n = teacher["completion_token_ids"].list.len()
        for column in ("topk_ids", "topk_logprobs", "teacher_token_logprobs", "tail_logmass", "student_token_logprobs"):
            assert (teacher[column].list.len() == n).all(), column


@pytest.mark.slow
def test_editing_one_section_reruns_only_that_stage(smoke_run, tmp_path):
    config = yaml.safe_load(SMOKE_CONFIG.read_text())
    config["problems"]["seed"] += 1
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(config))
    plan = snakemake(smoke_run, "--configfile", str(edited), "-n").stdout
    assert "rule prepare_problems:" in plan
    assert "rule prepare_model:" not in plan


def test_quickstart_commands_in_readme_match_ci():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(line.strip() for line in ci.splitlines() if "pytest" in line)
    assert test_command in readme
    assert "./setup.sh" in readme and "./setup.sh" in ci
    assert shutil.which("bash")


@pytest.mark.slow
def test_smoke_dag_trains_two_rounds_of_every_arm(smoke_run):
    results = smoke_run / "results"
    for condition in ("grpo", "reference", "critique"):
        for r in (1, 2):
            model = results / f"students/{condition}/round_{r}"
            base, adapter = resolve_checkpoint(model)
            assert adapter is None and (model / "model.safetensors").is_file()  # the smoke config trains every weight
            assert pl.read_parquet(results / f"train_logs/{condition}/round_{r}.parquet").schema == TRAIN_LOG_SCHEMA
    # round 1's traces of each self-distillation arm come from that arm's own round-1 student
    for condition in ("grpo", "reference", "critique"):
        meta = pl.read_parquet_metadata(results / f"traces/{condition}/round_1.parquet")
        assert "round_1@" in meta["pipeline.model"]


def planned_jobs(plan: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job in a dry-run's output."""
    jobs = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", plan):
        match = re.match(r"(?:local)?rule (\w+):", block)
        if match:
            wildcards = re.search(r"wildcards: (.*)", block)
            jobs.add((match.group(1), wildcards.group(1).strip() if wildcards else ""))
    return jobs


@pytest.mark.slow
def test_editing_distill_reruns_training_but_not_traces_or_teacher(smoke_run, tmp_path):
    config = yaml.safe_load(SMOKE_CONFIG.read_text())
    config["distill"]["optim"]["lr"] = 2e-3
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(smoke_run, "--configfile", str(edited), "-n").stdout)
    rules = {rule for rule, _ in jobs}
    assert "distill_student" in rules and "train_grpo" not in rules
    # round 0's traces, critiques, contexts and teacher log-probs feed the edited stage: kept
    assert not [job for job in jobs if job[1].endswith("round=0")]
    assert not rules & {"prepare_model", "prepare_problems"}
