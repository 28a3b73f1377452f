"""claims: paired contrasts per seed and pooled, C5's per-trace A_t contrasts, verdicts from CIs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.artifacts import ADVANTAGE_TOKENS_SCHEMA, EVAL_SAMPLES_SCHEMA
from pipeline.claims import arm_differences, claims_table, overall_verdicts, pooled_ci, trace_contrasts, verdict


def samples(condition: str, round_index: int, seed: int, correct: dict[str, list[bool]]) -> list[dict]:
    return [
        {"problem_id": pid, "condition": condition, "round": round_index, "seed": seed, "sample_idx": i,
         "completion_text": "", "num_tokens": 5, "sum_logprob": -1.0, "finish_reason": "stop",
         "extracted_answer": "1", "answer_key": "1", "format_ok": True, "is_correct": ok}
        for pid, outcomes in correct.items()
        for i, ok in enumerate(outcomes)
    ]  # fmt: skip


def test_verdict_follows_the_ci():
    assert verdict(0.01, 0.3) == "replicated"
    assert verdict(-0.3, -0.01) == "reversed"
    assert verdict(-0.01, 0.3) == "inconclusive"


def test_pooled_ci_is_the_mean_of_seed_means_and_one_seed_is_the_plain_bootstrap():
    one = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    mean, low, high = pooled_ci([one], resamples=2000, seed=0)
    assert mean == pytest.approx(0.6) and 0.0 <= low < 0.6 < high <= 1.0
    # a second seed far away: the pooled mean is the mean of the two, and its CI spans the seed noise
    mean2, low2, high2 = pooled_ci([one, one + 1.0], resamples=2000, seed=0)
    assert mean2 == pytest.approx(1.1)
    assert low2 < 0.8 and high2 > 1.4  # seeds resampled: the CI holds both seeds' means
    assert np.isnan(pooled_ci([], resamples=10, seed=0)[0])


def test_arm_differences_pair_problems_and_reuse_the_base_evaluated_once():
    frame = pl.DataFrame(
        samples("base", 0, 0, {"p1": [False, False], "p2": [True, False]})
        + samples("critique", 1, 0, {"p1": [True, True], "p2": [True, False]})
        + samples("critique", 1, 1, {"p1": [True, False], "p2": [False, False]}),
        schema=EVAL_SAMPLES_SCHEMA,
    )
    diffs = arm_differences(frame, "critique", "base", {"critique": 1, "base": 0})
    assert set(diffs) == {0, 1}
    assert diffs[0].tolist() == [1.0, 0.0] and diffs[1].tolist() == [0.5, -0.5]  # p1, p2 against seed 0's base
    assert arm_differences(frame, "critique", "grpo", {"critique": 1}) == {}


def test_trace_contrasts_use_traces_with_a_located_error_scored_by_both_kinds():
    rows = []
    for trace, (crit, ref) in {
        "t1": ([0.1, 0.1, -1.0, 0.0], [-0.4, -0.4, -1.0, 0.0]),
        "t2": ([0.0, 0.0, -0.5, 0.0], [-0.2, -0.2, -0.6, 0.0]),
    }.items():
        for kind, adv in (("critique", crit), ("reference", ref)):
            rows.append({"trace_id": trace, "problem_id": "p", "context_kind": kind, "is_correct": False,
                         "first_wrong_step": 2, "tokens": ["a", "b", "c", "d"],
                         "categories": ["pre_error", "pre_error", "first_wrong", "answer"], "advantages": adv})  # fmt: skip
    correct = {"trace_id": "t3", "problem_id": "p", "context_kind": "critique", "is_correct": True,
               "first_wrong_step": None, "tokens": ["a"], "categories": ["pre_error"], "advantages": [-3.0]}  # fmt: skip
    tokens = pl.DataFrame([*rows, correct], schema=ADVANTAGE_TOKENS_SCHEMA)
    contrasts = trace_contrasts(tokens)
    assert contrasts["C5a"] == pytest.approx([1.1, 0.5])  # pre-error minus first wrong, critique
    assert contrasts["C5b"] == pytest.approx([0.5, 0.2])  # critique minus reference on pre-error tokens
    assert trace_contrasts(tokens.filter(pl.col("context_kind") == "critique"))["C5b"].size == 0


def test_claims_table_rows_per_seed_then_pooled_with_verdicts():
    both = {"p1": [True] * 4, "p2": [True] * 4, "p3": [True, True, True, False]}
    frame = pl.DataFrame(
        samples("base", 0, 0, {"p1": [False] * 4, "p2": [False] * 4, "p3": [False] * 4})
        + samples("critique", 1, 0, both) + samples("critique", 1, 1, both)
        + samples("reference", 1, 0, {"p1": [True] * 4, "p2": [True] * 4, "p3": [True] * 4})
        + samples("reference", 1, 1, {"p1": [True] * 4, "p2": [True] * 4, "p3": [True] * 4}),
        schema=EVAL_SAMPLES_SCHEMA,
    )  # fmt: skip
    rounds = {"base": 0, "critique": 1, "reference": 1}
    table = claims_table(frame, rounds, {}, resamples=300, seed=0)
    assert table.filter(pl.col("claim") == "C4")["seed"].to_list() == ["0", "1", "pooled"]
    c4 = table.filter((pl.col("claim") == "C4") & (pl.col("seed") == "pooled")).row(0, named=True)
    assert c4["contrast"] == pytest.approx(11 / 12) and c4["verdict"] == "replicated" and c4["problems"] == 6
    c1 = table.filter((pl.col("claim") == "C1") & (pl.col("seed") == "pooled")).row(0, named=True)
    assert c1["contrast"] == pytest.approx(-1 / 12) and c1["verdict"] != "replicated"
    assert set(table["claim"]) == {"C1", "C4"}  # no grpo arm, no advantage tokens: C2, C3, C5 absent
    verdicts = overall_verdicts(table)
    assert verdicts["C4"] == "replicated" and "C5" not in verdicts
