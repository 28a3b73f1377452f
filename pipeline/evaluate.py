"""Stage ``evaluate``: Avg@n, Pass@k, Maj@n of one checkpoint on the eval set, with bootstrap CIs.

One job per checkpoint: the base solver (``base``, round 0) and every arm's student of every round.
Each eval problem gets ``samples_per_problem`` (n = 12 by default) samples with the solver prompt.
Metrics, all averaged over problems:

- Avg@n: the share of correct samples;
- Pass@k for k = 1..n with the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` (c correct of n);
- Maj@n: whether the most frequent answer, normalised by the problem's verifier, is correct;
- mean completion length in tokens, format rate, truncation rate.

CIs are percentile bootstrap intervals over problems. The core (:func:`summarise`) is pure.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.artifacts import EVAL_SAMPLES_SCHEMA, PROBLEMS_SCHEMA, read_artifact, write_artifact, write_json
from pipeline.config import EvaluateConfig, PromptConfig
from pipeline.engines import Completion, SamplingConfig, engine_from_config
from pipeline.models import read_provenance
from pipeline.tasks.arith import parse_arith_step
from pipeline.tasks.solver_format import build_prompts, parse_response
from pipeline.tasks.verify import normalize_answer, verify_answer

log = logging.getLogger(__name__)
STAGE = "evaluate"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from ``c`` correct of ``n`` samples: ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_correct(answer_keys: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """Whether the most frequent answer key is a correct one (ties: the earliest answer; None never votes)."""
    votes = Counter(key for key in answer_keys if key is not None)
    if not votes:
        return False
    best = max(votes.values())
    winner = next(key for key in answer_keys if key is not None and votes[key] == best)
    return any(ok for key, ok in zip(answer_keys, correct) if key == winner)


def problem_metrics(samples: pl.DataFrame) -> pl.DataFrame:
    """One row per problem: n, c, avg, maj, mean length, format rate, and ``pass_at`` (list over k = 1..n)."""
    rows = []
    for (problem_id,), group in samples.sort("sample_idx").group_by("problem_id", maintain_order=True):
        n, c = group.height, int(group["is_correct"].sum())
        rows.append(
            {
                "problem_id": problem_id,
                "n": n,
                "correct": c,
                "avg": c / n,
                "maj": float(majority_correct(group["answer_key"].to_list(), group["is_correct"].to_list())),
                "pass_at": [pass_at_k(n, c, k) for k in range(1, n + 1)],
                "length": float(group["num_tokens"].mean()),
                "format": float(group["format_ok"].mean()),
                "truncated": float((group["finish_reason"] == "length").mean()),
            }
        )
    frame = pl.DataFrame(rows)
    if frame.height and frame["n"].n_unique() != 1:
        raise ValueError("evaluate: every problem needs the same number of samples")
    return frame


_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def miscalculated_step_rate(texts: Sequence[str]) -> float | None:
    """Share of steps written as ``a op b = c`` whose own arithmetic is wrong (None: no such step).

    A diagnostic of arithmetic skill that ignores whether the step is the right one to take.
    """
    checked = wrong = 0
    for text in texts:
        for step in parse_response(text).steps:
            parsed = parse_arith_step(step.text)
            if parsed is None:
                continue
            a, op, b, c = parsed
            if op == "/" and b == 0:
                continue
            value = _APPLY[op](a, b)
            checked += 1
            wrong += abs(value - c) > 1e-6 * max(1.0, abs(value))
    return wrong / checked if checked else None


def bootstrap_ci(values: np.ndarray, *, resamples: int, seed: int, level: float = 0.95) -> np.ndarray:
    """Percentile bootstrap over rows (problems) of the column means of ``values`` [P, M] -> [M, 3].

    Each row of the result is (mean, low, high).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    means = values[picks].mean(axis=1)  # [B, M]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return np.stack([values.mean(axis=0), low, high], axis=1)


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
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


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
                    "finish_reason": completion.finish_reason,
                    "extracted_answer": parsed.answer,
                    "answer_key": normalize_answer(parsed.answer, method=method),
                    "format_ok": parsed.format_ok,
                    "is_correct": verify_answer(parsed.answer, problem["answer"], method=method),
                }
            )
    return pl.DataFrame(rows, schema=EVAL_SAMPLES_SCHEMA)


def model_label(model: Path) -> str:
    """``<folder>@<weights sha256 prefix>`` for a checkpoint folder."""
    return f"{model.name}@{read_provenance(model)['weights_sha256'][:16]}"


def sample_checkpoint(
    model: Path, prompts: list[list[int]], *, n: int, cfg: EvaluateConfig
) -> tuple[list[list[Completion]], float, float]:
    """Start the configured engine on ``model`` and sample ``n`` completions per prompt.

    Returns (completions, engine start-up seconds, sampling seconds); the engine is always closed.
    """
    sampling = SamplingConfig(n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens)
    engine = engine_from_config(cfg.engine, model, seed=cfg.seed)
    try:
        start = time.perf_counter()
        completions = engine.generate(prompts, sampling)
        return completions, engine.startup_s, time.perf_counter() - start
    finally:
        engine.close()


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
    from transformers import AutoTokenizer

    eval_set = read_artifact(problems, schema=PROBLEMS_SCHEMA, artifact="problems")
    prompts = build_prompts(eval_set, AutoTokenizer.from_pretrained(model), prompt)
    completions, startup_s, seconds = sample_checkpoint(
        model, prompts["prompt_token_ids"].to_list(), n=cfg.samples_per_problem, cfg=cfg
    )
    samples = samples_frame(eval_set, completions, condition=condition, round_index=round_index, seed=run_seed)
    label = model_label(model)
    summary = {
        "condition": condition,
        "round": round_index,
        "seed": run_seed,
        "model": label,
        **summarise(samples, resamples=cfg.bootstrap_resamples, seed=cfg.seed),
        "startup_s": round(startup_s, 2),
        "generate_s": round(seconds, 2),
        "tokens_per_s": round(int(samples["num_tokens"].sum()) / max(seconds, 1e-9), 1),
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
