"""Stage ``build_teacher_contexts``: what the self-teacher sees for each trace.

Each trace gets the teacher prompt of one context kind (the arm's: ``reference``, ``critique`` or an
ablation) in the configured layout (``contexts.layout``); both are described in
:mod:`pipeline.tasks.teacher_prompts`. ``grpo`` has no teacher. The core, :func:`build_contexts`, is
a pure transform on frames.
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
from pipeline.config import ContextsConfig, PromptConfig
from pipeline.engines import load_tokenizer
from pipeline.tasks.critique_qa import answer_leak
from pipeline.tasks.teacher_prompts import context_body, join_feedback, render_teacher_chat, teacher_messages

log = logging.getLogger(__name__)
STAGE = "build_teacher_contexts"


def build_contexts(
    traces: pl.DataFrame,
    critiques: pl.DataFrame,
    problems: pl.DataFrame,
    *,
    condition: str,
    kind: str,
    cfg: ContextsConfig,
    prompt: PromptConfig,
    tokenizer: Any,
) -> tuple[pl.DataFrame, int]:
    """Teacher prompts of one kind for every trace; returns (contexts, traces without a context).

    ``condition`` names whose contexts these are: the kind itself at round 0 (shared by every arm of
    that kind), the arm (a variant included) at later rounds.
    """
    rows, skipped = [], 0
    for row in join_feedback(traces, critiques, problems).iter_rows(named=True):
        context = context_body(kind, row, cfg.templates)
        if context is None:
            skipped += 1
            continue
        messages = teacher_messages(cfg.layout, context=context, row=row, templates=cfg.templates, prompt=prompt)
        teacher_prompt = render_teacher_chat(tokenizer, messages, enable_thinking=cfg.enable_thinking)
        rows.append(
            {
                "trace_id": row["trace_id"],
                "problem_id": row["problem_id"],
                "condition": condition,
                "round": row["round"],
                "context_kind": kind,
                "context_text": context,
                "layout": cfg.layout,
                "teacher_prompt": teacher_prompt,
                "teacher_prompt_token_ids": tokenizer(teacher_prompt, add_special_tokens=False)["input_ids"],
                "template_version": cfg.templates.version,
                "answer_leak": answer_leak(context, row["answer"]),
            }
        )
    return pl.DataFrame(rows, schema=CONTEXTS_SCHEMA), skipped


def build_teacher_contexts(
    *,
    traces: Path,
    critiques: Path,
    problems: Path,
    model: Path,
    out: Path,
    condition: str,
    kind: str,
    cfg: ContextsConfig,
    prompt: PromptConfig,
) -> dict[str, Any]:
    """Write the teacher contexts of ``kind`` for one traces file (see :func:`build_contexts`)."""
    frame, skipped = build_contexts(
        read_artifact(traces, schema=TRACES_SCHEMA, artifact="traces"),
        read_artifact(critiques, schema=CRITIQUES_SCHEMA, artifact="critiques"),
        read_artifact(problems, schema=PROBLEMS_SCHEMA, artifact="problems"),
        condition=condition,
        kind=kind,
        cfg=cfg,
        prompt=prompt,
        tokenizer=load_tokenizer(model),
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
        params={
            **dataclasses.asdict(cfg),
            "prompt": dataclasses.asdict(prompt),
            "condition": condition,
            "kind": kind,
            "stats": stats,
        },  # fmt: skip
        model=model.name,
    )
    log.info("%s contexts: %s", kind, stats)
    return stats
