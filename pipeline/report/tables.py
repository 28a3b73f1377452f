"""The report's tables: frames in, frames out (checkpoints over seeds, judged rounds, Table 1, paired
differences, critic QA, advantage pivot, training logs), and each arm's colour."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from pipeline.metrics import answer_only_rate, bootstrap_ci, miscalculated_step_rate, problem_metrics

ARM_ORDER = ("base", "grpo", "reference", "critique", "critique_full_quote", "critique_labels_only")


def arm_colors(arms: Sequence[str]) -> dict[str, str]:
    """One matplotlib colour per arm: the named arms always the same, then the others (variants) in
    sorted order, so every figure of a page that shows the same arms colours them alike."""
    order = [*ARM_ORDER[1:], *sorted(set(arms) - set(ARM_ORDER))]
    return {arm: f"C{i % 10}" for i, arm in enumerate(order)}


# ---------------------------------------------------------------------------------------------
# Pure core: frames in, frames out.


def checkpoint_table(samples: pl.DataFrame, *, resamples: int, seed: int) -> pl.DataFrame:
    """One row per (condition, round): Avg@n, Maj@n, Pass@n with CIs, length, format rate, seeds.

    ``samples`` holds the eval samples of every seed; per-problem metrics are averaged over seeds,
    then bootstrapped over problems.
    """
    rows = []
    for (condition, round_index), group in samples.group_by("condition", "round", maintain_order=True):
        per_seed = [problem_metrics(part) for _, part in group.group_by("seed", maintain_order=True)]
        n = int(per_seed[0]["n"][0])
        pooled = (
            pl.concat([f.with_columns(pass_n=pl.col("pass_at").list.last()) for f in per_seed])
            .group_by("problem_id")
            .agg(pl.col("avg", "maj", "pass_n", "length", "format").mean())
            .sort("problem_id")
        )
        ci = bootstrap_ci(pooled.select("avg", "maj", "pass_n").to_numpy(), resamples=resamples, seed=seed)
        rows.append(
            {
                "condition": condition,
                "round": round_index,
                "seeds": len(per_seed),
                "n": n,
                "problems": pooled.height,
                **{f"{name}{suffix}": float(ci[i, j]) for i, name in enumerate(("avg", "maj", "pass_n"))
                   for j, suffix in enumerate(("", "_low", "_high"))},
                "seed_min_avg": min(float(f["avg"].mean()) for f in per_seed),
                "seed_max_avg": max(float(f["avg"].mean()) for f in per_seed),
                "length": float(pooled["length"].mean()),
                "format_rate": float(pooled["format"].mean()),
                "miscalculated_steps": miscalculated_step_rate(group["completion_text"].to_list()),
                "answer_only": answer_only_rate(group["completion_text"].to_list()),
                "token_entropy": float(-group["sum_logprob"].sum() / max(int(group["num_tokens"].sum()), 1)),
            }
        )  # fmt: skip
    return pl.DataFrame(rows).sort(pl.col("condition").replace_strict(_arm_rank(), default=99), "round")


def _arm_rank() -> dict[str, int]:
    return {arm: i for i, arm in enumerate(ARM_ORDER)}


def chosen_rounds(checkpoints: pl.DataFrame, dev: pl.DataFrame | None = None) -> dict[str, int]:
    """The round each condition is judged at: its best dev Avg@n (the earlier round on a tie) where
    the run evaluated dev, else its last round; the base solver's round 0. Never chosen on eval."""
    source = dev if dev is not None and dev.height else checkpoints
    by = ["avg", "round"] if source is dev else ["round"]
    descending = [True, False] if source is dev else [True]
    rounds = {}
    for (condition,), group in source.group_by("condition", maintain_order=True):
        rounds[condition] = int(group.sort(by, descending=descending).row(0, named=True)["round"])
    for (condition,), group in checkpoints.group_by("condition", maintain_order=True):
        rounds.setdefault(condition, int(group["round"].max()))
    return rounds


def table_one(checkpoints: pl.DataFrame, rounds: Mapping[str, int]) -> pl.DataFrame:
    """The paper's Table 1: per arm, Pass@n, Maj@n, Avg@n at its judged round (``rounds``, chosen on
    dev or the last), and at its last round."""
    rows = []
    for (condition,), group in checkpoints.group_by("condition", maintain_order=True):
        chosen = group.filter(pl.col("round") == rounds.get(condition, group["round"].max()))
        chosen = chosen if chosen.height else group.sort("round").tail(1)
        judged, last = chosen.row(0, named=True), group.sort("round").row(-1, named=True)
        rows.append(
            {"condition": condition, "round": judged["round"]}
            | {key: judged[key] for key in ("pass_n", "maj", "avg", "avg_low", "avg_high", "length")}
            | {f"last_{key}": last[key] for key in ("round", "pass_n", "maj", "avg", "avg_low", "avg_high", "length")}
        )
    return pl.DataFrame(rows)


def beats_base(checkpoints: pl.DataFrame) -> pl.DataFrame:
    """Checkpoints whose Avg@n CI lies entirely above the base solver's Avg@n CI upper bound."""
    base = checkpoints.filter(pl.col("condition") == "base")
    if base.height == 0:
        return checkpoints.clear()
    return checkpoints.filter((pl.col("condition") != "base") & (pl.col("avg_low") > base["avg_high"][0]))


def critic_qa(critiques: pl.DataFrame) -> pl.DataFrame:
    """Per critiques file (seed, condition, round): verdicts, parse and fallback rates, alignment, leaks.

    Rows the critic did not review (``critic`` = ``reward_only``: an LLM critic's GRPO and reference
    traces) count as traces but not in the rates.
    """
    reviewed = pl.col("critic") != "reward_only"
    return (
        critiques.group_by("seed", "condition", "round", maintain_order=True)
        .agg(
            traces=pl.len(),
            reviewed=reviewed.sum(),
            wrong=(pl.col("verdict") == "wrong").sum(),
            correct=(pl.col("verdict") == "correct").sum(),
            parse_errors=(pl.col("parse_error").is_not_null() & reviewed).sum(),
            parse_rate=1 - (pl.col("parse_error").is_not_null() & reviewed).sum() / reviewed.sum(),
            fallback_rate=(pl.col("fallback").is_not_null() & reviewed).sum() / reviewed.sum(),
            mean_alignment=pl.col("alignment_score").mean(),
            leak_rate=pl.col("answer_leak").filter(reviewed & pl.col("parse_error").is_null()).mean(),
            rewrite_correct=pl.col("rewrite_correct").mean(),
        )
        .sort("seed", "round", "condition")
    )


def advantage_pivot(aggregates: pl.DataFrame) -> pl.DataFrame:
    """Rows (correctness, category), one column per context kind: 'mean / share<0 / mean|A| (tokens)'."""
    cells = aggregates.with_columns(
        cell=pl.when(pl.col("n_tokens") > 0)
        .then(
            pl.format(
                "{} / {} / {} ({})",
                *(pl.col(c).round(3) for c in ("mean_advantage", "share_negative", "mean_abs_advantage")),
                "n_tokens",
            )
        )
        .otherwise(pl.lit("-"))
    )
    return cells.pivot(on="context_kind", index=["correctness", "category"], values="cell", maintain_order=True)


def training_frame(logs: Mapping[tuple[int, str, int], pl.DataFrame]) -> pl.DataFrame:
    """Every training log stacked, keyed by (seed, arm, round), with a step counter running across rounds."""
    parts = [
        frame.with_columns(seed=pl.lit(seed), condition=pl.lit(arm), round=pl.lit(round_index))
        for (seed, arm, round_index), frame in sorted(logs.items())
    ]
    if not parts:
        return pl.DataFrame()
    stacked = pl.concat(parts, how="vertical_relaxed")
    return stacked.with_columns(global_step=pl.int_range(1, pl.len() + 1).over("seed", "condition"))


def paired_differences(
    samples: pl.DataFrame,
    pairs: Sequence[tuple[str, str]],
    rounds: Mapping[str, int],
    *,
    resamples: int,
    seed: int,
) -> pl.DataFrame:
    """Avg@n differences between checkpoints on the same problems, with paired 95% bootstrap CIs.

    ``pairs`` are (a, b) condition names; each side is that condition's judged round (``rounds``:
    chosen on dev, or the last; the base solver's round 0). Per-problem Avg@n is averaged over seeds
    first, then ``a - b`` per problem is bootstrapped over problems: far tighter than comparing two
    unpaired CIs.
    """
    judged = pl.DataFrame(
        {"condition": list(rounds), "round": list(rounds.values())}, schema={"condition": pl.String, "round": pl.Int32}
    )
    last = samples.select("condition", "round").unique().join(judged, on=["condition", "round"])
    per_problem = (
        samples.join(last, on=["condition", "round"])
        .group_by("condition", "seed", "problem_id")
        .agg(pl.col("is_correct").mean())
        .group_by("condition", "problem_id")
        .agg(pl.col("is_correct").mean())
    )
    rounds = dict(last.iter_rows())
    rows = []
    for a, b in pairs:
        if a not in rounds or b not in rounds:
            continue
        both = per_problem.filter(condition=a).join(per_problem.filter(condition=b), on="problem_id").sort("problem_id")
        diff = (both["is_correct"] - both["is_correct_right"]).to_numpy()
        mean, low, high = bootstrap_ci(diff, resamples=resamples, seed=seed)[0]
        rows.append(
            {
                "comparison": f"{a} (round {rounds[a]}) - {b} (round {rounds[b]})",
                "problems": len(diff),
                "difference": float(mean),
                "ci_low": float(low),
                "ci_high": float(high),
                "ci_half_width": float((high - low) / 2),
            }
        )
    schema = {"comparison": pl.String, "problems": pl.Int64, "difference": pl.Float64, "ci_low": pl.Float64,
              "ci_high": pl.Float64, "ci_half_width": pl.Float64}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def comparison_pairs(arms: Mapping[str, str], conditions: Sequence[str]) -> list[tuple[str, str]]:
    """Every arm minus the base solver; critique minus reference and minus GRPO; each variant minus
    the arm of its context kind. ``arms`` maps self-distillation arms to their context kind."""
    present = set(conditions)
    pairs = [(arm, "base") for arm in conditions if arm != "base"]
    pairs += [("critique", other) for other in ("reference", "grpo") if {"critique", other} <= present]
    pairs += [(arm, kind) for arm, kind in arms.items() if arm != kind and {arm, kind} <= present]
    return pairs
