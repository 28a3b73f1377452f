"""The paper's claims, each settled from paired confidence intervals, per seed and pooled over seeds.

C1 critique > reference, C2 critique > GRPO, C3 reference > GRPO and C4 critique > base solver are
paired Avg@n differences on the eval problems (each arm at its chosen round). C5 says where the
teachers disagree with the student: the critique teacher's A_t is lower at the critic's first wrong
step than on the correct steps before it (C5a), and the reference teacher's is diffuse, i.e. lower
than the critique teacher's on those correct steps (C5b); both over the round-0 traces with a
located wrong step, paired by trace.

Every contrast is oriented so that a positive value is the paper's direction, and the verdict comes
from its 95% CI: ``replicated`` (the CI lies above 0), ``reversed`` (below 0) or ``inconclusive``.
Pooled over seeds, the CI is a two-level bootstrap: seeds resampled, then problems (or traces), so
it holds both the training noise between seeds and the eval problems' noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

VERDICTS = ("replicated", "reversed", "inconclusive")


@dataclass(frozen=True)
class Claim:
    """One claim: what it compares, and the paper's figure for it (Avg@12 points on 30 problems)."""

    key: str
    statement: str
    paper: str
    arms: tuple[str, str] | None = None  # (a, b): the contrast is Avg(a) - Avg(b)


CLAIMS = (
    Claim("C1", "critique student > reference student", "+5.27 (35.83 vs 30.56)", ("critique", "reference")),
    Claim("C2", "critique student > GRPO student", "+16.11 (35.83 vs 19.72)", ("critique", "grpo")),
    Claim("C3", "reference student > GRPO student", "+10.84 (30.56 vs 19.72)", ("reference", "grpo")),
    Claim(
        "C4",
        "critique student > base solver",
        "not reported (problems kept where the base's Avg@16 < 0.3125; critique 35.83)",
        ("critique", "base"),
    ),
    Claim(
        "C5a",
        "critique teacher: A_t lower at the first wrong step than on the correct steps before it",
        "Figure 4: negative at the wrong step, positive on correct steps",
    ),
    Claim(
        "C5b",
        "reference teacher diffuse: its A_t on those correct steps is below the critique teacher's",
        "Figure 4: negative nearly everywhere",
    ),
)


def verdict(low: float, high: float) -> str:
    """``replicated`` when the CI lies above 0, ``reversed`` when below, else ``inconclusive``."""
    if low > 0:
        return "replicated"
    if high < 0:
        return "reversed"
    return "inconclusive"


def pooled_ci(
    values: Sequence[np.ndarray], *, resamples: int, seed: int, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean over seeds of each seed's mean, with a two-level percentile bootstrap CI.

    ``values`` holds one array per seed (per-problem differences, or per-trace contrasts). Each
    resample draws seeds with replacement, then each drawn seed's items with replacement; one seed
    is the ordinary bootstrap over its items.
    """
    arrays = [np.asarray(v, dtype=np.float64) for v in values if len(v)]
    if not arrays:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for b in range(resamples):
        seeds = rng.integers(len(arrays), size=len(arrays)) if len(arrays) > 1 else [0]
        stats[b] = np.mean([arrays[s][rng.integers(len(arrays[s]), size=len(arrays[s]))].mean() for s in seeds])
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(np.mean([a.mean() for a in arrays])), float(low), float(high)


def per_problem_avg(samples: pl.DataFrame, condition: str, round_index: int) -> pl.DataFrame:
    """Per (seed, problem): the share of correct samples of one checkpoint."""
    return (
        samples.filter((pl.col("condition") == condition) & (pl.col("round") == round_index))
        .group_by("seed", "problem_id")
        .agg(avg=pl.col("is_correct").mean())
    )


def arm_differences(samples: pl.DataFrame, a: str, b: str, rounds: Mapping[str, int]) -> dict[int, np.ndarray]:
    """Per seed: per-problem Avg(a) - Avg(b) on the problems both were evaluated on.

    An arm evaluated under fewer seeds (the base solver, evaluated once) is paired with every seed
    of the other arm: its per-problem Avg is then the mean over the seeds it has.
    """
    if a not in rounds or b not in rounds:
        return {}
    left, right = per_problem_avg(samples, a, rounds[a]), per_problem_avg(samples, b, rounds[b])
    seeds = sorted(set(left["seed"]) | set(right["seed"]))
    out = {}
    for s in seeds:
        sides = []
        for side in (left, right):
            own = side.filter(pl.col("seed") == s)
            sides.append(own if own.height else side.group_by("problem_id").agg(pl.col("avg").mean()))
        both = sides[0].select("problem_id", "avg").join(sides[1].select("problem_id", "avg"), on="problem_id")
        both = both.sort("problem_id")
        out[s] = (both["avg"] - both["avg_right"]).to_numpy()
    return out


def trace_contrasts(tokens: pl.DataFrame) -> dict[str, np.ndarray]:
    """C5's per-trace contrasts from one seed's advantage tokens (``ADVANTAGE_TOKENS_SCHEMA``).

    Over the traces with a located wrong step that both kinds scored and that have tokens before it:
    ``C5a`` = critique A_t(correct steps) - A_t(first wrong step); ``C5b`` = critique A_t(correct
    steps) - reference A_t(correct steps); each a per-trace mean over that category's tokens.
    """
    means = (
        tokens.filter(pl.col("context_kind").is_in(["critique", "reference"]))
        .explode("categories", "advantages")
        .filter(pl.col("categories").is_in(["pre_error", "first_wrong"]))
        .group_by("trace_id", key=pl.col("context_kind") + "_" + pl.col("categories"))
        .agg(pl.col("advantages").mean())
        .pivot(on="key", index="trace_id", values="advantages")
    )
    needed = ["critique_pre_error", "critique_first_wrong", "reference_pre_error"]
    if not set(needed) <= set(means.columns):
        return {"C5a": np.array([]), "C5b": np.array([])}
    complete = means.drop_nulls(needed).sort("trace_id")
    return {
        "C5a": (complete["critique_pre_error"] - complete["critique_first_wrong"]).to_numpy(),
        "C5b": (complete["critique_pre_error"] - complete["reference_pre_error"]).to_numpy(),
    }


def claims_table(
    samples: pl.DataFrame,
    rounds: Mapping[str, int],
    tokens_by_seed: Mapping[int, pl.DataFrame],
    *,
    resamples: int,
    seed: int,
) -> pl.DataFrame:
    """One row per claim and seed, plus a ``pooled`` row per claim: contrast, 95% CI, verdict.

    ``samples`` are the eval samples of every checkpoint and seed; ``rounds`` maps each arm to the
    round it is judged at; ``tokens_by_seed`` holds each seed's advantage tokens.
    """
    rows = []
    for claim in CLAIMS:
        if claim.arms is not None:
            per_seed = arm_differences(samples, *claim.arms, rounds)
            unit = "problems"
        else:
            per_seed = {s: trace_contrasts(t)[claim.key] for s, t in tokens_by_seed.items()}
            unit = "traces"
        per_seed = {s: v for s, v in per_seed.items() if len(v)}
        if not per_seed:
            continue
        entries = [(str(s), [v]) for s, v in sorted(per_seed.items())]
        if len(per_seed) > 1:
            entries.append(("pooled", list(per_seed.values())))
        for label, values in entries:
            mean, low, high = pooled_ci(values, resamples=resamples, seed=seed)
            rows.append(
                {
                    "claim": claim.key,
                    "statement": claim.statement,
                    "seed": label,
                    unit: sum(len(v) for v in values),
                    "contrast": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "verdict": verdict(low, high),
                    "paper": claim.paper,
                }
            )
    schema = {
        "claim": pl.String, "statement": pl.String, "seed": pl.String, "problems": pl.Int64, "traces": pl.Int64,
        "contrast": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "verdict": pl.String,
        "paper": pl.String,
    }  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def overall_verdicts(table: pl.DataFrame) -> dict[str, str]:
    """Per claim: the pooled row's verdict (the only seed's where there is one); C5 joins C5a and C5b."""
    out = {}
    for (key,), group in table.group_by("claim", maintain_order=True):
        pooled = group.filter(pl.col("seed") == "pooled")
        out[key] = (pooled if pooled.height else group).row(-1, named=True)["verdict"]
    if "C5a" in out and "C5b" in out:
        parts = {out["C5a"], out["C5b"]}
        out["C5"] = "replicated" if parts == {"replicated"} else "reversed" if "reversed" in parts else "inconclusive"
    return out
