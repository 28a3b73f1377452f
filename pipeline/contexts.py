"""Stage ``build_teacher_contexts``: what the self-teacher sees for each trace.

The teacher's user turn is the solver's own user turn with a context block inserted before its
closing ``Solution:`` line (appended when there is none), in the layout of OPSD and the premise
check. Context kinds:

- ``reference``: the problem's reference solution;
- ``critique``: the critic's step-aligned rewrite of this very trace (StepAlignFB);
- ``critique_full_quote``: the whole earlier attempt, wrong step included, plus which step is wrong;
- ``critique_labels_only``: which step is wrong and its correction, without the trace.

``grpo`` has no teacher. The core, :func:`build_contexts`, is a pure transform on frames.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.artifacts import (
    CONTEXTS_SCHEMA,
    CRITIQUES_SCHEMA,
    PROBLEMS_SCHEMA,
    TRACES_SCHEMA,
    read_artifact,
    write_artifact,
)
from pipeline.config import ContextsConfig, ContextTemplates
from pipeline.tasks.critique_qa import answer_leak
from pipeline.tasks.solver_format import render_chat_prompt

log = logging.getLogger(__name__)
STAGE = "build_teacher_contexts"
CONTEXT_KINDS = ("reference", "critique", "critique_full_quote", "critique_labels_only")
_SOLUTION_CUE = "\nSolution:"


def insert_context(user_message: str, context: str) -> str:
    """The solver's user turn with ``context`` inserted before its final ``Solution:`` cue."""
    cut = user_message.rfind(_SOLUTION_CUE)
    if cut < 0:
        return f"{user_message}\n\n{context}"
    return f"{user_message[:cut]}\n\n{context}{user_message[cut:]}"


def verdict_line(row: dict[str, Any], templates: ContextTemplates) -> str:
    """'Step k is wrong; it should be ...' from a critique row, or the all-correct line."""
    k = row["first_wrong_step"]
    if k is None or k > len(row["critique_steps"] or []):
        return templates.all_correct
    return templates.wrong_step.format(step=k, correction=row["critique_steps"][k - 1])


def context_text(kind: str, row: dict[str, Any], templates: ContextTemplates) -> str | None:
    """The context block of one kind for one joined trace/critique/problem row (None: no context)."""
    if kind == "reference":
        return templates.reference.format(reference=row["reference"]) if row["reference"] else None
    if kind == "critique":
        return templates.critique.format(critique=row["critique_text"]) if row["critique_text"] else None
    if row["critique_text"] is None and row["parse_error"] is not None:
        return None  # the critic gave nothing usable to label
    if kind == "critique_full_quote":
        attempt = row["completion_text"].strip()
        return templates.critique_full_quote.format(attempt=attempt, verdict=verdict_line(row, templates))
    if kind == "critique_labels_only":
        return templates.critique_labels_only.format(verdict=verdict_line(row, templates))
    raise ValueError(f"unknown context kind {kind!r}; expected one of {CONTEXT_KINDS}")


def build_contexts(
    traces: pl.DataFrame,
    critiques: pl.DataFrame,
    problems: pl.DataFrame,
    *,
    kind: str,
    cfg: ContextsConfig,
    tokenizer: Any,
) -> tuple[pl.DataFrame, int]:
    """Teacher prompts of one kind for every trace; returns (contexts, traces without a context)."""
    joined = traces.join(
        critiques.select("trace_id", "critique_text", "critique_steps", "first_wrong_step", "parse_error"),
        on="trace_id",
        how="left",
    ).join(problems.select("problem_id", "reference", "answer"), on="problem_id", how="left")
    rows, skipped = [], 0
    for row in joined.iter_rows(named=True):
        context = context_text(kind, row, cfg.templates)
        if context is None:
            skipped += 1
            continue
        prompt = render_chat_prompt(
            tokenizer, insert_context(row["user_message"], context), enable_thinking=cfg.enable_thinking
        )
        rows.append(
            {
                "trace_id": row["trace_id"],
                "problem_id": row["problem_id"],
                "condition": kind,
                "round": row["round"],
                "context_kind": kind,
                "context_text": context,
                "teacher_prompt": prompt,
                "teacher_prompt_token_ids": tokenizer(prompt, add_special_tokens=False)["input_ids"],
                "template_version": cfg.templates.version,
                "answer_leak": answer_leak(context, row["answer"]),
            }
        )
    return pl.DataFrame(rows, schema=CONTEXTS_SCHEMA), skipped


def build_teacher_contexts(
    *, traces: Path, critiques: Path, problems: Path, model: Path, out: Path, kind: str, cfg: ContextsConfig
) -> dict[str, Any]:
    """Write the teacher contexts of ``kind`` for one traces file."""
    from transformers import AutoTokenizer

    frame, skipped = build_contexts(
        read_artifact(traces, schema=TRACES_SCHEMA, artifact="traces"),
        read_artifact(critiques, schema=CRITIQUES_SCHEMA, artifact="critiques"),
        read_artifact(problems, schema=PROBLEMS_SCHEMA, artifact="problems"),
        kind=kind,
        cfg=cfg,
        tokenizer=AutoTokenizer.from_pretrained(model),
    )
    stats = {
        "contexts": frame.height,
        "skipped_no_context": skipped,
        "leak_rate": float(frame["answer_leak"].mean() or 0.0),
        "mean_prompt_tokens": float(frame["teacher_prompt_token_ids"].list.len().mean() or 0.0),
    }
    write_artifact(
        frame,
        out,
        schema=CONTEXTS_SCHEMA,
        artifact="contexts",
        stage=STAGE,
        params={**dataclasses.asdict(cfg), "kind": kind, "stats": stats},
        model=model.name,
    )
    log.info("%s contexts: %s", kind, stats)
    return stats
