"""The Snakemake layer: lint, config validation before any job, the smoke DAG, and rerun triggers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import polars as pl
import pytest
import yaml

from pipeline.artifacts import (
    CONTEXTS_SCHEMA,
    CRITIQUES_SCHEMA,
    EVAL_SAMPLES_SCHEMA,
    PROBLEMS_SCHEMA,
    TRACES_SCHEMA,
    TRAIN_LOG_SCHEMA,
    read_metadata,
)
from pipeline.engines.checkpoint import resolve_checkpoint
from pipeline.teacher import teacher_logprobs_schema
from tests.conftest import ROOT, SMOKE_CONFIG, SNAKEMAKE, snakemake


def test_lint_is_clean():
    out = subprocess.run([SNAKEMAKE, "--lint"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_path_layout_is_written_once_in_common_smk():
    """Rules name artifact paths by the templates of workflow/rules/common.smk (TRACES, STUDENT, ...):
    a `results/seed_` path spelled in any other rule file (or the Snakefile) is a second copy of the layout."""
    files = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    spelled = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        if path.name != "common.smk"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "results/seed_" in line
    ]
    assert not spelled, "use the path templates of workflow/rules/common.smk:\n" + "\n".join(spelled)
    assert "TRACES = " in (ROOT / "workflow" / "rules" / "common.smk").read_text()


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
    results = smoke_run / "results/seed_0"
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
        columns = ("topk_ids", "topk_logprobs", "teacher_token_logprobs", "tail_logmass", "student_token_logprobs")
        for column in (*columns, "token_categories"):
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
    results = smoke_run / "results/seed_0"
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


@pytest.mark.slow
def test_variant_arms_share_round_0_teacher_and_override_the_distill_options(smoke_run):
    results = smoke_run / "results/seed_0"
    assert not (results / "teacher_logprobs/critique_first_error/round_0.parquet").exists()  # the critique's is used
    for arm, mask in (("critique_through_error", "through_first_error"), ("critique_first_error", "first_error")):
        params = read_metadata(results / f"train_logs/{arm}/round_1.parquet")["params"]
        assert params["token_mask"] == mask and params["optim"]["lr"] == 1e-3  # overrides merge into distill
        contexts = pl.read_parquet(results / f"contexts/{arm}/round_1.parquet")
        assert contexts["condition"].unique().to_list() == [arm] and contexts["context_kind"].unique().to_list() == [
            "critique"
        ]
    assert read_metadata(results / "train_logs/critique/round_1.parquet")["params"]["token_mask"] == "all"


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
    assert not [job for job in jobs if re.search(r"\bround=0\b", job[1])]
    assert not rules & {"prepare_model", "prepare_problems"}


@pytest.mark.slow
def test_smoke_dag_evaluates_every_checkpoint_and_writes_the_report(smoke_run, tmp_path):
    results = smoke_run / "results/seed_0"
    arms = ("grpo", "reference", "critique", "critique_through_error", "critique_first_error", "critique_skip_correct")
    checkpoints = [("base", 0)] + [(arm, r) for arm in arms for r in (1, 2)]
    for condition, r in checkpoints:
        samples = pl.read_parquet(results / f"eval/{condition}/round_{r}.parquet")
        assert samples.schema == EVAL_SAMPLES_SCHEMA
        assert samples.group_by("problem_id").len()["len"].to_list() == [12] * 4  # 4 eval problems x 12
        summary = json.loads((results / f"eval/{condition}/round_{r}.json").read_text())
        assert summary["avg"]["mean"] == pytest.approx(float(samples["is_correct"].mean()))
        assert [p["k"] for p in summary["pass_at_k"]] == list(range(1, 13))
    premise = json.loads((results / "premise/table.json").read_text())
    layouts = ("inline", "anchor", "anchor_example", "multi_turn")
    expected = [("none", "none")] + [(layout, kind) for layout in layouts for kind in ("reference", "critique")]
    assert [(row["layout"], row["context_kind"]) for row in premise["table"]] == expected
    premise_tokens = pl.read_parquet(results / "premise/advantages.parquet")
    assert (premise_tokens["categories"].list.len() == premise_tokens["advantages"].list.len()).all()
    aggregates = pl.read_parquet(results / "advantages/aggregates.parquet")
    assert set(aggregates["context_kind"]) == {"reference", "critique", "critique_full_quote", "critique_labels_only"}
    page = (smoke_run / "results/report.html").read_text()
    for heading in (
        "Premise",
        "Paired differences",
        "Table 1",
        "Avg@12 per round",
        "Training curves",
        "Per-token advantages",
        "Critic QA",
        "Provenance",
    ):
        assert heading in page, heading
    # paired differences, Avg per round, entropy per checkpoint, training curves, advantage figure
    assert page.count("data:image/png;base64,") == 5
    out = snakemake(smoke_run, "--configfile", str(SMOKE_CONFIG), "--report", str(tmp_path / "snakemake.html"))
    assert (tmp_path / "snakemake.html").stat().st_size > 0, out.stdout


@pytest.mark.slow
def test_ablation_switch_adds_the_ablation_arms_to_the_report(smoke_run, tmp_path):
    config = yaml.safe_load(SMOKE_CONFIG.read_text())
    config["experiment"]["ablations"] = True
    edited = tmp_path / "ablations.yaml"
    edited.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(smoke_run, "--configfile", str(edited), "-n").stdout)
    for arm in ("critique_full_quote", "critique_labels_only"):
        for r in (1, 2):
            assert ("evaluate", f"seed=0, split=eval, condition={arm}, round={r}") in jobs
    assert ("report", "") in jobs
    # the round-0 teacher log-probs of the ablation contexts exist already (the analysis needed them)
    assert not [job for job in jobs if job[0] == "precompute_teacher_logprobs" and re.search(r"\bround=0\b", job[1])]


def test_seeds_option_repeats_the_experiment_and_reports_once(tmp_path):
    config = yaml.safe_load(SMOKE_CONFIG.read_text())
    config["experiment"]["seeds"] = [0, 1]
    edited = tmp_path / "seeds.yaml"
    edited.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(tmp_path, "--configfile", str(edited), "-n").stdout)
    for seed in (0, 1):
        assert ("generate_traces", f"seed={seed}, condition=shared, round=0") in jobs
        assert ("evaluate", f"seed={seed}, split=eval, condition=critique, round=2") in jobs
    # the base solver is the same model in every seed: evaluated once
    assert sorted(wc for rule, wc in jobs if rule == "evaluate" and "condition=base" in wc) == [
        "seed=0, split=dev, condition=base, round=0",  # the smoke config evaluates dev too
        "seed=0, split=eval, condition=base, round=0",
    ]
    # the premise check on the first seed; the advantage analysis per seed (claim C5 per seed)
    assert {wc for rule, wc in jobs if rule == "check_premise"} == {"seed=0"}
    assert {wc for rule, wc in jobs if rule == "analyse_advantages"} == {"seed=0", "seed=1"}
    assert [rule for rule, _ in jobs].count("report") == 1


@pytest.mark.slow
def test_smoke_dag_selects_problems_and_threshold_edits_sample_nothing(smoke_run, tmp_path):
    selection = smoke_run / "results/problems/selection"
    train = pl.read_parquet(selection / "train.parquet")
    assert train.schema == PROBLEMS_SCHEMA and train.height == 8  # 10 candidates, capped at 8
    samples = pl.read_parquet(selection / "solver_samples.parquet")
    assert samples.group_by("problem_id").len()["len"].to_list() == [4] * 17  # 10 train + 4 eval + 3 dev candidates x 4
    summary = json.loads((selection / "summary.json").read_text())
    assert summary["splits"]["train"]["failing"]["over_cap"] == 2
    assert "Problem selection" in (smoke_run / "results/report.html").read_text()
    # every later stage reads the selected problems
    traces = pl.read_parquet(smoke_run / "results/seed_0/traces/shared/round_0.parquet")
    assert set(traces["problem_id"]) <= set(train["problem_id"])
    config = yaml.safe_load(SMOKE_CONFIG.read_text())
    config["select_problems"]["filters"]["n_train"] = 6
    edited = tmp_path / "filters.yaml"
    edited.write_text(yaml.safe_dump(config))
    rules = {rule for rule, _ in planned_jobs(snakemake(smoke_run, "--configfile", str(edited), "-n").stdout)}
    assert "select_problems" in rules and "select_problems_solver" not in rules and "prepare_problems" not in rules


PAPER = ROOT / "config/paper.yaml"


def test_paper_config_dry_run_lists_the_whole_dag(tmp_path):
    jobs = planned_jobs(snakemake(tmp_path, "--configfile", str(PAPER), "-n").stdout)
    rules = [rule for rule, _ in jobs]
    for rule in ("prepare_problems", "select_problems_solver", "select_problems_critic", "select_problems",
                 "check_premise", "analyse_advantages", "report"):  # fmt: skip
        assert rules.count(rule) == 1, rule
    assert rules.count("prepare_model") == 2  # the solver and the critic
    for arm in ("grpo", "reference", "critique"):
        for r in range(1, 8):  # 7 epochs x 3 arms
            assert ("evaluate", f"seed=0, split=eval, condition={arm}, round={r}") in jobs
            assert ("evaluate", f"seed=0, split=dev, condition={arm}, round={r}") in jobs  # the round is chosen on dev
    assert rules.count("distill_student") == 14 and rules.count("train_grpo") == 7
    assert rules.count("generate_traces") == 1 + 7 + 6 + 6  # GRPO's 7 rounds, shared round 0, 6 more per arm


def test_paper_config_dry_run_with_the_slurm_profile(tmp_path):
    import importlib.util

    # the dev extra installs it (./setup.sh): a missing plugin fails here rather than skipping the test
    assert importlib.util.find_spec("snakemake_executor_plugin_slurm"), "rerun ./setup.sh (.[dev] has .[slurm])"
    out = snakemake(
        tmp_path, "--configfile", str(PAPER), "--workflow-profile", str(ROOT / "workflow/profiles/slurm"), "-n"
    ).stdout
    assert "total                            160" in out  # 138 + 22 dev evaluations (base, 3 arms x 7 rounds)
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", out)
    model_rules = ("generate_traces", "evaluate", "distill_student", "train_grpo", "score_traces",
                   "precompute_teacher_logprobs", "check_premise", "select_problems_solver")  # fmt: skip
    for block in blocks:
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if rule and rule.group(1) in model_rules:
            assert "slurm_partition=gpu" in block and "gpu=1" in block, block
    critic = [b for b in blocks if b.startswith("rule query_critic:") and "condition=critique" in b]
    assert critic and all("gpu=4" in b for b in critic)  # the critic's tensor-parallel size
    grpo = [b for b in blocks if b.startswith("rule query_critic:") and "condition=grpo" in b]
    assert grpo and all("gpu=0" in b for b in grpo)  # reward only: no critic call


def test_rule_all_names_the_report_and_every_checkpoint(tmp_path):
    config = yaml.safe_load(SMOKE_CONFIG.read_text())
    config["experiment"]["seeds"] = [0, 1]
    edited = tmp_path / "seeds.yaml"
    edited.write_text(yaml.safe_dump(config))
    plan = snakemake(tmp_path, "--configfile", str(edited), "-n").stdout
    targets = re.search(r"\n(?:local)?rule all:\n    input: (.*)\n", plan).group(1).split(", ")
    arms = ["reference", "critique", "grpo", *(variant["name"] for variant in config["experiment"]["variants"])]
    students = [f"results/seed_{seed}/students/{arm}/round_{r}" for seed in (0, 1) for arm in arms for r in (1, 2)]
    assert len(arms) == 7 and sorted(targets) == sorted(["results/report.html", *students])


def test_default_profile_applies_by_itself(tmp_path):
    """Found through profiles/default: its `cores: all` is why a bare `--unlock` works (README, When a run dies)."""
    cmd = [SNAKEMAKE, "--unlock", "-s", str(ROOT / "Snakefile"), "--configfile", str(SMOKE_CONFIG)]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)  # found next to the Snakefile
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"workflow specific profile {ROOT / 'profiles/default'}" in out.stderr
    assert "Unlocked working directory" in out.stdout + out.stderr


def test_every_rule_benchmarks_beside_its_log():
    """Each job's time and peak memory land in benchmarks/<rule>/, at its log's path (job_resources.py joins them)."""
    jobs = 0
    for rules in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule )", rules.read_text()):
            name = re.match(r"rule (\w+):", block)
            if name is None or "script:" not in block:
                continue
            log = re.search(r'\n    log:\n        "([^"]+)"', block)
            benchmark = re.search(r'\n    benchmark:\n        "([^"]+)"', block)
            assert log and benchmark, f"rule {name[1]}: needs a log and a benchmark"
            assert log[1].startswith(f"logs/{name[1]}/") and log[1].endswith(".log"), log[1]
            assert benchmark[1] == "benchmarks/" + log[1].removeprefix("logs/").removesuffix(".log") + ".tsv"
            jobs += 1
    assert jobs == 16
