"""Stage ``precompute_teacher_logprobs``: the self-teacher's distribution, stored once.

For every completion token of every trace it stores the teacher's top-k ids and log-probs, the
realised token's log-prob and the tail log-mass ``log(1 - sum top-k p)``, scored on the teacher
prompt + the completion at exactly the completion's positions. Beside them it stores the
student-side log-prob of each realised token under the no-context prompt, scored once per traces
file by ``score_traces`` with the same weights and shared by every context kind, so
``A_t = teacher - student`` is exact whatever engine sampled the traces. Every loss variant and the
advantage analysis read this one artifact; nothing recomputes the teacher.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.artifacts import (
    CONTEXTS_SCHEMA,
    CRITIQUES_SCHEMA,
    TRACE_SCORES_SCHEMA,
    TRACES_SCHEMA,
    model_label,
    read_artifact,
    teacher_logprobs_schema,
    write_artifact,
)
from pipeline.config import TeacherConfig
from pipeline.engines import Engine, TokenScores, load_tokenizer, run_engine, timing_stats
from pipeline.tasks.token_spans import categorise_tokens, token_char_spans

log = logging.getLogger(__name__)
STAGE = "precompute_teacher_logprobs"


def fit_to_window(
    prompt: Sequence[int], completion: Sequence[int], *, max_len: int, policy: str
) -> tuple[list[int] | None, int]:
    """Apply the overflow policy: (prompt to score, tokens dropped); None prompt means skip the trace.

    ``truncate_left`` drops the prompt's first tokens (the instructions and example, far from the
    context and the completion); ``skip`` drops the trace. A completion that alone fills the window
    is always skipped.
    """
    excess = len(prompt) + len(completion) - max_len
    if excess <= 0:
        return list(prompt), 0
    if policy == "skip" or excess >= len(prompt):
        return None, 0
    return list(prompt[excess:]), excess


def _list_of_arrays(blocks: Sequence[np.ndarray], dtype: pl.DataType) -> pl.Series:
    """A List(Array) column from per-row [T, k] blocks, without a Python loop over tokens."""
    k = blocks[0].shape[1] if blocks else 1
    lengths = [len(b) for b in blocks]
    flat = np.concatenate(blocks) if blocks else np.zeros((0, k))
    rows = np.repeat(np.arange(len(blocks)), lengths)
    frame = pl.DataFrame({"row": rows, "x": pl.Series(flat).cast(pl.Array(dtype, k))})
    grouped = frame.group_by("row", maintain_order=True).agg("x")
    out = pl.DataFrame({"row": np.arange(len(blocks))}).join(grouped, on="row", how="left")["x"]
    return out.fill_null(pl.lit([], dtype=pl.List(pl.Array(dtype, k))))


def teacher_frame(
    rows: pl.DataFrame, teacher: Sequence[TokenScores], dropped: Sequence[int], *, k: int, dtype: str
) -> pl.DataFrame:
    """Assemble the stored artifact from scores; the pure core of the stage.

    ``rows`` holds the ids, ``is_correct``, ``completion_token_ids``, ``token_categories`` and the
    student side, ``student_token_logprobs``.
    """
    schema = teacher_logprobs_schema(k, dtype)
    float_type = schema["topk_logprobs"].inner.inner  # type: ignore[union-attr]
    return pl.DataFrame(
        {
            "trace_id": rows["trace_id"],
            "problem_id": rows["problem_id"],
            "condition": rows["condition"],
            "round": rows["round"],
            "context_kind": rows["context_kind"],
            "is_correct": rows["is_correct"],
            "completion_token_ids": rows["completion_token_ids"],
            "token_categories": rows["token_categories"],
            "topk_ids": _list_of_arrays([s.topk_ids for s in teacher], pl.Int32),
            "topk_logprobs": _list_of_arrays([s.topk_logprobs for s in teacher], float_type),
            "teacher_token_logprobs": pl.Series([s.token_logprobs for s in teacher], dtype=pl.List(pl.Float32)),
            "tail_logmass": pl.Series([s.tail_logmass for s in teacher], dtype=pl.List(pl.Float32)),
            "student_token_logprobs": rows["student_token_logprobs"],
            "prompt_tokens_dropped": pl.Series(list(dropped), dtype=pl.Int32),
        },
        schema=schema,
    )


def score_rows(engine: Engine, rows: pl.DataFrame, cfg: TeacherConfig) -> tuple[pl.DataFrame, dict[str, int]]:
    """Score the teacher side of each joined context/trace/student-score row, applying the policies."""
    keep, teacher_prompts, dropped, counts = [], [], [], {"empty_completion": 0, "overflow_skipped": 0, "truncated": 0}
    for i, row in enumerate(rows.iter_rows(named=True)):
        completion = row["completion_token_ids"]
        if not completion:
            counts["empty_completion"] += 1
            continue
        prompt, cut = fit_to_window(
            row["teacher_prompt_token_ids"], completion, max_len=cfg.engine.max_model_len, policy=cfg.overflow
        )
        if prompt is None or len(row["prompt_token_ids"]) + len(completion) > cfg.engine.max_model_len:
            counts["overflow_skipped"] += 1
            continue
        student = row["student_token_logprobs"]
        if student is None or len(student) != len(completion):
            found = "none" if student is None else f"{len(student)} for its {len(completion)} completion tokens"
            raise ValueError(
                f"trace {row['trace_id']}: the student-side scores (score_traces) do not match its traces "
                f"({found}); were they scored on another traces file or teacher.engine.max_model_len?"
            )
        counts["truncated"] += cut > 0
        keep.append(i)
        teacher_prompts.append(prompt)
        dropped.append(cut)
    kept = rows[keep]
    completions = kept["completion_token_ids"].to_list()
    teacher = engine.score(teacher_prompts, completions, top_k=cfg.top_k)
    return teacher_frame(kept, teacher, dropped, k=min(cfg.top_k, _vocab(teacher)), dtype=cfg.logprob_dtype), counts


def _vocab(scores: Sequence[TokenScores]) -> int:
    return scores[0].topk_ids.shape[1] if scores else 10**9


def token_categories(rows: pl.DataFrame, tokenizer: Any) -> pl.Series:
    """Each row's per-token categories relative to the critic's first wrong step."""
    out = []
    for row in rows.iter_rows(named=True):
        text = row["completion_text"]
        spans = token_char_spans(row["completion_token_ids"], text, tokenizer)
        out.append(categorise_tokens(spans, text, row["step_spans"], row["first_wrong_step"]))
    return pl.Series("token_categories", out, dtype=pl.List(pl.String))


def precompute_teacher_logprobs(
    *,
    contexts: Path,
    traces: Path,
    critiques: Path,
    student_scores: Path,
    model: Path,
    out: Path,
    cfg: TeacherConfig,
) -> dict[str, Any]:
    """Score every (context, trace) pair with the frozen teacher ``model``; write ``out``.

    ``student_scores`` is ``score_traces``' artifact for the same traces and weights.
    """
    context_frame = read_artifact(contexts, schema=CONTEXTS_SCHEMA, artifact="contexts")
    trace_frame = read_artifact(traces, schema=TRACES_SCHEMA, artifact="traces")
    critique_frame = read_artifact(critiques, schema=CRITIQUES_SCHEMA, artifact="critiques")
    scores_frame = read_artifact(student_scores, schema=TRACE_SCORES_SCHEMA, artifact="trace_scores")
    rows = context_frame.join(
        trace_frame.select(
            "trace_id", "prompt_token_ids", "completion_token_ids", "completion_text", "step_spans", "is_correct"
        ),
        on="trace_id",
        how="left",
    ).join(critique_frame.select("trace_id", "first_wrong_step"), on="trace_id", how="left")
    rows = rows.join(scores_frame, on="trace_id", how="left")
    rows = rows.with_columns(token_categories(rows, load_tokenizer(model)))
    (frame, counts), startup_s, seconds = run_engine(
        cfg.engine,
        model,
        lambda engine: score_rows(engine, rows, cfg),
        seed=0,
        max_logprobs=cfg.top_k,
        where="teacher.engine",
    )
    tokens = int(frame["completion_token_ids"].list.len().sum())
    stats = {
        "traces": frame.height,
        **counts,
        "completion_tokens": tokens,
        **timing_stats(startup_s, seconds, tokens, work="score"),
    }
    write_artifact(
        frame,
        out,
        schema=teacher_logprobs_schema(frame.schema["topk_ids"].inner.size, cfg.logprob_dtype),  # type: ignore[union-attr]
        artifact="teacher_logprobs",
        stage=STAGE,
        params={**dataclasses.asdict(cfg), "stats": stats},
        model=model_label(model),
    )
    log.info("teacher log-probs: %s", stats)
    return stats
