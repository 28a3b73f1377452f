"""evaluate: the per-sample frame, the checkpoint summary, and the stage on the tiny model."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.artifacts import EVAL_SAMPLES_SCHEMA
from pipeline.engines import Completion
from pipeline.evaluate import samples_frame, summarise, token_entropy
from pipeline.tasks.verify import normalize_answer


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
                "sum_logprob": -0.5 * tokens,
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
    assert summary["token_entropy"] == 0.5


def test_token_entropy_is_the_mean_negative_log_prob_of_sampled_tokens():
    frame = HAND.with_columns(sum_logprob=pl.when(pl.col("problem_id") == "p1").then(-30.0).otherwise(0.0))
    assert token_entropy(frame) == pytest.approx(4 * 30.0 / frame["num_tokens"].sum())


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
    assert frame["sum_logprob"].to_list() == [0.0, 0.0, 0.0]
    assert frame["round"].unique().to_list() == [2] and frame["seed"].unique().to_list() == [1]


def test_evaluate_stage_writes_samples_and_summary(tiny_model_dir, tmp_path):
    import json

    import yaml

    from pipeline.artifacts import PROBLEMS_SCHEMA, read_metadata, write_artifact
    from pipeline.config import EngineConfig, EvaluateConfig, ProblemsConfig, PromptConfig, from_params
    from pipeline.evaluate import evaluate
    from pipeline.problems import arith_frames
    from tests.conftest import SMOKE_CONFIG

    smoke = yaml.safe_load(SMOKE_CONFIG.read_text())
    eval_set = arith_frames(from_params(ProblemsConfig, smoke["problems"], where="problems"))["eval"]
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
