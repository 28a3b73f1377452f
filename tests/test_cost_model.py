"""Cost model: token counts follow the config; GPU-hours follow the cited throughputs."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest
import yaml
from snakemake.utils import update_config

from pipeline.cost_model import Lengths, Throughput, experiment_cost, gpu_hours, stage_tokens
from tests.conftest import DEFAULT_CONFIG

PAPER = DEFAULT_CONFIG.parent / "paper.yaml"


def paper() -> dict:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    update_config(config, yaml.safe_load(PAPER.read_text()))
    return config


def row(table: pl.DataFrame, stage: str, when: str) -> dict:
    return table.filter((pl.col("stage") == stage) & (pl.col("when") == when)).row(0, named=True)


def test_paper_token_counts_by_hand():
    lengths = Lengths(answer=2000, solver_prompt=300, reference=800, critic_thinking=4000, labels_context=60)
    table = stage_tokens(paper(), lengths)
    # later rounds: the reference and critique arms' 282 traces plus GRPO's 282 x 8
    assert row(table, "generate_traces", "round r>0")["solver_decoded"] == (2 * 282 + 282 * 8) * 2000
    assert row(table, "generate_traces", "round 0")["solver_decoded"] == (282 + 282 * 8) * 2000
    # the critic rewrites only the critique arm (round 0: the shared traces); GRPO and reference need no rewrite
    assert row(table, "query_critic", "round r>0")["critic_decoded"] == 282 * (4000 + 2000)
    # the teacher side with each arm's context; the student side once per traces file (each arm's, later rounds)
    later = 282 * (300 + 800 + 2000) + 282 * (300 + 2000 + 2000)
    assert row(table, "precompute_teacher_logprobs", "round r>0")["scored"] == later
    assert row(table, "score_traces", "round r>0")["scored"] == 2 * 282 * (300 + 2000)
    assert row(table, "score_traces", "round 0")["scored"] == 282 * (300 + 2000)  # the shared traces, once
    assert row(table, "distill_student", "round r>0")["trained"] == 2 * 282 * 2300
    assert row(table, "train_grpo", "round r>0")["trained"] == 282 * 8 * 2300
    assert row(table, "evaluate", "round r>0")["solver_decoded"] == 3 * 30 * 12 * 2000
    assert row(table, "select_problems_solver", "once")["solver_decoded"] == 1320 * 16 * 2000
    # 4 re-solves of every trace from the plain prompt and 4 layouts x 2 kinds, each then scored
    assert row(table, "check_premise", "once")["solver_decoded"] == 282 * 4 * 9 * 2000
    assert row(table, "check_premise", "once")["scored"] == 282 * 9 * (300 + 2000)


def test_gpu_hours_from_the_cited_throughputs():
    t = Throughput(
        solver_decode=1000.0, critic_decode=500.0, critic_gpus=4, peak_flops=1e15, mfu=0.5, solver_params=1e9
    )
    tokens = pl.DataFrame({"stage": ["x"], "when": ["once"], "solver_decoded": [3.6e6], "critic_decoded": [1.8e6],
                           "scored": [9e8], "trained": [9e8]})  # fmt: skip
    hours = gpu_hours(tokens, t)["gpu_hours"][0]
    # 1 h of solver decoding + 4 GPUs x 1 h of critic + 2e9 x 9e8 / 5e14 s = 1 h scoring + 2 h training
    assert hours == pytest.approx(1 + 4 + 1 + 2)


def test_whole_run_adds_rounds_seeds_and_once_off_jobs():
    config = paper()
    cost = experiment_cost(config)
    base = float(cost["table"].filter(pl.col("when") == "base")["gpu_hours"].sum())
    assert cost["whole_run"] == pytest.approx(cost["once"] + cost["round_0"] + 6 * cost["later_round"] + base)
    config["experiment"]["seeds"] = [0, 1]
    assert experiment_cost(config)["whole_run"] == pytest.approx(cost["once"] + 2 * (cost["whole_run"] - cost["once"]))
    longer = experiment_cost(config, dataclasses.replace(Lengths(), critic_thinking=8000))
    assert longer["later_round"] > cost["later_round"]


def test_an_oracle_config_decodes_nothing_with_a_critic():
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    table = stage_tokens(config)
    assert table["critic_decoded"].sum() == 0 and "select_problems_solver" not in table["stage"].to_list()
