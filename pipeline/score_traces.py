"""Stage ``score_traces``: the student side of ``A_t``, scored once per traces file.

Every completion token's log-prob under the trace's own no-context solver prompt, by the teacher's
weights (the frozen base solver by default), so ``A_t = teacher - student`` is exact whatever engine
sampled the trace. It is the same for every context kind: one job scores a round's traces, and each
kind's ``precompute_teacher_logprobs`` job reads it instead of scoring it again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.artifacts import TRACE_SCORES_SCHEMA, TRACES_SCHEMA, model_label, read_artifact, write_artifact
from pipeline.config import EngineConfig
from pipeline.engines import TokenScores, run_engine, timing_stats

log = logging.getLogger(__name__)
STAGE = "score_traces"


def scoreable(traces: pl.DataFrame, *, max_len: int) -> pl.DataFrame:
    """The traces whose prompt + completion fit ``max_len`` and whose completion is not empty."""
    completion = pl.col("completion_token_ids").list.len()
    return traces.filter((completion > 0) & (pl.col("prompt_token_ids").list.len() + completion <= max_len))


def trace_scores_frame(rows: pl.DataFrame, scores: Sequence[TokenScores]) -> pl.DataFrame:
    """The stored artifact: one row per scored trace; the pure core of the stage."""
    return pl.DataFrame(
        {
            "trace_id": rows["trace_id"],
            "student_token_logprobs": pl.Series([s.token_logprobs for s in scores], dtype=pl.List(pl.Float32)),
        },
        schema=TRACE_SCORES_SCHEMA,
    )


def score_traces(*, traces: Path, model: Path, out: Path, cfg: EngineConfig) -> dict[str, Any]:
    """Score every trace in ``traces`` on its own prompt with ``model``; write ``out``."""
    frame = read_artifact(traces, schema=TRACES_SCHEMA, artifact="traces")
    rows = scoreable(frame, max_len=cfg.max_model_len)
    prompts, completions = rows["prompt_token_ids"].to_list(), rows["completion_token_ids"].to_list()
    scores, startup_s, seconds = run_engine(
        cfg,
        model,
        lambda engine: engine.score(prompts, completions, top_k=1),
        seed=0,
        max_logprobs=1,
        where="teacher.engine",
    )
    tokens = int(rows["completion_token_ids"].list.len().sum())
    stats = {
        "traces": rows.height,
        "not_scored": frame.height - rows.height,
        "completion_tokens": tokens,
        **timing_stats(startup_s, seconds, tokens, work="score"),
    }
    write_artifact(
        trace_scores_frame(rows, scores),
        out,
        schema=TRACE_SCORES_SCHEMA,
        artifact="trace_scores",
        stage=STAGE,
        params={**dataclasses.asdict(cfg), "stats": stats},
        model=model_label(model),
    )
    log.info("trace scores: %s", stats)
    return stats
