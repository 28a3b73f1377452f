"""Stage ``check_premise``: does the solver do better with the teacher's context in its prompt?

Self-distillation rests on this premise: the same model, shown a context (the reference or the
critique of its own attempt), solves the problem more often than without it. The stage re-solves
the first seed's shared round-0 train traces with the base solver, ``premise_samples`` times each,
from the plain solver prompt (``none``) and from each teacher prompt, and reports accuracy overall
and split by whether the original trace was correct, with bootstrap CIs over traces.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.artifacts import (
    CONTEXTS_SCHEMA,
    PREMISE_SAMPLES_SCHEMA,
    PROBLEMS_SCHEMA,
    TRACES_SCHEMA,
    read_artifact,
    write_artifact,
    write_json,
)
from pipeline.config import EvaluateConfig
from pipeline.engines import Completion
from pipeline.evaluate import bootstrap_ci, model_label, sample_checkpoint
from pipeline.tasks.solver_format import parse_response
from pipeline.tasks.verify import verify_answer

log = logging.getLogger(__name__)
STAGE = "check_premise"
NO_CONTEXT = "none"


def premise_prompts(traces: pl.DataFrame, contexts: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per (trace, context kind) with the prompt to re-solve from; ``none`` is the solver prompt.

    Only traces that every kind has a context for are kept, so the kinds compare the same traces.
    """
    keep = set(traces["trace_id"])
    for frame in contexts.values():
        keep &= set(frame["trace_id"])
    base = traces.filter(pl.col("trace_id").is_in(sorted(keep))).select(
        "trace_id", "problem_id", pl.col("is_correct").alias("original_correct")
    )
    parts = [
        base.join(traces.select("trace_id", pl.col("prompt_token_ids").alias("prompt")), on="trace_id").with_columns(
            context_kind=pl.lit(NO_CONTEXT)
        )
    ]
    for kind, frame in contexts.items():
        prompts = frame.select("trace_id", pl.col("teacher_prompt_token_ids").alias("prompt"))
        parts.append(base.join(prompts, on="trace_id").with_columns(context_kind=pl.lit(kind)))
    return pl.concat(parts, how="diagonal").sort("context_kind", "trace_id")


def premise_samples_frame(
    prompts: pl.DataFrame, completions: list[list[Completion]], answers: Mapping[str, tuple[str, str]]
) -> pl.DataFrame:
    """One row per re-solve sample; ``answers`` maps problem_id to (answer, verifier)."""
    rows = []
    for row, group in zip(prompts.iter_rows(named=True), completions):
        answer, method = answers[row["problem_id"]]
        for sample_idx, completion in enumerate(group):
            parsed = parse_response(completion.text)
            rows.append(
                {
                    "trace_id": row["trace_id"],
                    "problem_id": row["problem_id"],
                    "context_kind": row["context_kind"],
                    "original_correct": row["original_correct"],
                    "sample_idx": sample_idx,
                    "completion_text": completion.text,
                    "num_tokens": len(completion.token_ids),
                    "extracted_answer": parsed.answer,
                    "format_ok": parsed.format_ok,
                    "is_correct": verify_answer(parsed.answer, answer, method=method),
                }
            )
    return pl.DataFrame(rows, schema=PREMISE_SAMPLES_SCHEMA)


def premise_summary(samples: pl.DataFrame, *, resamples: int, seed: int) -> dict[str, Any]:
    """Accuracy per context kind (all traces, originally incorrect, originally correct), with 95% CIs."""
    out: dict[str, Any] = {}
    order = [NO_CONTEXT] + sorted(set(samples["context_kind"]) - {NO_CONTEXT})
    for kind in order:
        group = samples.filter(pl.col("context_kind") == kind)
        entry: dict[str, Any] = {"format_rate": round(float(group["format_ok"].mean()), 4)}
        for name, subset in (
            ("all", group),
            ("originally_incorrect", group.filter(~pl.col("original_correct"))),
            ("originally_correct", group.filter(pl.col("original_correct"))),
        ):
            per_trace = subset.group_by("trace_id").agg(pl.col("is_correct").mean())["is_correct"].to_numpy()
            if len(per_trace) == 0:
                entry[name] = None
                continue
            mean, low, high = (round(float(v), 4) for v in bootstrap_ci(per_trace, resamples=resamples, seed=seed)[0])
            entry[name] = {"traces": len(per_trace), "mean": mean, "ci_low": low, "ci_high": high}
        out[kind] = entry
    return out


def check_premise(
    *,
    traces: Path,
    contexts: Mapping[str, Path],
    problems: Path,
    model: Path,
    samples_out: Path,
    summary_out: Path,
    run_seed: int,
    cfg: EvaluateConfig,
) -> dict[str, Any]:
    """Re-solve the round-0 traces' problems with and without each context; write samples and summary."""
    trace_frame = read_artifact(traces, schema=TRACES_SCHEMA, artifact="traces")
    context_frames = {k: read_artifact(p, schema=CONTEXTS_SCHEMA, artifact="contexts") for k, p in contexts.items()}
    train = read_artifact(problems, schema=PROBLEMS_SCHEMA, artifact="problems")
    answers = {row["problem_id"]: (row["answer"], row["verifier"]) for row in train.iter_rows(named=True)}
    prompts = premise_prompts(trace_frame, context_frames)
    completions, _, _ = sample_checkpoint(model, prompts["prompt"].to_list(), n=cfg.premise_samples, cfg=cfg)
    samples = premise_samples_frame(prompts, completions, answers)
    label = model_label(model)
    summary = {
        "seed": run_seed,
        "model": label,
        "samples_per_trace": cfg.premise_samples,
        "kinds": premise_summary(samples, resamples=cfg.bootstrap_resamples, seed=cfg.seed),
    }
    write_artifact(
        samples,
        samples_out,
        schema=PREMISE_SAMPLES_SCHEMA,
        artifact="premise_samples",
        stage=STAGE,
        params={"evaluate": dataclasses.asdict(cfg), "summary": summary},
        model=label,
    )
    write_json(summary, summary_out)
    for kind, entry in summary["kinds"].items():
        log.info("premise %s: accuracy %s (originally incorrect %s)", kind, entry["all"], entry["originally_incorrect"])
    return summary
