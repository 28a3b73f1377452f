"""The report's HTML page: tables rendered as HTML, the premise rows and flags, and the whole page
(``render_report``) with its figures embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from pipeline.claims import overall_verdicts
from pipeline.report.plots import avg_per_round_figure, entropy_figure, paired_figure, training_curves_figure
from pipeline.report.tables import advantage_pivot, beats_base, critic_qa, table_one


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
