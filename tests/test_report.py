"""report: checkpoint tables over seeds, Table 1's best/last rounds, and the rendered page."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.artifacts import EVAL_SAMPLES_SCHEMA, TRAIN_LOG_SCHEMA
from pipeline.claims import claims_table
from pipeline.report import (
    arm_colors,
    beats_base,
    checkpoint_table,
    chosen_rounds,
    comparison_pairs,
    critic_qa,
    paired_differences,
    premise_flags,
    render_report,
    table_one,
    training_frame,
)


def _samples(condition: str, round_index: int, seed: int, correct: dict[str, list[bool]]) -> list[dict]:
    return [
        {
            "problem_id": pid, "condition": condition, "round": round_index, "seed": seed, "sample_idx": i,
            "completion_text": "", "num_tokens": 10 + round_index, "sum_logprob": -5.0, "finish_reason": "stop",
            "extracted_answer": "1" if ok else "2", "answer_key": "1" if ok else "2", "format_ok": True,
            "is_correct": ok,
        }
        for pid, outcomes in correct.items()
        for i, ok in enumerate(outcomes)
    ]  # fmt: skip


def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=EVAL_SAMPLES_SCHEMA)


EVAL = _frame(
    _samples("base", 0, 0, {"p1": [False] * 4, "p2": [True, False, False, False]})
    + _samples("base", 0, 1, {"p1": [False] * 4, "p2": [True, True, False, False]})
    + _samples("critique", 1, 0, {"p1": [True] * 4, "p2": [True] * 4})
    + _samples("critique", 1, 1, {"p1": [True, True, False, False], "p2": [True] * 4})
    + _samples("critique", 2, 0, {"p1": [False] * 4, "p2": [True] * 4})
    + _samples("critique", 2, 1, {"p1": [False] * 4, "p2": [True] * 4})
)


def test_checkpoint_table_averages_problems_over_seeds():
    table = checkpoint_table(EVAL, resamples=200, seed=0)
    base = table.filter(pl.col("condition") == "base").row(0, named=True)
    assert base["seeds"] == 2 and base["problems"] == 2
    assert base["avg"] == pytest.approx((0 + (0.25 + 0.5) / 2) / 2)
    assert (base["seed_min_avg"], base["seed_max_avg"]) == (0.125, 0.25)
    critique_1 = table.filter((pl.col("condition") == "critique") & (pl.col("round") == 1)).row(0, named=True)
    assert critique_1["avg"] == pytest.approx(((1 + 0.5) / 2 + 1) / 2)
    assert critique_1["pass_n"] == 1.0
    assert table["condition"].to_list() == ["base", "critique", "critique"]  # arm order, then round


def test_rounds_are_chosen_on_dev_never_on_eval():
    checkpoints = checkpoint_table(EVAL, resamples=200, seed=0)
    assert chosen_rounds(checkpoints) == {"base": 0, "critique": 2}  # no dev: the last round
    # on dev, round 2 is the better one, although round 1 is better on eval
    dev = _frame(
        _samples("base", 0, 0, {"d1": [False] * 4})
        + _samples("critique", 1, 0, {"d1": [False] * 4})
        + _samples("critique", 2, 0, {"d1": [True] * 4})
    )
    dev_table = checkpoint_table(dev, resamples=50, seed=0)
    assert chosen_rounds(checkpoints, dev_table) == {"base": 0, "critique": 2}
    dev_prefers_1 = dev.with_columns(is_correct=pl.col("round") == 1)
    assert chosen_rounds(checkpoints, checkpoint_table(dev_prefers_1, resamples=50, seed=0))["critique"] == 1


def test_table_one_reports_the_judged_and_the_last_round():
    checkpoints = checkpoint_table(EVAL, resamples=200, seed=0)
    row = (
        table_one(checkpoints, {"base": 0, "critique": 1}).filter(pl.col("condition") == "critique").row(0, named=True)
    )
    assert row["round"] == 1 and row["avg"] == pytest.approx(0.875) and row["length"] == 11.0
    assert row["last_round"] == 2 and row["last_avg"] == pytest.approx(0.5) and row["last_length"] == 12.0


def test_beats_base_needs_the_whole_ci_above_the_base_ci():
    checkpoints = pl.DataFrame(
        {
            "condition": ["base", "a", "b"],
            "round": [0, 1, 1],
            "avg_low": [0.2, 0.35, 0.45],
            "avg_high": [0.4, 0.6, 0.7],
        }
    )
    assert beats_base(checkpoints)["condition"].to_list() == ["b"]


def test_training_frame_counts_steps_across_rounds():
    log = pl.DataFrame({"step": [1, 2], "loss": [1.0, 0.5]}).with_columns(
        *(
            pl.lit(None, dtype=dtype).alias(name)
            for name, dtype in TRAIN_LOG_SCHEMA.items()
            if name not in ("step", "loss")
        )
    )
    frame = training_frame({(0, "critique", 1): log, (0, "critique", 2): log})
    assert frame["global_step"].to_list() == [1, 2, 3, 4]
    assert frame["round"].to_list() == [1, 1, 2, 2]


def _gap(mean):
    return {"traces": 4, "mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1}


PREMISE = {
    "traces": 6,
    "traces_originally_incorrect": 4,
    "samples_per_trace": 2,
    "table": [
        {"layout": "none", "context_kind": "none", "format_rate": 1.0, "all": _gap(0.3), "originally_incorrect": _gap(0.1),
         "originally_correct": _gap(0.6), "gap_all": None, "gap_originally_incorrect": None,
         "gap_originally_correct": None, "advantages": None},
        {"layout": "anchor", "context_kind": "critique", "format_rate": 0.9, "all": _gap(0.5),
         "originally_incorrect": _gap(0.5), "originally_correct": _gap(0.6), "gap_all": _gap(0.2),
         "gap_originally_incorrect": _gap(0.4), "gap_originally_correct": _gap(0.0),
         "advantages": {f"{c}_{k}": {"tokens": 3, "mean": -0.25, "share_negative": 0.5}
                        for c in ("incorrect", "correct") for k in ("pre_error", "first_wrong", "after_error", "answer", "all")}},
        {"layout": "anchor", "context_kind": "reference", "format_rate": 0.9, "all": _gap(0.3),
         "originally_incorrect": _gap(0.1), "originally_correct": _gap(0.6), "gap_all": _gap(0.0),
         "gap_originally_incorrect": _gap(0.0), "gap_originally_correct": _gap(0.0), "advantages": None},
    ],
}  # fmt: skip


def test_premise_flags_arms_whose_teacher_has_no_edge():
    arms = {
        "critique": "critique",
        "reference": "reference",
        "critique_first_error": "critique",
        "x": "critique_labels_only",
    }
    flags = premise_flags(PREMISE["table"], "anchor", arms)
    assert len(flags) == 2
    assert flags[0].startswith("reference: its teacher (reference, layout anchor) is no better than no context")
    assert flags[1].startswith("x: its teacher (critique_labels_only, layout anchor) was not measured")
    assert len(premise_flags(PREMISE["table"], "inline", {"critique": "critique"})) == 1  # not measured inline


def test_paired_differences_pair_problems_and_average_seeds():
    rounds = {"base": 0, "critique": 2}
    paired = paired_differences(EVAL, [("critique", "base"), ("grpo", "base")], rounds, resamples=500, seed=0)
    assert paired["comparison"].to_list() == ["critique (round 2) - base (round 0)"]  # no grpo samples: skipped
    row = paired.row(0, named=True)
    # critique round 2 per problem: p1 0, p2 1; base: p1 0, p2 (0.25 + 0.5) / 2
    assert row["problems"] == 2 and row["difference"] == pytest.approx((0 + (1 - 0.375)) / 2)
    assert row["ci_low"] == pytest.approx(0.0) and row["ci_high"] == pytest.approx(0.625)


def test_comparison_pairs():
    arms = {"reference": "reference", "critique": "critique", "critique_first_error": "critique"}
    pairs = comparison_pairs(arms, ["base", "grpo", "reference", "critique", "critique_first_error"])
    assert pairs == [
        ("grpo", "base"), ("reference", "base"), ("critique", "base"), ("critique_first_error", "base"),
        ("critique", "reference"), ("critique", "grpo"), ("critique_first_error", "critique"),
    ]  # fmt: skip


def test_render_report_has_every_section_and_no_external_assets():
    checkpoints = checkpoint_table(EVAL, resamples=200, seed=0)
    aggregates = pl.DataFrame(
        {
            "context_kind": ["critique"], "correctness": ["incorrect"], "category": ["first_wrong"],
            "n_traces": [1], "n_tokens": [3], "mean_advantage": [-0.25], "share_negative": [1.0],
            "mean_abs_advantage": [0.25],
        }
    )  # fmt: skip
    critiques = pl.DataFrame(
        {
            "seed": [0], "condition": ["shared"], "round": [0], "verdict": ["wrong"], "alignment_score": [1.0],
            "answer_leak": [False], "parse_error": [None], "fallback": [None], "critic": ["oracle"],
            "rewrite_correct": [True],
        }
    )  # fmt: skip
    page = render_report(
        checkpoints=checkpoints,
        training=pl.DataFrame(),
        paired=paired_differences(EVAL, [("critique", "base")], {"base": 0, "critique": 2}, resamples=100, seed=0),
        rounds={"base": 0, "critique": 2},
        split="eval",
        claims=claims_table(EVAL, {"base": 0, "critique": 2}, {}, resamples=100, seed=0),
        dev=None,
        premise=PREMISE,
        arms={"critique": "critique", "reference": "reference"},
        layout="anchor",
        advantages=aggregates,
        advantage_figure_png=b"\x89PNG",
        advantage_figure_html="<p>tokens <b>&lt;step_1&gt;</b></p>",
        critiques=critiques,
        provenance_record={"git_commit": "abc", "config": {"solver": "tiny", "critic": {"backend": "oracle"}}},
        selection={
            "filters": {"max_avg": 0.3125, "min_avg": 0.0, "min_format_rate": 0.5, "critic_solves": True},
            "splits": {
                "train": {
                    "candidates": 9,
                    "kept": 4,
                    "mean_avg": 0.3,
                    "failing": {"too_easy": 3, "too_hard": 0, "critic_fails": 2, "format": 1, "over_cap": 0},
                },
            },
        },  # fmt: skip
    )
    headings = ("The paper's claims", "Premise", "Paired differences", "Table 1", "Avg@4 per round",
                "Training curves", "Per-token advantages", "Critic QA", "Provenance")  # fmt: skip
    positions = [page.index(heading) for heading in headings]
    assert positions == sorted(positions)  # the claims come first, then the premise
    assert "<td>C4</td><td>critique student &gt; base solver</td><td>0</td>" in page
    assert "reference: its teacher (reference, layout anchor) is no better" in page
    assert "+0.400 [+0.300, +0.500] (4)" in page  # the critique's gap
    assert "Problem selection" in page and "<td>train</td><td>9</td><td>4</td><td>3</td><td>0</td><td>2</td>" in page
    assert "-0.25 / 1.0 / 0.25 (3)" in page
    assert 'src="http' not in page and "<script src" not in page
    assert "critique round 1" in page  # its CI lies above the base's
    assert '"solver": "tiny"' in page


def test_critic_qa_rates_leave_out_reward_only_rows():
    critiques = pl.DataFrame(
        {
            "seed": [0] * 5, "condition": ["shared"] * 3 + ["grpo"] * 2, "round": [0] * 5,
            "verdict": ["wrong", "wrong", "correct", "wrong", "correct"],
            "alignment_score": [1.0, None, 0.5, None, None], "answer_leak": [True, False, False, False, False],
            "parse_error": [None, "no_steps", None, None, None], "fallback": [None, "reference", None, None, None],
            "critic": ["llm"] * 3 + ["reward_only"] * 2, "rewrite_correct": [True, None, False, None, None],
        }
    )  # fmt: skip
    qa = critic_qa(critiques).sort("condition")
    grpo, shared = qa.row(0, named=True), qa.row(1, named=True)
    assert shared["traces"] == 3 and shared["reviewed"] == 3 and shared["parse_errors"] == 1
    assert shared["parse_rate"] == pytest.approx(2 / 3) and shared["fallback_rate"] == pytest.approx(1 / 3)
    assert shared["leak_rate"] == 0.5 and shared["rewrite_correct"] == 0.5  # leaks among the 2 usable rewrites
    assert shared["mean_alignment"] == 0.75
    assert grpo["traces"] == 2 and grpo["reviewed"] == 0 and grpo["parse_errors"] == 0


def test_arm_colours_are_distinct_and_stable():
    variants = ["critique_skip_correct", "critique_through_error", "critique_first_error"]
    colors = arm_colors(["grpo", "critique", *variants])
    assert len({colors[a] for a in ["grpo", "critique", *variants]}) == 5
    assert colors == arm_colors(list(reversed(["grpo", "critique", *variants])))
    assert colors["grpo"] == arm_colors(["grpo"])["grpo"]
