"""check_premise: the prompts it re-solves from and the accuracy summary."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.artifacts import PREMISE_SAMPLES_SCHEMA
from pipeline.engines import Completion
from pipeline.premise import premise_prompts, premise_samples_frame, premise_summary


def test_prompts_cover_the_traces_every_kind_has_and_use_each_kinds_prompt():
    traces = pl.DataFrame(
        {"trace_id": ["a", "b"], "problem_id": ["p", "q"], "is_correct": [True, False], "prompt_token_ids": [[1], [2]]}
    )
    contexts = {
        "reference": pl.DataFrame({"trace_id": ["a", "b"], "teacher_prompt_token_ids": [[10], [20]]}),
        "critique": pl.DataFrame({"trace_id": ["b"], "teacher_prompt_token_ids": [[30]]}),  # no context for a
    }
    prompts = premise_prompts(traces, contexts)
    assert prompts.select("context_kind", "trace_id", "prompt", "original_correct").rows() == [
        ("critique", "b", [30], False),
        ("none", "b", [2], False),
        ("reference", "b", [20], False),
    ]


def test_samples_are_verified_against_the_problem_answer():
    prompts = pl.DataFrame(
        {"trace_id": ["a"], "problem_id": ["p"], "context_kind": ["critique"], "original_correct": [False]}
    )
    completions = [
        [
            Completion("<step_1> 2 + 2 = 4 </step_1>\n<answer> 4 </answer>", [1], [0.0], "stop"),
            Completion("<answer> 5 </answer>", [1], [0.0], "stop"),
        ]
    ]
    samples = premise_samples_frame(prompts, completions, {"p": ("4", "exact")})
    assert samples["is_correct"].to_list() == [True, False]
    assert samples["format_ok"].to_list() == [True, False]


def test_summary_splits_by_original_correctness():
    rows = []
    for kind, per_trace in {"none": {"a": [0, 0], "b": [1, 1]}, "critique": {"a": [1, 0], "b": [1, 1]}}.items():
        for trace, outcomes in per_trace.items():
            for i, ok in enumerate(outcomes):
                rows.append(
                    {
                        "trace_id": trace, "problem_id": trace, "context_kind": kind, "original_correct": trace == "b",
                        "sample_idx": i, "completion_text": "", "num_tokens": 1, "extracted_answer": None,
                        "format_ok": True, "is_correct": bool(ok),
                    }
                )  # fmt: skip
    summary = premise_summary(pl.DataFrame(rows, schema=PREMISE_SAMPLES_SCHEMA), resamples=200, seed=0)
    assert summary["none"]["all"]["mean"] == 0.5
    assert summary["none"]["originally_incorrect"]["mean"] == 0.0
    assert summary["critique"]["originally_incorrect"]["mean"] == 0.5
    assert summary["critique"]["originally_correct"] == {"traces": 1, "mean": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    assert summary["critique"]["all"]["mean"] == pytest.approx(0.75)
