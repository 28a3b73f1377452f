"""Artifact schemas: every Parquet artifact's declared ``pl.Schema``, the row keys checked on read, and
the schema check itself (:class:`SchemaError` names every missing, extra or mistyped column)."""

from __future__ import annotations

import polars as pl

SCHEMA_VERSION = 1

STEP_STRUCT = pl.Struct({"a": pl.Int64, "op": pl.String, "b": pl.Int64, "result": pl.Int64})

PROBLEMS_SCHEMA = pl.Schema(
    {
        "problem_id": pl.String,
        "split": pl.String,
        "question": pl.String,
        "answer": pl.String,
        "reference": pl.String,
        "source": pl.String,
        # How answers are checked: "exact" (numeric) or "math" (math-verify).
        "verifier": pl.String,
        "num_steps": pl.Int32,
        # Ground-truth chain for synthetic tasks; empty for loaded datasets.
        "steps": pl.List(STEP_STRUCT),
    }
)

SPAN_STRUCT = pl.Struct({"number": pl.Int32, "start": pl.Int32, "end": pl.Int32})

# One row per sampled completion. Token-aligned lists have the completion's length.
TRACES_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,  # "{condition}:{round}:{problem_id}:{sample_idx}"
        "problem_id": pl.String,
        "condition": pl.String,
        "round": pl.Int32,
        "sample_idx": pl.Int32,
        "user_message": pl.String,  # the solver's user turn, before the chat template
        "prompt": pl.String,
        "prompt_token_ids": pl.List(pl.Int32),
        "completion_text": pl.String,
        "completion_token_ids": pl.List(pl.Int32),
        "completion_logprobs": pl.List(pl.Float32),  # sampled tokens, temperature-1 log-probs
        "finish_reason": pl.String,  # "stop" or "length"
        "step_spans": pl.List(SPAN_STRUCT),  # character spans of <step_k> tags in completion_text
        "extracted_answer": pl.String,
        "format_ok": pl.Boolean,
        "is_correct": pl.Boolean,
    }
)

# One row per trace: the critic's verdict and its step-aligned rewrite, plus QA.
CRITIQUES_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,
        "problem_id": pl.String,
        "condition": pl.String,
        "round": pl.Int32,
        "verdict": pl.String,  # correct | missing_justification | truncated | wrong
        "reward": pl.Float32,  # 1.0 if the final answer is right, else 0.0
        "first_wrong_step": pl.Int32,  # 1-based; null when no step is wrong
        "step_verdicts": pl.List(pl.Boolean),  # per solver step: before the first error?
        "critique_text": pl.String,  # the rewrite in the solver's format (null if skipped)
        "critique_steps": pl.List(pl.String),
        "parse_error": pl.String,  # null, or why the critic's output was unusable
        "fallback": pl.String,  # null, or the policy used instead (reference | skip)
        "critic": pl.String,  # oracle | llm
        "critic_model": pl.String,
        "prompt_version": pl.String,
        "alignment_score": pl.Float32,  # share of pre-error steps reproduced verbatim (null if none)
        "first_changed_step": pl.Int32,  # 1-based first step the rewrite changes (null if none)
        "answer_leak": pl.Boolean,  # does the context state the final answer before deriving it?
        "rewrite_correct": pl.Boolean,  # does the rewrite end in the ground-truth answer? (null: no rewrite)
        "critic_output": pl.String,  # llm: the critic's raw output, thinking included (null: oracle, reward only)
    }
)

# One row per trace and context kind: the self-teacher's prompt.
CONTEXTS_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,
        "problem_id": pl.String,
        "condition": pl.String,
        "round": pl.Int32,
        "context_kind": pl.String,  # reference | critique | critique_full_quote | critique_labels_only
        "layout": pl.String,  # inline | anchor | anchor_example | multi_turn (pipeline.tasks.teacher_prompts)
        "context_text": pl.String,  # the context's body, as placed by the layout
        "teacher_prompt": pl.String,
        "teacher_prompt_token_ids": pl.List(pl.Int32),
        "template_version": pl.String,
        "answer_leak": pl.Boolean,
    }
)

# One row per optimizer step of distill_student or train_grpo.
TRAIN_LOG_SCHEMA = pl.Schema(
    {
        "step": pl.Int32,
        "epoch": pl.Int32,
        "loss": pl.Float32,
        "kl": pl.Float32,  # distillation: forward KL to the teacher; GRPO: k3 KL to the initial policy
        "grad_norm": pl.Float32,
        "lr": pl.Float32,
        "teacher_topk_mass": pl.Float32,  # distillation: mean teacher mass inside the stored top-k
        "is_ratio_mean": pl.Float32,  # importance ratio current / generation-time, over tokens
        "is_ratio_max": pl.Float32,
        "is_clipped_frac": pl.Float32,
        "mean_reward": pl.Float32,  # GRPO only
        "student_entropy": pl.Float32,  # mean over the batch's completion tokens, full vocabulary (nats)
        "teacher_entropy": pl.Float32,  # distillation: the target's, on its top-k + tail support (a lower bound)
        "student_support_entropy": pl.Float32,  # distillation: the student's on that same support
        "tokens": pl.Int32,  # completion tokens processed
        "loss_tokens": pl.Int32,  # of which carried loss (distill.token_mask and friends)
        "tokens_per_s": pl.Float32,
    }
)

# One row per evaluation sample of one checkpoint (evaluate).
EVAL_SAMPLES_SCHEMA = pl.Schema(
    {
        "problem_id": pl.String,
        "condition": pl.String,  # base, or the arm whose student this is
        "round": pl.Int32,
        "seed": pl.Int32,  # the run seed
        "sample_idx": pl.Int32,
        "completion_text": pl.String,
        "num_tokens": pl.Int32,
        "sum_logprob": pl.Float64,  # sum of the sampled tokens' temperature-1 log-probs (entropy estimate)
        "finish_reason": pl.String,
        "extracted_answer": pl.String,
        "answer_key": pl.String,  # the answer normalised by the problem's verifier (Maj@n votes on it)
        "format_ok": pl.Boolean,
        "is_correct": pl.Boolean,
    }
)

# One row per re-solve sample of check_premise: a round-0 trace's problem, with one context kind.
PREMISE_SAMPLES_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,
        "problem_id": pl.String,
        "layout": pl.String,  # the teacher prompt's layout; none for the plain solver prompt
        "context_kind": pl.String,  # none (the plain solver prompt), reference, critique, ...
        "original_correct": pl.Boolean,  # was the round-0 trace itself correct?
        "sample_idx": pl.Int32,
        "completion_text": pl.String,
        "num_tokens": pl.Int32,
        "extracted_answer": pl.String,
        "format_ok": pl.Boolean,
        "is_correct": pl.Boolean,
    }
)
PREMISE_ADVANTAGES_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,
        "problem_id": pl.String,
        "layout": pl.String,
        "context_kind": pl.String,
        "original_correct": pl.Boolean,
        "categories": pl.List(pl.String),  # per completion token (pipeline.tasks.token_spans.CATEGORIES)
        "advantages": pl.List(pl.Float32),  # per completion token: A_t = teacher - student log-prob
    }
)

REJECTS_SCHEMA = pl.Schema(
    {
        "source": pl.String,
        "row_index": pl.Int64,
        "reason": pl.String,
        "question": pl.String,
        "answer": pl.String,
    }
)


# One row per (trace, context kind); the three lists have the completion's length.
ADVANTAGE_TOKENS_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,
        "problem_id": pl.String,
        "context_kind": pl.String,
        "is_correct": pl.Boolean,
        "first_wrong_step": pl.Int32,  # the critic's, 1-based among the solver's steps; null if none
        "tokens": pl.List(pl.String),  # decoded pieces; they concatenate to completion_text
        "categories": pl.List(pl.String),  # one of CATEGORIES per token
        "advantages": pl.List(pl.Float32),  # A_t = teacher - student log-prob of the sampled token
    }
)

# One row per (context kind, correctness, category), category "all" included; token-weighted.
ADVANTAGE_AGGREGATES_SCHEMA = pl.Schema(
    {
        "context_kind": pl.String,
        "correctness": pl.String,  # correct | incorrect
        "category": pl.String,  # one of CATEGORIES, or all
        "n_traces": pl.Int32,  # traces with at least one token in the category
        "n_tokens": pl.Int64,
        "mean_advantage": pl.Float64,  # null when n_tokens is 0
        "share_negative": pl.Float64,  # share of tokens with A_t < 0
        "mean_abs_advantage": pl.Float64,
    }
)


# One row per scored trace (score_traces): the student side of A_t, shared by every context kind.
TRACE_SCORES_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,
        # per completion token: its log-prob under the trace's own no-context prompt, by the teacher's weights
        "student_token_logprobs": pl.List(pl.Float32),
    }
)


def teacher_logprobs_schema(k: int, dtype: str = "float32") -> pl.Schema:
    """One row per trace; every list column has the completion's length."""
    float_type = pl.Float16 if dtype == "float16" else pl.Float32
    return pl.Schema(
        {
            "trace_id": pl.String,
            "problem_id": pl.String,
            "condition": pl.String,
            "round": pl.Int32,
            "context_kind": pl.String,
            "is_correct": pl.Boolean,  # the trace's answer is right (distill.skip_correct reads it)
            "completion_token_ids": pl.List(pl.Int32),
            # per token: pre_error | first_wrong | after_error | answer, from the critic's first wrong
            # step (pipeline.tasks.token_spans); distill.token_mask reads it
            "token_categories": pl.List(pl.String),
            "topk_ids": pl.List(pl.Array(pl.Int32, k)),
            "topk_logprobs": pl.List(pl.Array(float_type, k)),
            "teacher_token_logprobs": pl.List(pl.Float32),
            "tail_logmass": pl.List(pl.Float32),
            "student_token_logprobs": pl.List(pl.Float32),
            "prompt_tokens_dropped": pl.Int32,  # teacher prompt tokens cut by the overflow policy
        }
    )


# select_problems: one row per base-solver sample of a candidate problem (Avg@n is computed from these).
SELECTION_SAMPLES_SCHEMA = pl.Schema(
    {
        "problem_id": pl.String,
        "split": pl.String,  # the candidate's split (train or eval)
        "sample_idx": pl.Int32,
        "completion_text": pl.String,
        "num_tokens": pl.Int32,
        "finish_reason": pl.String,
        "extracted_answer": pl.String,
        "format_ok": pl.Boolean,
        "is_correct": pl.Boolean,
    }
)

# select_problems: one row per candidate, the critic's own attempt at the problem (LLM critic only).
CRITIC_ANSWERS_SCHEMA = pl.Schema(
    {
        "problem_id": pl.String,
        "split": pl.String,
        "critic_output": pl.String,  # raw, thinking included
        "num_tokens": pl.Int32,
        "finish_reason": pl.String,
        "parse_error": pl.String,  # null, think_only or no_answer
        "extracted_answer": pl.String,
        "is_correct": pl.Boolean,
    }
)

# select_problems: every candidate that was not kept, with its per-problem statistics and why.
DROPPED_SCHEMA = pl.Schema(
    {
        **PROBLEMS_SCHEMA,
        "samples": pl.Int32,  # n of Avg@n
        "correct": pl.Int32,
        "avg": pl.Float64,
        "format_rate": pl.Float64,
        "critic_correct": pl.Boolean,
        "reasons": pl.List(pl.String),  # every filter it fails: too_easy, too_hard, critic_fails, format, over_cap
        "reason": pl.String,  # the first of them
    }
)


class SchemaError(ValueError):
    """A frame does not match the schema declared for its artifact."""


class ArtifactReadError(ValueError):
    """An artifact file is missing, truncated, not Parquet, or repeats a row's key."""


# Columns that identify a row of an artifact: a file that repeats a key is rejected when read.
ARTIFACT_KEYS: dict[str, tuple[str, ...]] = {
    "problems": ("problem_id",),
    "traces": ("trace_id",),
    "critiques": ("trace_id",),
    "contexts": ("trace_id", "context_kind"),
    "teacher_logprobs": ("trace_id", "context_kind"),
    "trace_scores": ("trace_id",),
    "eval_samples": ("problem_id", "sample_idx"),
    "selection_samples": ("problem_id", "sample_idx"),
    "critic_answers": ("problem_id",),
}


def check_schema(actual: pl.Schema, schema: pl.Schema, *, artifact: str) -> None:
    """Raise :class:`SchemaError` naming every missing, extra or mistyped column of ``actual``."""
    problems = []
    for name, dtype in schema.items():
        if name not in actual:
            problems.append(f"missing column {name!r} ({dtype})")
        elif actual[name] != dtype:
            problems.append(f"column {name!r} is {actual[name]}, expected {dtype}")
    problems += [f"unexpected column {name!r}" for name in actual if name not in schema]
    if problems:
        raise SchemaError(f"{artifact}: " + "; ".join(problems))


def validate_frame(frame: pl.DataFrame, schema: pl.Schema, *, artifact: str) -> None:
    """Raise :class:`SchemaError` naming every missing, extra or mistyped column."""
    check_schema(frame.schema, schema, artifact=artifact)
