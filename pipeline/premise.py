"""Stage ``check_premise``: does the self-teacher know more than the student, and where?

Self-distillation rests on one premise: the same model, shown a context (the reference, or the
critique of its own attempt), does better than without it. No gap, no gain. This stage measures it
on the first seed's shared round-0 *train* traces, for every configured (layout, context kind):

- re-solve accuracy of the base solver from the teacher prompt (``samples`` per trace), on
  originally incorrect and originally correct traces, with bootstrap CIs over traces;
- the gap over no context (the plain solver prompt), paired per trace, with its CI;
- the format rate of the re-solves;
- the per-token advantage ``A_t = log p(y_t | teacher prompt) - log p(y_t | solver prompt)`` on the
  trace's own tokens, by category (before the critic's first wrong step, in it, after it, the answer).

It writes every re-solve (Parquet), the per-token A_t (Parquet) and the table (JSON), which the
report shows first. The default layout is chosen from this table (docs/experiments/premise_layout_study.md).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.artifacts import (
    CRITIQUES_SCHEMA,
    PREMISE_ADVANTAGES_SCHEMA,
    PREMISE_SAMPLES_SCHEMA,
    PROBLEMS_SCHEMA,
    TRACES_SCHEMA,
    model_label,
    read_artifact,
    write_artifact,
    write_json,
)
from pipeline.config import ContextTemplates, PremiseConfig, PromptConfig
from pipeline.engines import Completion, Engine, SamplingConfig, engine_from_config, load_tokenizer, sample_model
from pipeline.metrics import bootstrap_ci
from pipeline.tasks.solver_format import parse_response
from pipeline.tasks.teacher_prompts import context_body, join_feedback, render_teacher_chat, teacher_messages
from pipeline.tasks.token_spans import CATEGORIES, categorise_tokens, token_char_spans
from pipeline.tasks.verify import verify_answer

log = logging.getLogger(__name__)
STAGE = "check_premise"
NO_CONTEXT = "none"
SPLITS = ("all", "originally_incorrect", "originally_correct")


def premise_prompts(
    joined: pl.DataFrame,
    *,
    layouts: Sequence[str],
    kinds: Sequence[str],
    templates: ContextTemplates,
    prompt: PromptConfig,
    tokenizer: Any,
    enable_thinking: bool,
) -> pl.DataFrame:
    """One row per trace and (layout, kind), plus the plain solver prompt as (none, none).

    ``joined`` is traces joined with their critiques and problems
    (:func:`pipeline.tasks.teacher_prompts.join_feedback`). Only traces that every kind has a context
    for are kept, so every row of the table compares the same traces.
    """
    rows = []
    for row in joined.sort("trace_id").iter_rows(named=True):
        bodies = {kind: context_body(kind, row, templates) for kind in kinds}
        if any(body is None for body in bodies.values()):
            continue
        base = {"trace_id": row["trace_id"], "problem_id": row["problem_id"], "original_correct": row["is_correct"]}
        rows.append({**base, "layout": NO_CONTEXT, "context_kind": NO_CONTEXT, "prompt": row["prompt_token_ids"]})
        for layout in layouts:
            for kind, body in bodies.items():
                messages = teacher_messages(layout, context=body, row=row, templates=templates, prompt=prompt)
                text = render_teacher_chat(tokenizer, messages, enable_thinking=enable_thinking)
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                rows.append({**base, "layout": layout, "context_kind": kind, "prompt": ids})
    schema = {
        "trace_id": pl.String,
        "problem_id": pl.String,
        "original_correct": pl.Boolean,
        "layout": pl.String,
        "context_kind": pl.String,
        "prompt": pl.List(pl.Int32),
    }
    return pl.DataFrame(rows, schema=schema)


def premise_samples_frame(
    prompts: pl.DataFrame, completions: Sequence[Sequence[Completion]], answers: Mapping[str, tuple[str, str]]
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
                    "layout": row["layout"],
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


def score_advantages(engine: Engine, prompts: pl.DataFrame, traces: pl.DataFrame, tokenizer: Any) -> pl.DataFrame:
    """A_t per completion token of each trace under every (layout, kind) prompt, with token categories.

    ``traces`` holds the round-0 traces joined with the critique's ``first_wrong_step``. The student
    side (the plain solver prompt) is scored once per trace and shared by every prompt.
    """
    labelled = traces.filter(pl.col("trace_id").is_in(prompts["trace_id"].unique().to_list())).sort("trace_id")
    completion = {r["trace_id"]: r["completion_token_ids"] for r in labelled.iter_rows(named=True)}
    categories = {}
    for r in labelled.iter_rows(named=True):
        spans = token_char_spans(r["completion_token_ids"], r["completion_text"], tokenizer)
        categories[r["trace_id"]] = categorise_tokens(
            spans, r["completion_text"], r["step_spans"], r["first_wrong_step"]
        )
    ids = labelled["trace_id"].to_list()
    student = engine.score(labelled["prompt_token_ids"].to_list(), [completion[t] for t in ids], top_k=1)
    student_lp = {t: s.token_logprobs for t, s in zip(ids, student)}
    teacher_rows = prompts.filter(pl.col("layout") != NO_CONTEXT)
    teacher = engine.score(teacher_rows["prompt"].to_list(), [completion[t] for t in teacher_rows["trace_id"]], top_k=1)
    return teacher_rows.select("trace_id", "problem_id", "layout", "context_kind", "original_correct").with_columns(
        categories=pl.Series([categories[t] for t in teacher_rows["trace_id"]], dtype=pl.List(pl.String)),
        advantages=pl.Series(
            [(s.token_logprobs - student_lp[t]).tolist() for s, t in zip(teacher, teacher_rows["trace_id"])],
            dtype=pl.List(pl.Float32),
        ),
    )


def _interval(values: np.ndarray, *, resamples: int, seed: int) -> dict[str, Any] | None:
    if len(values) == 0:
        return None
    mean, low, high = (round(float(v), 4) for v in bootstrap_ci(values, resamples=resamples, seed=seed)[0])
    return {"traces": len(values), "mean": mean, "ci_low": low, "ci_high": high}


def _split(frame: pl.DataFrame, split: str) -> pl.DataFrame:
    if split == "originally_incorrect":
        return frame.filter(~pl.col("original_correct"))
    if split == "originally_correct":
        return frame.filter(pl.col("original_correct"))
    return frame


def advantage_cells(advantages: pl.DataFrame) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """Per (layout, kind): token-weighted A_t stats on incorrect traces by category, and on correct traces.

    Keys of each cell: ``incorrect_<category>`` for every category and ``incorrect_all``,
    ``correct_all``; each holds tokens, mean A_t and the share of tokens with A_t < 0.
    """
    long = advantages.explode("categories", "advantages").rename({"categories": "category"}).drop_nulls("category")
    groups = [("incorrect", c, ~pl.col("original_correct") & (pl.col("category") == c)) for c in CATEGORIES]
    groups += [("incorrect", "all", ~pl.col("original_correct")), ("correct", "all", pl.col("original_correct"))]
    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for (layout, kind), part in long.group_by("layout", "context_kind", maintain_order=True):
        cell = {}
        for correctness, category, predicate in groups:
            values = part.filter(predicate)["advantages"]
            cell[f"{correctness}_{category}"] = {
                "tokens": len(values),
                "mean": None if len(values) == 0 else round(float(values.mean()), 4),
                "share_negative": None if len(values) == 0 else round(float((values < 0).mean()), 4),
            }
        out[(str(layout), str(kind))] = cell
    return out


def _accuracy_rows(
    per_trace: pl.DataFrame, column: str, layout: str, kind: str, *, resamples: int, seed: int
) -> dict[str, Any]:
    """Accuracy per split and its paired gap over no context, for one outcome ``column``."""
    none = per_trace.filter(pl.col("layout") == NO_CONTEXT).select("trace_id", none_accuracy=column)
    group = per_trace.filter(layout=layout, context_kind=kind).join(none, on="trace_id").sort("trace_id")
    out: dict[str, Any] = {}
    for split in SPLITS:
        part = _split(group, split)
        out[split] = _interval(part[column].to_numpy(), resamples=resamples, seed=seed)
        gap = (part[column] - part["none_accuracy"]).to_numpy()
        out[f"gap_{split}"] = None if layout == NO_CONTEXT else _interval(gap, resamples=resamples, seed=seed)
    return out


def premise_table(
    samples: pl.DataFrame, advantages: pl.DataFrame | None, *, resamples: int, seed: int
) -> list[dict[str, Any]]:
    """The premise table: one row per (layout, kind), the no-context row first.

    Each row: format rate, re-solve accuracy per split (all, originally incorrect, originally
    correct) with 95% CIs over traces and the paired gap over no context per split with its CI;
    the same under ``formatted`` counting a re-solve correct only if it also keeps the step format
    (a teacher that copies the answer alone teaches no steps); and, when scored, the A_t cells of
    :func:`advantage_cells`.
    """
    per_trace = samples.group_by("trace_id", "layout", "context_kind", "original_correct").agg(
        accuracy=pl.col("is_correct").mean(), formatted=(pl.col("is_correct") & pl.col("format_ok")).mean()
    )
    cells = advantage_cells(advantages) if advantages is not None and advantages.height else {}
    keys = samples.select("layout", "context_kind").unique(maintain_order=True)
    keys = keys.sort(pl.col("layout") != NO_CONTEXT, maintain_order=True)
    table = []
    for layout, kind in keys.iter_rows():
        format_rate = samples.filter(layout=layout, context_kind=kind)["format_ok"].mean()
        table.append(
            {
                "layout": layout,
                "context_kind": kind,
                "format_rate": round(float(format_rate), 4),
                **_accuracy_rows(per_trace, "accuracy", layout, kind, resamples=resamples, seed=seed),
                "formatted": _accuracy_rows(per_trace, "formatted", layout, kind, resamples=resamples, seed=seed),
                "advantages": cells.get((layout, kind)),
            }
        )
    return table


def rule_layout(table: list[dict[str, Any]], kind: str = "critique") -> str | None:
    """The teacher layout the layout rule picks from a :func:`premise_table`, or None.

    The rule (docs: experiments, the layout study): the layout whose ``kind`` teacher has the largest
    *formatted* gap over no context on originally incorrect traces (a re-solve counts only when it is
    right and keeps the step format: the student imitates the teacher's format as much as its
    arithmetic), among the layouts whose formatted gap's 95% CI lies above zero and whose gap on
    originally correct traces is not below zero beyond its CI.
    """
    eligible = []
    for row in table:
        formatted = (row.get("formatted") or {}).get("gap_originally_incorrect")
        correct = row.get("gap_originally_correct")
        if row["context_kind"] != kind or formatted is None or formatted["ci_low"] <= 0:
            continue
        if correct is not None and correct["ci_high"] < 0:
            continue
        eligible.append((formatted["mean"], row["layout"]))
    return max(eligible)[1] if eligible else None


def check_premise(
    *,
    traces: Path,
    critiques: Path,
    problems: Path,
    model: Path,
    samples_out: Path,
    advantages_out: Path,
    summary_out: Path,
    run_seed: int,
    cfg: PremiseConfig,
    templates: ContextTemplates,
    prompt: PromptConfig,
    enable_thinking: bool,
) -> dict[str, Any]:
    """Re-solve (and score) the round-0 traces under every configured teacher prompt; write the table."""
    trace_frame = read_artifact(traces, schema=TRACES_SCHEMA, artifact="traces")
    critique_frame = read_artifact(critiques, schema=CRITIQUES_SCHEMA, artifact="critiques")
    train = read_artifact(problems, schema=PROBLEMS_SCHEMA, artifact="problems")
    joined = join_feedback(trace_frame, critique_frame, train)
    tokenizer = load_tokenizer(model)
    prompts = premise_prompts(
        joined, layouts=cfg.layouts, kinds=cfg.kinds, templates=templates, prompt=prompt,
        tokenizer=tokenizer, enable_thinking=enable_thinking,
    )  # fmt: skip
    if prompts.height == 0:
        raise ValueError(f"{traces}: no round-0 trace has a context of every kind {list(cfg.kinds)}")
    sampling = SamplingConfig(n=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens)
    log.info("re-solving %d prompts x %d samples", prompts.height, cfg.samples)
    completions, startup_s, sample_s = sample_model(
        cfg.engine, model, prompts["prompt"].to_list(), sampling, seed=cfg.seed, where="premise.engine"
    )
    answers = {row["problem_id"]: (row["answer"], row["verifier"]) for row in train.iter_rows(named=True)}
    samples = premise_samples_frame(prompts, completions, answers)

    advantages = PREMISE_ADVANTAGES_SCHEMA.to_frame()
    if cfg.advantages:
        log.info("scoring A_t for %d teacher prompts", prompts.filter(pl.col("layout") != NO_CONTEXT).height)
        engine = engine_from_config(
            cfg.score_engine, model, seed=cfg.seed, max_logprobs=1, where="premise.score_engine"
        )
        try:
            advantages = score_advantages(engine, prompts, joined, tokenizer).select(PREMISE_ADVANTAGES_SCHEMA.names())
        finally:
            engine.close()
    label = model_label(model)
    summary = {
        "seed": run_seed,
        "model": label,
        "samples_per_trace": cfg.samples,
        "traces": prompts["trace_id"].n_unique(),
        "traces_originally_incorrect": prompts.filter(~pl.col("original_correct"))["trace_id"].n_unique(),
        "sample_startup_s": round(startup_s, 2),
        "sample_s": round(sample_s, 2),
        "table": premise_table(samples, advantages, resamples=cfg.bootstrap_resamples, seed=cfg.seed),
    }
    summary["rule_layout"] = rule_layout(summary["table"])
    params = {
        "premise": dataclasses.asdict(cfg),
        "templates_version": templates.version,
        "prompt_version": prompt.version,
        "summary": {k: v for k, v in summary.items() if k != "table"},
    }
    for frame, out, schema, artifact in (
        (samples, samples_out, PREMISE_SAMPLES_SCHEMA, "premise_samples"),
        (advantages, advantages_out, PREMISE_ADVANTAGES_SCHEMA, "premise_advantages"),
    ):
        write_artifact(frame, out, schema=schema, artifact=artifact, stage=STAGE, params=params, model=label)
    write_json(summary, summary_out)
    for row in summary["table"]:
        log.info(
            "premise %s/%s: originally incorrect %s, gap %s; originally correct %s",
            row["layout"], row["context_kind"], row["originally_incorrect"], row["gap_originally_incorrect"],
            row["originally_correct"],
        )  # fmt: skip
    return summary
