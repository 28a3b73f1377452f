"""Stage ``generate_traces``: the solver answers the problems scheduled for one round.

One job per condition x round. Round 0 of the self-distillation conditions is one shared job, so
those conditions start from the very same traces. The schedule walks through the train set in
seeded epochs; each problem gets ``samples_per_problem`` samples (``grpo_group_size`` for GRPO).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from pipeline.artifacts import PROBLEMS_SCHEMA, TRACES_SCHEMA, model_label, read_artifact, write_artifact
from pipeline.config import TracesConfig
from pipeline.engines import Completion, Engine, SamplingConfig, load_tokenizer, run_engine, timing_stats
from pipeline.tasks.solver_format import build_prompts, parse_response
from pipeline.tasks.verify import verify_answer

log = logging.getLogger(__name__)
STAGE = "generate_traces"


def schedule(problem_ids: Sequence[str], *, round_index: int, per_round: int, seed: int) -> list[str]:
    """The problems of one round: a seeded walk through the train set, reshuffled every epoch."""
    n = len(problem_ids)
    if n == 0:
        raise ValueError("schedule: the train set is empty")
    ordered = sorted(problem_ids)
    picked: list[str] = []
    for position in range(round_index * per_round, (round_index + 1) * per_round):
        epoch, offset = divmod(position, n)
        order = ordered.copy()
        random.Random(f"{seed}-epoch-{epoch}").shuffle(order)
        picked.append(order[offset])
    return picked


def traces_frame(
    prompts: pl.DataFrame, completions: Sequence[Sequence[Completion]], *, condition: str, round_index: int
) -> pl.DataFrame:
    """One row per sampled completion, with its parse, answer and correctness."""
    rows = []
    for prompt_row, samples in zip(prompts.iter_rows(named=True), completions):
        for sample_idx, c in enumerate(samples):
            parsed = parse_response(c.text)
            rows.append(
                {
                    "trace_id": f"{condition}:{round_index}:{prompt_row['problem_id']}:{sample_idx}",
                    "problem_id": prompt_row["problem_id"],
                    "condition": condition,
                    "round": round_index,
                    "sample_idx": sample_idx,
                    "user_message": prompt_row["user_message"],
                    "prompt": prompt_row["prompt"],
                    "prompt_token_ids": prompt_row["prompt_token_ids"],
                    "completion_text": c.text,
                    "completion_token_ids": c.token_ids,
                    "completion_logprobs": c.logprobs,
                    "finish_reason": c.finish_reason,
                    "step_spans": [{"number": s.number, "start": s.start, "end": s.end} for s in parsed.steps],
                    "extracted_answer": parsed.answer,
                    "format_ok": parsed.format_ok,
                    "is_correct": verify_answer(parsed.answer, prompt_row["answer"], method=prompt_row["verifier"]),
                }
            )
    return pl.DataFrame(rows, schema=TRACES_SCHEMA)


def sample_traces(
    engine: Engine, prompts: pl.DataFrame, *, n: int, cfg: TracesConfig, condition: str, round_index: int
) -> pl.DataFrame:
    """Sample ``n`` completions per prompt row and build the traces frame."""
    sampling = SamplingConfig(n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens)
    completions = engine.generate(prompts["prompt_token_ids"].to_list(), sampling)
    return traces_frame(prompts, completions, condition=condition, round_index=round_index)


def generate_traces(
    *, problems: Path, model: Path, out: Path, condition: str, round_index: int, cfg: TracesConfig
) -> dict[str, float]:
    """Sample this round's traces for ``condition`` from the student ``model``; write ``out``."""
    train = read_artifact(problems, schema=PROBLEMS_SCHEMA, artifact="problems")
    per_round, n = cfg.round_size(condition)
    ids = schedule(train["problem_id"].to_list(), round_index=round_index, per_round=per_round, seed=cfg.seed)
    picked = pl.DataFrame({"problem_id": ids}).unique(maintain_order=True).join(train, on="problem_id", how="left")
    tokenizer = load_tokenizer(model)
    prompts = build_prompts(picked, tokenizer, cfg.prompt)

    traces, startup_s, seconds = run_engine(
        cfg.engine,
        model,
        lambda engine: sample_traces(engine, prompts, n=n, cfg=cfg, condition=condition, round_index=round_index),
        seed=cfg.seed + round_index,
        where="traces.engine",
    )
    tokens = int(traces["completion_token_ids"].list.len().sum())
    stats = {
        "traces": traces.height,
        "problems": prompts.height,
        **timing_stats(startup_s, seconds, tokens),
        "accuracy": round(float(traces["is_correct"].mean() or 0.0), 4),
        "format_rate": round(float(traces["format_ok"].mean() or 0.0), 4),
        "truncated": int((traces["finish_reason"] == "length").sum()),
    }
    write_artifact(
        traces,
        out,
        schema=TRACES_SCHEMA,
        artifact="traces",
        stage=STAGE,
        params={**dataclasses.asdict(cfg), "condition": condition, "round": round_index, "stats": stats},
        model=model_label(model),
    )
    log.info("%s round %d: %s", condition, round_index, stats)
    return stats
