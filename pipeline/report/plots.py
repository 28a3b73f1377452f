"""The report's figures (matplotlib, Agg), each returned as PNG bytes: Avg@n per round, training
curves, paired differences, token entropy per checkpoint."""

from __future__ import annotations

from typing import Any

import polars as pl

from pipeline.figures import png_bytes, pyplot
from pipeline.report.tables import arm_colors


def _png(fig: Any) -> bytes:
    return png_bytes(fig, dpi=110, bbox_inches="tight")


def avg_per_round_figure(checkpoints: pl.DataFrame, n: int) -> bytes:
    """Avg@n per round per arm, with 95% CI bars; the base solver is every arm's round 0."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    base = checkpoints.filter(pl.col("condition") == "base")
    arms = [arm for arm in checkpoints["condition"].unique(maintain_order=True) if arm != "base"]
    colors = arm_colors(arms)
    for i, arm in enumerate(arms):
        group = checkpoints.filter(pl.col("condition") == arm)
        points = pl.concat([base, group]).sort("round")
        offset = (i - (len(arms) - 1) / 2) * 0.04
        ax.errorbar(
            points["round"].to_numpy() + offset,
            points["avg"].to_numpy(),
            yerr=[points["avg"] - points["avg_low"], points["avg_high"] - points["avg"]],
            marker="o",
            capsize=3,
            label=arm,
            color=colors[arm],
        )
    ax.set_xlabel("round")
    ax.set_ylabel(f"Avg@{n}")
    ax.set_xticks(sorted(set(checkpoints["round"].to_list())))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def training_curves_figure(training: pl.DataFrame) -> bytes:
    """Per optimizer step of every arm (first seed): loss, KL, GRPO reward, the student's mean token
    entropy, and for distillation the student's and the teacher's on the teacher's stored top-k + tail
    support (comparable to each other), where flattening shows as it happens."""
    plt = pyplot()

    panels = [
        ("loss", "loss"),
        ("kl", "KL to teacher / initial policy"),
        ("mean_reward", "GRPO mean reward"),
        ("student_entropy", "student token entropy (nats)"),
        ("student_support_entropy", "on the teacher's support: student, teacher dashed"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(19, 3.2))
    first_seed = training["seed"].min()
    colors = arm_colors(training["condition"].unique().to_list())
    for ax, (column, title) in zip(axes, panels):
        for (arm,), group in training.filter(pl.col("seed") == first_seed).group_by("condition", maintain_order=True):
            values = group.select("global_step", column).drop_nulls()
            if values.height:
                ax.plot(values["global_step"], values[column], marker=".", label=arm, color=colors[arm])
            teacher = group.select("global_step", "teacher_entropy").drop_nulls()
            if column == "student_support_entropy" and teacher.height:
                ax.plot(teacher["global_step"], teacher["teacher_entropy"], ls="--", color=colors[arm])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step (all rounds)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _png(fig)


def paired_figure(differences: pl.DataFrame) -> bytes:
    """The paired differences as a forest plot: one CI bar per comparison, zero marked."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 0.45 * differences.height + 1.0))
    y = list(range(differences.height))[::-1]
    ax.errorbar(
        differences["difference"],
        y,
        xerr=[differences["difference"] - differences["ci_low"], differences["ci_high"] - differences["difference"]],
        fmt="o",
        capsize=3,
        color="k",
    )
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(y, differences["comparison"].to_list(), fontsize=8)
    ax.set_xlabel("paired Avg difference (95% CI over problems)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def entropy_figure(checkpoints: pl.DataFrame) -> bytes:
    """Mean token entropy of each checkpoint's eval samples per round (the base solver at round 0)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    base = checkpoints.filter(pl.col("condition") == "base")
    arms = [a for a in checkpoints["condition"].unique(maintain_order=True) if a != "base"]
    colors = arm_colors(arms)
    for arm in arms:
        points = pl.concat([base, checkpoints.filter(pl.col("condition") == arm)]).sort("round")
        ax.plot(points["round"], points["token_entropy"], marker="o", label=arm, color=colors[arm])
    ax.set_xlabel("round")
    ax.set_ylabel("mean token entropy (nats)")
    ax.set_xticks(sorted(set(checkpoints["round"].to_list())))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
