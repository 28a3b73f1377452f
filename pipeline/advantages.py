"""Stage ``analyse_advantages``: where each context makes the teacher disagree with the student.

On the shared round-0 traces, the per-token advantage ``A_t = log p_teacher(y_t) - log p_student(y_t)``
(both stored by ``precompute_teacher_logprobs``) is computed under every context kind and split by
trace correctness and token category: before the first wrong step, in it, after it, and the answer.
The stage writes the per-token values, their aggregates, and the paper's Figure 4 (tokens coloured by
``A_t``, one column per context kind) as a self-contained HTML page and a PNG.
"""

from __future__ import annotations

import dataclasses
import html
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.artifacts import (
    ADVANTAGE_AGGREGATES_SCHEMA,
    ADVANTAGE_TOKENS_SCHEMA,
    CRITIQUES_SCHEMA,
    TRACES_SCHEMA,
    model_label,
    read_artifact,
    read_teacher_logprobs,
    write_artifact,
    write_bytes_atomic,
    write_text_atomic,
)
from pipeline.config import AdvantagesConfig
from pipeline.engines import load_tokenizer
from pipeline.figures import png_bytes, pyplot
from pipeline.tasks.token_spans import CATEGORIES, categorise_tokens, token_char_spans

log = logging.getLogger(__name__)
STAGE = "analyse_advantages"

CORRECTNESS = ("correct", "incorrect")

_EMPTY_MARK = "\u2205"  # shown in the figure for a token with no text (special, or part of a character)
_NEWLINE_MARK = "\u21b5"
_NEGATIVE_RGB = (236, 84, 78)
_POSITIVE_RGB = (72, 133, 237)
_NAN_RGB = (200, 200, 200)


def shared_trace_ids(teacher: Mapping[str, pl.DataFrame]) -> list[str]:
    """Sorted trace ids present under every context kind."""
    sets = [set(frame["trace_id"].to_list()) for frame in teacher.values()]
    return sorted(set.intersection(*sets)) if sets else []


def label_traces(traces: pl.DataFrame, critiques: pl.DataFrame, tokenizer: Any) -> pl.DataFrame:
    """Per trace: its decoded token pieces and their categories, with correctness and first wrong step."""
    rows = traces.join(critiques.select("trace_id", "first_wrong_step"), on="trace_id", how="left")
    tokens, categories = [], []
    for row in rows.iter_rows(named=True):
        text = row["completion_text"]
        try:
            spans = token_char_spans(row["completion_token_ids"], text, tokenizer)
        except ValueError as exc:
            raise ValueError(f"trace {row['trace_id']}: {exc}") from exc
        tokens.append([text[a:b] for a, b in spans])
        categories.append(categorise_tokens(spans, text, row["step_spans"], row["first_wrong_step"]))
    return rows.select("trace_id", "problem_id", "is_correct", "first_wrong_step").with_columns(
        tokens=pl.Series(tokens, dtype=pl.List(pl.String)),
        categories=pl.Series(categories, dtype=pl.List(pl.String)),
    )


def token_advantages(labelled: pl.DataFrame, teacher: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per (trace, kind) for the traces every kind scored; kinds in ``teacher`` order."""
    shared = labelled.filter(pl.col("trace_id").is_in(shared_trace_ids(teacher))).sort("trace_id")
    frames = []
    for kind, frame in teacher.items():
        scored = frame.select(
            "trace_id",
            context_kind=pl.lit(kind),
            advantages=(pl.col("teacher_token_logprobs") - pl.col("student_token_logprobs")).cast(pl.List(pl.Float32)),
        )
        frames.append(shared.join(scored, on="trace_id", how="inner", maintain_order="left"))
    out = pl.concat(frames).select(ADVANTAGE_TOKENS_SCHEMA.names()) if frames else ADVANTAGE_TOKENS_SCHEMA.to_frame()
    bad = out.filter(pl.col("tokens").list.len() != pl.col("advantages").list.len())
    if bad.height:
        raise ValueError(f"log-probs and completion tokens differ in length for {bad['trace_id'].unique().to_list()}")
    return out


def aggregate(tokens: pl.DataFrame) -> pl.DataFrame:
    """Token-weighted A_t statistics per (kind, correctness, category), on the full grid of the three."""
    long = (
        tokens.select(
            "trace_id",
            "context_kind",
            "categories",
            "advantages",
            correctness=pl.when(pl.col("is_correct")).then(pl.lit("correct")).otherwise(pl.lit("incorrect")),
        )
        .explode("categories", "advantages")
        .drop_nulls("categories")
        .rename({"categories": "category"})
    )
    stats = (
        pl.concat([long, long.with_columns(category=pl.lit("all"))])
        .group_by("context_kind", "correctness", "category")
        .agg(
            n_traces=pl.col("trace_id").n_unique().cast(pl.Int32),
            n_tokens=pl.len().cast(pl.Int64),
            mean_advantage=pl.col("advantages").mean().cast(pl.Float64),
            share_negative=(pl.col("advantages") < 0).mean().cast(pl.Float64),
            mean_abs_advantage=pl.col("advantages").abs().mean().cast(pl.Float64),
        )
    )
    grid = (
        pl.DataFrame({"context_kind": tokens["context_kind"].unique(maintain_order=True)})
        .join(pl.DataFrame({"correctness": list(CORRECTNESS)}), how="cross")
        .join(pl.DataFrame({"category": [*CATEGORIES, "all"]}), how="cross")
    )
    return (
        grid.join(stats, on=["context_kind", "correctness", "category"], how="left", maintain_order="left")
        .with_columns(pl.col("n_traces").fill_null(0), pl.col("n_tokens").fill_null(0))
        .select(ADVANTAGE_AGGREGATES_SCHEMA.names())
    )


def figure_trace_ids(tokens: pl.DataFrame, n: int) -> list[str]:
    """``n`` traces for the figure: incorrect ones with a located wrong step, then a correct one.

    Deterministic (by trace id); filled up with whatever else there is when either kind is short.
    """
    per_trace = tokens.unique("trace_id").sort("trace_id")
    located = pl.col("categories").list.contains("first_wrong")
    wrong = per_trace.filter(~pl.col("is_correct") & located)["trace_id"].to_list()
    correct = per_trace.filter(pl.col("is_correct"))["trace_id"].to_list()
    picked = wrong[: max(n - 1, 1)] + correct[:1]
    for trace_id in wrong + correct + per_trace["trace_id"].to_list():
        if len(picked) >= n:
            break
        if trace_id not in picked:
            picked.append(trace_id)
    return picked[:n]


def advantage_rgb(value: float, limit: float) -> tuple[int, int, int]:
    """Diverging colour of an A_t: white at 0, red below, blue above, saturating at ``|A_t| = limit``."""
    if value != value:  # NaN
        return _NAN_RGB
    t = min(abs(value) / limit, 1.0)
    end = _NEGATIVE_RGB if value < 0 else _POSITIVE_RGB
    return tuple(round(255 + (c - 255) * t) for c in end)  # type: ignore[return-value]


def _header(row: Mapping[str, Any]) -> str:
    wrong = row["first_wrong_step"]
    verdict = "correct" if row["is_correct"] else "incorrect"
    return f"{row['trace_id']}: {verdict}" + (f", first wrong step {wrong}" if wrong is not None else "")


def _figure_rows(tokens: pl.DataFrame, trace_ids: Sequence[str], kinds: Sequence[str]) -> list[list[dict[str, Any]]]:
    """For each chosen trace, its row under each kind (in ``kinds`` order)."""
    chosen = tokens.filter(pl.col("trace_id").is_in(list(trace_ids)))
    rows = {(r["trace_id"], r["context_kind"]): r for r in chosen.iter_rows(named=True)}
    return [[rows[(trace_id, kind)] for kind in kinds] for trace_id in trace_ids]


def _html_tokens(row: Mapping[str, Any], limit: float) -> str:
    parts, in_wrong = [], False
    for piece, category, value in zip(row["tokens"], row["categories"], row["advantages"]):
        if (category == "first_wrong") != in_wrong:
            parts.append('<span class="wrong">' if not in_wrong else "</span>")
            in_wrong = not in_wrong
        shown = html.escape(piece).replace("\n", f"{_NEWLINE_MARK}<br>") if piece else _EMPTY_MARK
        r, g, b = advantage_rgb(value, limit)
        parts.append(
            f'<span style="background:rgb({r},{g},{b})" title="A_t = {value:+.3f} ({category})">{shown}</span>'
        )
    return "".join(parts) + ("</span>" if in_wrong else "")


def render_html(tokens: pl.DataFrame, trace_ids: Sequence[str], *, kinds: Sequence[str], color_limit: float) -> str:
    """A self-contained page: each chosen trace under each kind side by side, tokens coloured by A_t."""
    neg, pos = (f"rgb{advantage_rgb(s * color_limit, color_limit)}" for s in (-1, 1))
    columns = "".join(f"<th>{html.escape(kind)}</th>" for kind in kinds)
    blocks = []
    for cells in _figure_rows(tokens, trace_ids, kinds):
        body = "".join(
            f'<td><div class="mean">mean A_t {sum(c["advantages"]) / max(len(c["advantages"]), 1):+.3f}</div>'
            f'<div class="trace">{_html_tokens(c, color_limit)}</div></td>'
            for c in cells
        )
        blocks.append(
            f'<tr><th colspan="{len(kinds)}" class="head">{html.escape(_header(cells[0]))}</th></tr><tr>{body}</tr>'
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Per-token advantages</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; table-layout: fixed; width: 100%; }}
td, th {{ vertical-align: top; padding: 0.4em; border: 1px solid #ddd; }}
th.head {{ text-align: left; background: #f4f4f4; }}
.trace {{ font-family: monospace; font-size: 12px; line-height: 1.7; white-space: pre-wrap; word-break: break-all; }}
.mean {{ font-size: 11px; color: #555; margin-bottom: 0.3em; }}
.wrong {{ outline: 2px solid #000; }}
.bar {{ display: inline-block; width: 16em; height: 1em; vertical-align: middle;
  background: linear-gradient(to right, {neg}, #fff, {pos}); border: 1px solid #999; }}
</style></head>
<body>
<h1>Per-token advantage A<sub>t</sub> =
log p<sub>teacher</sub>(y<sub>t</sub>) &minus; log p<sub>student</sub>(y<sub>t</sub>)</h1>
<p>{-color_limit:g} <span class="bar"></span> {color_limit:+g} &nbsp; red: the context makes the teacher
disagree with the student's token; blue: more sure of it; saturating at |A<sub>t</sub>| = {color_limit:g}.
<span class="wrong">outlined</span>: the critic's first wrong step. {_EMPTY_MARK}: a token with no text of its
own (special token, part of a character); {_NEWLINE_MARK}: a newline. Hover a token for its value.</p>
<table><tr>{columns}</tr>
{"".join(blocks)}
</table></body></html>
"""


def _layout(pieces: Sequence[str], width: int) -> tuple[list[tuple[int, int, int, str]], int]:
    """(token, line, column, text) fragments of tokens laid out in a monospace box; number of lines."""
    fragments, line, col = [], 0, 0
    for index, piece in enumerate(pieces):
        parts = (piece or _EMPTY_MARK).replace("\t", " ").replace("\n", f"{_NEWLINE_MARK}\n").split("\n")
        for j, part in enumerate(parts):
            if j:
                line, col = line + 1, 0
            if col and col + len(part) > width:
                line, col = line + 1, 0
            while part:
                chunk, part = part[: width - col], part[width - col :]
                fragments.append((index, line, col, chunk))
                col += len(chunk)
                if part:
                    line, col = line + 1, 0
    return fragments, line + 1


def render_png(
    tokens: pl.DataFrame,
    trace_ids: Sequence[str],
    path: Path,
    *,
    kinds: Sequence[str],
    color_limit: float,
    width: int = 56,
    max_lines: int = 40,
    fontsize: float = 8.0,
    dpi: int = 120,
) -> None:
    """The HTML figure drawn with matplotlib: monospace token boxes wrapped at ``width`` characters.

    A trace longer than ``max_lines`` lines shows a window of them that starts a little before its
    first wrong step.
    """
    import numpy as np
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    plt = pyplot()

    gap, sub = 3, 8  # columns between kinds; image rows per text line (the top and bottom one stay white)
    cell_rows = _figure_rows(tokens, trace_ids, kinds)
    windows = []  # per trace: fragments (the same under every kind), first and last line shown, all lines
    for cells in cell_rows:
        fragments, n = _layout(cells[0]["tokens"], width)
        wrong = [line for i, line, _, _ in fragments if cells[0]["categories"][i] == "first_wrong"]
        first = max(0, min((wrong[0] - 4) if wrong else 0, n - max_lines))
        windows.append((fragments, first, min(n, first + max_lines), n))
    n_lines = 2 + sum(2 + last - first for _, first, last, _ in windows) + 2
    n_cols = len(kinds) * (width + gap)
    char_w, line_h = 0.602 * fontsize / 72, 1.55 * fontsize / 72  # DejaVu Sans Mono's advance, inches
    fig = plt.figure(figsize=(max(n_cols * char_w, 4), n_lines * line_h), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    text_style = {"family": "DejaVu Sans Mono", "fontsize": fontsize, "va": "center", "parse_math": False}
    image = np.ones((n_lines * sub, n_cols, 3))

    def paint(y: int, x: int, length: int, value: float) -> None:
        image[y * sub + 1 : (y + 1) * sub - 1, x : x + length] = np.array(advantage_rgb(value, color_limit)) / 255

    for k, kind in enumerate(kinds):
        ax.text(k * (width + gap), 0.5, kind, weight="bold", **text_style)
    outlines, y = [], 2
    for cells, (fragments, first, last, n) in zip(cell_rows, windows):
        shown = f" (lines {first + 1}-{last} of {n})" if last - first < n else ""
        ax.text(0, y + 0.5, _header(cells[0]) + shown, weight="bold", **text_style)
        for k, cell in enumerate(cells):
            x0, lines, wrong = k * (width + gap), {}, {}  # wrong: line -> (first, last column) of the step
            for index, line, col, chunk in fragments:
                if first <= line < last:
                    lines[line] = lines.get(line, "") + chunk
                    paint(y + 1 + line - first, x0 + col, len(chunk), cell["advantages"][index])
                    if cell["categories"][index] == "first_wrong":
                        wrong[line] = (wrong.get(line, (col, 0))[0], col + len(chunk))
            for line, text in lines.items():
                ax.text(x0, y + 1.5 + line - first, text, **text_style)
            outlines += [Rectangle((x0 + a, y + 1.1 + line - first), b - a, 0.8) for line, (a, b) in wrong.items()]
        y += 2 + last - first
    steps = 24
    for i in range(steps):
        paint(y, 6 + i, 1, (2 * i / (steps - 1) - 1) * color_limit)
    outlines.append(Rectangle((6 + steps + 12, y + 0.1), 2, 0.8))
    ax.text(0, y + 0.5, f"{-color_limit:+g}", **text_style)
    ax.text(7 + steps, y + 0.5, f"{color_limit:+g}", **text_style)
    ax.text(6 + steps + 15, y + 0.5, "first wrong step   A_t = log p_teacher - log p_student", **text_style)
    ax.imshow(image, extent=(0, n_cols, n_lines, 0), interpolation="nearest", aspect="auto", zorder=0)
    ax.add_collection(PatchCollection(outlines, facecolors="none", edgecolors="black", linewidths=0.9, zorder=1))
    ax.set_xlim(-1, n_cols)
    ax.set_ylim(n_lines, 0)
    write_bytes_atomic(png_bytes(fig, dpi=dpi, facecolor="white"), path)


def _read_teacher(path: Path, kind: str) -> pl.DataFrame:
    frame = read_teacher_logprobs(path).select(
        "trace_id", "context_kind", "teacher_token_logprobs", "student_token_logprobs"
    )
    others = set(frame["context_kind"].unique().to_list()) - {kind}
    if others:
        raise ValueError(f"{path} holds context kind(s) {sorted(others)}, expected only {kind!r}")
    return frame


def _stats(tokens: pl.DataFrame, aggregates: pl.DataFrame, kinds: Sequence[str], scored: int) -> dict[str, Any]:
    per_trace = tokens.unique("trace_id")

    def means(correctness: str, category: str) -> dict[str, float | None]:
        rows = aggregates.filter(correctness=correctness, category=category)
        values = dict(zip(rows["context_kind"], rows["mean_advantage"]))
        return {kind: None if values.get(kind) is None else round(values[kind], 4) for kind in kinds}

    return {
        "traces": per_trace.height,
        "correct": int(per_trace["is_correct"].sum()),
        "not_in_every_kind": scored - per_trace.height,
        "kinds": list(kinds),
        "mean_advantage_first_wrong": means("incorrect", "first_wrong"),
        "mean_advantage_pre_error_incorrect": means("incorrect", "pre_error"),
        "mean_advantage_correct": means("correct", "all"),
    }


def analyse_advantages(
    *,
    teacher_logprobs: Mapping[str, Path],
    traces: Path,
    critiques: Path,
    model: Path,
    tokens_out: Path,
    aggregates_out: Path,
    figure_html: Path,
    figure_png: Path,
    cfg: AdvantagesConfig,
) -> dict[str, Any]:
    """A_t per token under every context kind (keys of ``teacher_logprobs``) on the shared traces."""
    kinds = list(teacher_logprobs)
    teacher = {kind: _read_teacher(Path(path), kind) for kind, path in teacher_logprobs.items()}
    shared = shared_trace_ids(teacher)
    trace_frame = read_artifact(traces, schema=TRACES_SCHEMA, artifact="traces").filter(
        pl.col("trace_id").is_in(shared)
    )
    critique_frame = read_artifact(critiques, schema=CRITIQUES_SCHEMA, artifact="critiques")
    tokens = token_advantages(label_traces(trace_frame, critique_frame, load_tokenizer(model)), teacher)
    aggregates = aggregate(tokens)
    chosen = figure_trace_ids(tokens, cfg.figure_traces)
    write_text_atomic(render_html(tokens, chosen, kinds=kinds, color_limit=cfg.color_limit), figure_html)
    render_png(tokens, chosen, figure_png, kinds=kinds, color_limit=cfg.color_limit)

    scored = len(set().union(*(set(frame["trace_id"].to_list()) for frame in teacher.values())))
    stats = {**_stats(tokens, aggregates, kinds, scored), "figure_traces": chosen}
    params = {**dataclasses.asdict(cfg), "kinds": kinds, "stats": stats}
    provenance = model_label(model)
    for frame, out, schema, artifact in (
        (tokens, tokens_out, ADVANTAGE_TOKENS_SCHEMA, "advantage_tokens"),
        (aggregates, aggregates_out, ADVANTAGE_AGGREGATES_SCHEMA, "advantage_aggregates"),
    ):
        write_artifact(frame, out, schema=schema, artifact=artifact, stage=STAGE, params=params, model=provenance)
    log.info("advantages: %s", stats)
    return stats
