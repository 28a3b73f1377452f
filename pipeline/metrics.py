"""Metrics shared by evaluation, the premise check and the report: Pass@k, Maj@n, bootstrap CIs.

Everything here is pure: frames and arrays in, numbers out.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Sequence

import numpy as np
import polars as pl

from pipeline.tasks.arith import parse_arith_step
from pipeline.tasks.solver_format import parse_response


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


def is_answer_only(text: str) -> bool:
    """Whether a response gives an answer without writing a single step."""
    parsed = parse_response(text)
    return parsed.answer is not None and not parsed.steps


def answer_only_rate(texts: Sequence[str]) -> float | None:
    """Share of responses that give an answer without writing a single step (None: no response).

    The mark of a student that learned to copy answers rather than to solve: a teacher that sees the
    answer in its context puts mass on answering at once.
    """
    return sum(map(is_answer_only, texts)) / len(texts) if texts else None


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
