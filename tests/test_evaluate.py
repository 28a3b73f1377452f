"""evaluate: Avg@n, unbiased Pass@k, Maj@n and the bootstrap, on hand-made cases."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from pipeline.artifacts import EVAL_SAMPLES_SCHEMA
from pipeline.engines import Completion
from pipeline.evaluate import (
    bootstrap_ci,
    majority_correct,
    miscalculated_step_rate,
    pass_at_k,
    problem_metrics,
    samples_frame,
    summarise,
)
from pipeline.tasks.verify import normalize_answer


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(12, 0, 12) == 0.0
    assert pass_at_k(12, 12, 1) == 1.0


@pytest.mark.parametrize("c", range(7))
def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_sample(c):
    n = 6
    samples = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(samples, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(4, 5, 1)


def test_majority_vote_over_normalised_answers():
    keys = [normalize_answer(a) for a in ["12", "12.0", "7", None]]
    assert keys == ["12", "12", "7", None]
    assert majority_correct(keys, [True, True, False, False])
    assert not majority_correct(["7", "7", "12"], [False, False, True])
    assert not majority_correct(["7", "12"], [False, True])  # a tie goes to the earliest answer
    assert majority_correct(["12", "7"], [True, False])
    assert not majority_correct([None, None], [False, False])  # no answer never wins


def test_normalize_answer_exact_and_math():
    assert normalize_answer("-0.50") == "-0.5"
    assert normalize_answer("1,200") == "1200"
    assert normalize_answer("no number") is None
    assert normalize_answer("\\frac{1}{2}", method="math") == normalize_answer("0.5", method="math") == "1/2"
    assert normalize_answer("1+x", method="math") == normalize_answer("x + 1", method="math")
    assert normalize_answer("  ", method="math") is None


def _samples(rows: list[tuple[str, int, str | None, bool, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "problem_id": pid,
                "condition": "base",
                "round": 0,
                "seed": 0,
                "sample_idx": idx,
                "completion_text": "",
                "num_tokens": tokens,
                "finish_reason": "stop",
                "extracted_answer": key,
                "answer_key": key,
                "format_ok": key is not None,
                "is_correct": ok,
            }
            for pid, idx, key, ok, tokens in rows
        ],
        schema=EVAL_SAMPLES_SCHEMA,
    )


HAND = _samples(
    [
        ("p1", 0, "5", True, 10),
        ("p1", 1, "6", False, 20),
        ("p1", 2, "6", False, 30),
        ("p1", 3, "7", False, 40),
        ("p2", 0, "9", True, 10),
        ("p2", 1, "9", True, 10),
        ("p2", 2, "9", True, 10),
        ("p2", 3, None, False, 10),
    ]
)


def test_problem_metrics_on_a_hand_case():
    metrics = problem_metrics(HAND).sort("problem_id")
    assert metrics["avg"].to_list() == [0.25, 0.75]
    assert metrics["maj"].to_list() == [0.0, 1.0]  # p1 votes "6" (wrong), p2 votes "9"
    assert metrics["pass_at"][0].to_list() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert metrics["length"].to_list() == [25.0, 10.0]


def test_summary_averages_over_problems_with_cis():
    summary = summarise(HAND, resamples=500, seed=0)
    assert summary["avg"]["mean"] == 0.5
    assert summary["maj"]["mean"] == 0.5
    assert [p["k"] for p in summary["pass_at_k"]] == [1, 2, 3, 4]
    assert summary["pass_at_k"][0]["mean"] == 0.5  # Pass@1 equals Avg@n
    assert summary["pass_at_k"][-1]["mean"] == 1.0
    assert summary["avg"]["ci_low"] == 0.25 and summary["avg"]["ci_high"] == 0.75  # two problems: 0.25, 0.5, 0.75
    assert summary["format_rate"] == pytest.approx((1.0 + 0.75) / 2)
    assert summary["mean_length"] == pytest.approx(17.5)


def test_unequal_sample_counts_are_an_error():
    with pytest.raises(ValueError, match="same number of samples"):
        problem_metrics(HAND.filter(~((pl.col("problem_id") == "p2") & (pl.col("sample_idx") == 3))))


def test_bootstrap_ci_brackets_the_mean_and_collapses_on_constants():
    rng = np.random.default_rng(0)
    values = np.column_stack([rng.random(40), np.full(40, 0.3)])
    ci = bootstrap_ci(values, resamples=2000, seed=1)
    assert ci[0, 1] < ci[0, 0] < ci[0, 2]
    assert ci[1] == pytest.approx([0.3, 0.3, 0.3])
    assert np.array_equal(ci, bootstrap_ci(values, resamples=2000, seed=1))  # seeded


def test_samples_frame_parses_and_verifies():
    problems = pl.DataFrame({"problem_id": ["p"], "answer": ["12"], "verifier": ["exact"]})
    completions = [
        [
            Completion(
                text="<step_1> 3 * 4 = 12 </step_1>\n<answer> 12 </answer>",
                token_ids=[1, 2, 3],
                logprobs=[0.0] * 3,
                finish_reason="stop",
            ),
            Completion(
                text="<step_1> 3 * 4 = 13 </step_1>\n<answer> 13.0 </answer>",
                token_ids=[1, 2],
                logprobs=[0.0] * 2,
                finish_reason="stop",
            ),
            Completion(text="I think", token_ids=[1], logprobs=[0.0], finish_reason="length"),
        ]
    ]
    frame = samples_frame(problems, completions, condition="critique", round_index=2, seed=1)
    assert frame["is_correct"].to_list() == [True, False, False]
    assert frame["answer_key"].to_list() == ["12", "13", None]
    assert frame["format_ok"].to_list() == [True, True, False]
    assert frame["num_tokens"].to_list() == [3, 2, 1]
    assert frame["round"].unique().to_list() == [2] and frame["seed"].unique().to_list() == [1]


def test_miscalculated_step_rate_checks_each_steps_own_arithmetic():
    texts = [
        "<step_1> 3 * 4 = 12 </step_1>\n<step_2> 12 - 5 = 8 </step_2>\n<answer> 8 </answer>",  # 1 of 2 wrong
        "<step_1> 7 / 2 = 3.5 </step_1>\n<step_2> I add them </step_2>",  # right; the prose step is not checked
        "<step_1> 5 + 0 = 5 </step_1>\n<step_2> 5 / 0 = 1 </step_2>",  # right; division by zero is not checked
    ]
    assert miscalculated_step_rate(texts) == pytest.approx(1 / 4)
    assert miscalculated_step_rate(["<answer> 4 </answer>"]) is None


def test_evaluate_stage_writes_samples_and_summary(tiny_model_dir, tmp_path):
    import json

    import yaml

    from pipeline.artifacts import PROBLEMS_SCHEMA, read_metadata, write_artifact
    from pipeline.config import EngineConfig, EvaluateConfig, ProblemsConfig, PromptConfig, from_params
    from pipeline.evaluate import evaluate
    from pipeline.problems import arith_frames
    from tests.conftest import SMOKE_CONFIG

    smoke = yaml.safe_load(SMOKE_CONFIG.read_text())
    _, eval_set = arith_frames(from_params(ProblemsConfig, smoke["problems"], where="problems"))
    problems = write_artifact(
        eval_set.head(3), tmp_path / "eval.parquet", schema=PROBLEMS_SCHEMA, artifact="problems", stage="test"
    )
    cfg = EvaluateConfig(engine=EngineConfig(backend="transformers"), samples_per_problem=4, max_tokens=8)
    summary = evaluate(
        problems=problems, model=tiny_model_dir, samples_out=tmp_path / "s.parquet", summary_out=tmp_path / "s.json",
        condition="base", round_index=0, run_seed=3,
        prompt=from_params(PromptConfig, smoke["traces"]["prompt"], where="traces.prompt"), cfg=cfg,
    )  # fmt: skip
    samples = pl.read_parquet(tmp_path / "s.parquet")
    assert samples.height == 12 and samples["seed"].unique().to_list() == [3]
    assert (samples["num_tokens"] <= 8).all()
    assert json.loads((tmp_path / "s.json").read_text()) == summary
    assert summary["avg"]["mean"] == pytest.approx(float(samples["is_correct"].mean()))
    assert read_metadata(tmp_path / "s.parquet")["stage"] == "evaluate"
