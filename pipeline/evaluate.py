"""Stage ``evaluate``: Avg@n, Pass@k, Maj@n of one checkpoint on the eval set, with bootstrap CIs.

One job per checkpoint: the base solver (``base``, round 0) and every arm's student of every round.
Each eval problem gets ``samples_per_problem`` (n = 12 by default) samples with the solver prompt.
Metrics, all averaged over problems:

- Avg@n: the share of correct samples;
- Pass@k for k = 1..n with the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` (c correct of n);
- Maj@n: whether the most frequent answer, normalised by the problem's verifier, is correct;
- mean completion length in tokens, format rate, truncation rate, and the share of answers given
  without a single step;
- mean token entropy, estimated as the mean ``-log p`` of the sampled tokens (unbiased at
  temperature 1 and top-p 1, where samples follow the model's own distribution).

CIs are percentile bootstrap intervals over problems. The core (:func:`summarise`) is pure.
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
    EVAL_SAMPLES_SCHEMA,
    PROBLEMS_SCHEMA,
    model_label,
    read_artifact,
    write_artifact,
    write_json,
)
from pipeline.config import EvaluateConfig, PromptConfig
from pipeline.engines import Completion, SamplingConfig, load_tokenizer, sample_model, timing_stats
from pipeline.metrics import answer_only_rate, bootstrap_ci, miscalculated_step_rate, problem_metrics
from pipeline.tasks.solver_format import build_prompts, parse_response
from pipeline.tasks.verify import normalize_answer, verify_answer

log = logging.getLogger(__name__)
STAGE = "evaluate"


def _interval(row: np.ndarray) -> dict[str, float]:
    return {"mean": round(float(row[0]), 4), "ci_low": round(float(row[1]), 4), "ci_high": round(float(row[2]), 4)}


def summarise(samples: pl.DataFrame, *, resamples: int, seed: int) -> dict[str, Any]:
    """The checkpoint's metrics with 95% bootstrap CIs over problems (the summary JSON's body)."""
    per_problem = problem_metrics(samples)
    if per_problem.height == 0:
        raise ValueError("evaluate: no samples to summarise")
    n = int(per_problem["n"][0])
    pass_matrix = np.array(per_problem["pass_at"].to_list())
    table = np.column_stack([per_problem["avg"], per_problem["maj"], pass_matrix])
    ci = bootstrap_ci(table, resamples=resamples, seed=seed)
    return {
        "problems": per_problem.height,
        "samples_per_problem": n,
        "avg": _interval(ci[0]),
        "maj": _interval(ci[1]),
        "pass_at_k": [{"k": k, **_interval(ci[1 + k])} for k in range(1, n + 1)],
        "mean_length": round(float(per_problem["length"].mean()), 2),
        "format_rate": round(float(per_problem["format"].mean()), 4),
        "truncated_rate": round(float(per_problem["truncated"].mean()), 4),
        "miscalculated_steps": _rounded(miscalculated_step_rate(samples["completion_text"].to_list())),
        "answer_only_rate": _rounded(answer_only_rate(samples["completion_text"].to_list())),
        "token_entropy": _rounded(token_entropy(samples)),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def token_entropy(samples: pl.DataFrame) -> float | None:
    """Mean token entropy (nats) of the sampled policy: the mean ``-log p`` over every sampled token."""
    tokens = int(samples["num_tokens"].sum())
    return None if tokens == 0 else float(-samples["sum_logprob"].sum() / tokens)


def samples_frame(
    problems: pl.DataFrame, completions: Sequence[Sequence[Completion]], *, condition: str, round_index: int, seed: int
) -> pl.DataFrame:
    """One row per sample: parse, verifier-normalised answer key and correctness."""
    rows = []
    for problem, group in zip(problems.iter_rows(named=True), completions):
        for sample_idx, completion in enumerate(group):
            parsed = parse_response(completion.text)
            method = problem["verifier"]
            rows.append(
                {
                    "problem_id": problem["problem_id"],
                    "condition": condition,
                    "round": round_index,
                    "seed": seed,
                    "sample_idx": sample_idx,
                    "completion_text": completion.text,
                    "num_tokens": len(completion.token_ids),
                    "sum_logprob": float(sum(completion.logprobs)),
                    "finish_reason": completion.finish_reason,
                    "extracted_answer": parsed.answer,
                    "answer_key": normalize_answer(parsed.answer, method=method),
                    "format_ok": parsed.format_ok,
                    "is_correct": verify_answer(parsed.answer, problem["answer"], method=method),
                }
            )
    return pl.DataFrame(rows, schema=EVAL_SAMPLES_SCHEMA)


def evaluate(
    *,
    problems: Path,
    model: Path,
    samples_out: Path,
    summary_out: Path,
    condition: str,
    round_index: int,
    run_seed: int,
    prompt: PromptConfig,
    cfg: EvaluateConfig,
) -> dict[str, Any]:
    """Sample ``model`` on the eval ``problems``; write per-sample Parquet and the summary JSON."""
    eval_set = read_artifact(problems, schema=PROBLEMS_SCHEMA, artifact="problems")
    prompts = build_prompts(eval_set, load_tokenizer(model), prompt)
    sampling = SamplingConfig(
        n=cfg.samples_per_problem, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens
    )
    completions, startup_s, seconds = sample_model(
        cfg.engine, model, prompts["prompt_token_ids"].to_list(), sampling, seed=cfg.seed, where="evaluate.engine"
    )
    samples = samples_frame(eval_set, completions, condition=condition, round_index=round_index, seed=run_seed)
    label = model_label(model)
    summary = {
        "condition": condition,
        "round": round_index,
        "seed": run_seed,
        "model": label,
        **summarise(samples, resamples=cfg.bootstrap_resamples, seed=cfg.seed),
        **timing_stats(startup_s, seconds, int(samples["num_tokens"].sum())),
    }
    write_artifact(
        samples,
        samples_out,
        schema=EVAL_SAMPLES_SCHEMA,
        artifact="eval_samples",
        stage=STAGE,
        params={"evaluate": dataclasses.asdict(cfg), "prompt": dataclasses.asdict(prompt), "summary": summary},
        model=label,
    )
    write_json(summary, summary_out)
    log.info(
        "%s round %d: Avg@%d %.3f [%.3f, %.3f], Maj %.3f, Pass@%d %.3f, %.1f tok/s",
        condition, round_index, summary["samples_per_problem"], summary["avg"]["mean"], summary["avg"]["ci_low"],
        summary["avg"]["ci_high"], summary["maj"]["mean"], summary["samples_per_problem"],
        summary["pass_at_k"][-1]["mean"], summary["tokens_per_s"],
    )  # fmt: skip
    return summary
