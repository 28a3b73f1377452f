"""check_premise: the prompts it re-solves from, A_t per layout and kind, and the premise table."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import yaml

from pipeline.artifacts import PREMISE_SAMPLES_SCHEMA
from pipeline.config import ContextsConfig, PromptConfig, from_params
from pipeline.engines import Completion, TokenScores
from pipeline.premise import premise_prompts, premise_samples_frame, premise_table, score_advantages
from pipeline.tasks.solver_format import parse_response
from tests.conftest import SMOKE_CONFIG, completion_logprobs

SMOKE = yaml.safe_load(SMOKE_CONFIG.read_text())
TEMPLATES = from_params(ContextsConfig, SMOKE["contexts"]).templates
PROMPT = from_params(PromptConfig, SMOKE["traces"]["prompt"])
WRONG = "<step_1> 2 + 3 = 5 </step_1>\n<step_2> 5 * 4 = 21 </step_2>\n<answer> 21 </answer>"
RIGHT = "<step_1> 2 + 3 = 5 </step_1>\n<step_2> 5 * 4 = 20 </step_2>\n<answer> 20 </answer>"


def joined_traces(tokenizer) -> pl.DataFrame:
    """Two round-0 traces joined with their critiques and problems (what join_feedback gives)."""
    rows = []
    for trace_id, text, correct, wrong_step, critique in (
        ("a", RIGHT, True, None, RIGHT),
        ("b", WRONG, False, 2, RIGHT),
        ("c", WRONG, False, 2, None),  # the critic gave nothing: no critique context
    ):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        steps = parse_response(text).steps
        rows.append(
            {
                "trace_id": trace_id, "problem_id": "p", "is_correct": correct, "question": "2 + 3, times 4?",
                "user_message": "Solve.\nQuestion: 2 + 3, times 4?\nSolution:", "prompt_token_ids": [1, 2, 3],
                "completion_text": text, "completion_token_ids": ids,
                "step_spans": [{"number": s.number, "start": s.start, "end": s.end} for s in steps],
                "critique_text": critique, "critique_steps": ["2 + 3 = 5", "5 * 4 = 20"] if critique else [],
                "first_wrong_step": wrong_step, "parse_error": None if critique else "empty",
                "reference": "Add 2 and 3 to get 5, then multiply by 4 to get 20.",
            }
        )  # fmt: skip
    return pl.DataFrame(rows)


def test_prompts_cover_every_layout_and_kind_of_the_traces_every_kind_has(tokenizer):
    prompts = premise_prompts(
        joined_traces(tokenizer), layouts=["inline", "multi_turn"], kinds=["reference", "critique"],
        templates=TEMPLATES, prompt=PROMPT, tokenizer=tokenizer, enable_thinking=False,
    )  # fmt: skip
    assert sorted(prompts["trace_id"].unique()) == ["a", "b"]  # c has no critique context
    keys = prompts.filter(trace_id="b").select("layout", "context_kind").rows()
    assert keys == [
        ("none", "none"),
        ("inline", "reference"),
        ("inline", "critique"),
        ("multi_turn", "reference"),
        ("multi_turn", "critique"),
    ]
    assert prompts.filter(trace_id="b", layout="none")["prompt"].to_list() == [[1, 2, 3]]  # the solver's own prompt
    multi = tokenizer.decode(prompts.filter(trace_id="b", layout="multi_turn", context_kind="critique")["prompt"][0])
    assert multi.count("<|im_start|>user") == 2 and WRONG in multi and multi.endswith("<|im_start|>assistant\n")
    assert prompts.filter(trace_id="a")["original_correct"].unique().to_list() == [True]


def test_samples_are_verified_against_the_problem_answer():
    prompts = pl.DataFrame(
        {
            "trace_id": ["a"], "problem_id": ["p"], "layout": ["anchor"], "context_kind": ["critique"],
            "original_correct": [False],
        }
    )  # fmt: skip
    completions = [
        [
            Completion("<step_1> 2 + 2 = 4 </step_1>\n<answer> 4 </answer>", [1], [0.0], "stop"),
            Completion("<answer> 5 </answer>", [1], [0.0], "stop"),
        ]
    ]
    samples = premise_samples_frame(prompts, completions, {"p": ("4", "exact")})
    assert samples["is_correct"].to_list() == [True, False]
    assert samples["format_ok"].to_list() == [True, False]
    assert samples["layout"].to_list() == ["anchor", "anchor"]


class PromptLengthEngine:
    """Scores every completion token at -len(prompt) / 100, and records the calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def score(self, prompts, completions, *, top_k):
        self.calls.append(len(prompts))
        return [
            TokenScores(
                np.zeros((len(c), 1), np.int32), np.zeros((len(c), 1), np.float32),
                np.full(len(c), -len(p) / 100, np.float32), np.zeros(len(c), np.float32),
            )
            for p, c in zip(prompts, completions)
        ]  # fmt: skip


def test_advantages_score_the_student_once_and_categorise_every_token(tokenizer):
    joined = joined_traces(tokenizer)
    prompts = premise_prompts(
        joined, layouts=["inline", "anchor"], kinds=["reference", "critique"], templates=TEMPLATES, prompt=PROMPT,
        tokenizer=tokenizer, enable_thinking=False,
    )  # fmt: skip
    engine = PromptLengthEngine()
    scored = score_advantages(engine, prompts, joined, tokenizer)
    assert engine.calls == [2, 8]  # the two traces' student side once, then 2 traces x 2 layouts x 2 kinds
    assert scored.height == 8
    lengths = {t: len(ids) for t, ids in zip(joined["trace_id"], joined["completion_token_ids"])}
    for row in scored.iter_rows(named=True):
        teacher = prompts.filter(trace_id=row["trace_id"], layout=row["layout"], context_kind=row["context_kind"])
        expected = (3 - len(teacher["prompt"][0])) / 100
        assert len(row["advantages"]) == len(row["categories"]) == lengths[row["trace_id"]]
        assert row["advantages"][0] == pytest.approx(expected, abs=1e-6)
    wrong = scored.filter(trace_id="b").row(0, named=True)
    assert {"pre_error", "first_wrong", "answer"} <= set(wrong["categories"])


def test_advantages_of_the_real_tiny_model_are_teacher_minus_student_log_probs(
    tokenizer, tiny_model_dir, tiny_causal_lm
):
    """A_t scored by the real transformers engine on the tiny model, against the model's own forward
    passes on the teacher prompt and on the solver's prompt."""
    from pipeline.engines.hf import HFEngine

    joined = joined_traces(tokenizer)
    prompts = premise_prompts(
        joined, layouts=["inline", "anchor"], kinds=["reference", "critique"], templates=TEMPLATES, prompt=PROMPT,
        tokenizer=tokenizer, enable_thinking=False,
    )  # fmt: skip
    scored = score_advantages(HFEngine(tiny_model_dir, seed=0), prompts, joined, tokenizer)
    assert scored.height == 8
    traces = {r["trace_id"]: r for r in joined.iter_rows(named=True)}
    for row in scored.iter_rows(named=True):
        trace = traces[row["trace_id"]]
        completion = trace["completion_token_ids"]
        (teacher_prompt,) = prompts.filter(
            trace_id=row["trace_id"], layout=row["layout"], context_kind=row["context_kind"]
        )["prompt"].to_list()
        positions = np.arange(len(completion))
        teacher = completion_logprobs(tiny_causal_lm, teacher_prompt, completion)[positions, completion]
        student = completion_logprobs(tiny_causal_lm, trace["prompt_token_ids"], completion)[positions, completion]
        np.testing.assert_allclose(row["advantages"], teacher - student, atol=1e-4)
        assert np.abs(teacher - student).max() > 1e-3  # the contexts do change the model's log-probs


def samples(outcomes: dict[tuple[str, str], dict[str, list[int]]], correct_traces: set[str]) -> pl.DataFrame:
    rows = []
    for (layout, kind), per_trace in outcomes.items():
        for trace, results in per_trace.items():
            for i, ok in enumerate(results):
                rows.append(
                    {
                        "trace_id": trace, "problem_id": trace, "layout": layout, "context_kind": kind,
                        "original_correct": trace in correct_traces, "sample_idx": i, "completion_text": "",
                        "num_tokens": 1, "extracted_answer": None, "format_ok": ok == 1 or layout == "none",
                        "is_correct": bool(ok),
                    }
                )  # fmt: skip
    return pl.DataFrame(rows, schema=PREMISE_SAMPLES_SCHEMA)


def test_table_gives_accuracy_gaps_and_advantages_per_layout_and_kind():
    frame = samples(
        {
            ("none", "none"): {"a": [0, 0], "b": [0, 1], "c": [1, 1]},
            ("anchor", "critique"): {"a": [1, 1], "b": [1, 1], "c": [1, 0]},
            ("inline", "critique"): {"a": [0, 0], "b": [0, 0], "c": [1, 1]},
        },
        correct_traces={"c"},
    )
    copied = (pl.col("layout") == "anchor") & (pl.col("trace_id") == "a") & (pl.col("sample_idx") == 0)
    frame = frame.with_columns(format_ok=pl.when(copied).then(False).otherwise("format_ok"))  # right answer, no steps
    advantages = pl.DataFrame(
        {
            "trace_id": ["a", "c"], "problem_id": ["a", "c"], "layout": ["anchor", "anchor"],
            "context_kind": ["critique", "critique"], "original_correct": [False, True],
            "categories": [["pre_error", "first_wrong", "answer"], ["pre_error", "answer"]],
            "advantages": [[0.5, -1.0, -0.5], [-0.2, 0.1]],
        },
        schema_overrides={"advantages": pl.List(pl.Float32)},
    )  # fmt: skip
    table = premise_table(frame, advantages, resamples=200, seed=0)
    assert [(r["layout"], r["context_kind"]) for r in table] == [
        ("none", "none"),
        ("anchor", "critique"),
        ("inline", "critique"),
    ]
    none, anchor, inline = table
    assert none["originally_incorrect"]["mean"] == 0.25 and none["gap_originally_incorrect"] is None
    assert anchor["originally_incorrect"] == {"traces": 2, "mean": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    assert anchor["gap_originally_incorrect"]["mean"] == 0.75  # paired per trace: (1 - 0) and (1 - 0.5)
    assert anchor["gap_originally_correct"]["mean"] == -0.5
    assert inline["gap_originally_incorrect"]["mean"] == -0.25 and inline["advantages"] is None
    assert anchor["format_rate"] == round(4 / 6, 4)
    assert anchor["formatted"]["originally_incorrect"]["mean"] == 0.75  # a: 1 of 2 keeps the format, b: 2 of 2
    assert anchor["formatted"]["gap_originally_incorrect"]["mean"] == 0.5
    assert none["formatted"]["originally_incorrect"] == none["originally_incorrect"]
    cells = anchor["advantages"]
    assert cells["incorrect_first_wrong"] == {"tokens": 1, "mean": -1.0, "share_negative": 1.0}
    assert cells["incorrect_all"]["tokens"] == 3 and cells["incorrect_after_error"]["mean"] is None
    assert cells["correct_all"]["mean"] == pytest.approx(-0.05)


def _row(layout, kind, formatted_gap, correct_gap):
    def cell(mean, low, high):
        return {"traces": 10, "mean": mean, "ci_low": low, "ci_high": high}

    return {
        "layout": layout,
        "context_kind": kind,
        "gap_originally_correct": cell(*correct_gap),
        "formatted": {"gap_originally_incorrect": cell(*formatted_gap)},
    }


def test_the_layout_rule_counts_only_formatted_correct_re_solves():
    from pipeline.premise import rule_layout

    table = [
        _row("inline", "critique", (0.30, 0.10, 0.50), (0.0, -0.1, 0.1)),
        _row("anchor", "critique", (0.40, 0.25, 0.55), (0.0, -0.1, 0.1)),
        _row("anchor", "reference", (0.90, 0.80, 0.95), (0.0, -0.1, 0.1)),  # another kind: not counted
        _row("multi_turn", "critique", (0.60, -0.05, 0.90), (0.0, -0.1, 0.1)),  # CI crosses zero
        _row("anchor_example", "critique", (0.50, 0.30, 0.70), (-0.4, -0.6, -0.2)),  # hurts correct traces
    ]
    assert rule_layout(table) == "anchor"
    assert rule_layout(table[:1]) == "inline"
    assert rule_layout(table[3:]) is None
    assert rule_layout(table, kind="reference") == "anchor"
