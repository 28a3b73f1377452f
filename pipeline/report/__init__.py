"""Stage ``report``: one self-contained HTML page that answers "did it work, and why?".

Sections: this run's version of the paper's Table 1 (best and last round of every arm), Avg@n per
round with 95% CIs, training curves, the premise check, the per-token advantage aggregates and
figure, critic QA, and provenance. Figures are embedded as base64 PNG, so the page opens from disk
in any browser with no server. With several run seeds, a checkpoint's per-problem metrics are
averaged over the seeds before the bootstrap over problems.

The package, by concept: ``tables`` (frames in, frames out), ``plots`` (the figures as PNG bytes),
``page`` (the HTML page) and ``stage`` (reads every input, writes the page). Every name is
importable from ``pipeline.report`` as before.
"""

from __future__ import annotations

from pipeline.report.page import (
    STYLE,
    claims_html,
    dev_html,
    html_table,
    premise_flags,
    premise_rows,
    render_report,
    selection_html,
    table_one_html,
)
from pipeline.report.plots import avg_per_round_figure, entropy_figure, paired_figure, training_curves_figure
from pipeline.report.stage import PACKAGES, STAGE, provenance, report
from pipeline.report.tables import (
    ARM_ORDER,
    advantage_pivot,
    arm_colors,
    beats_base,
    checkpoint_table,
    chosen_rounds,
    comparison_pairs,
    critic_qa,
    paired_differences,
    table_one,
    training_frame,
)

__all__ = [
    "ARM_ORDER",
    "PACKAGES",
    "STAGE",
    "STYLE",
    "advantage_pivot",
    "arm_colors",
    "avg_per_round_figure",
    "beats_base",
    "checkpoint_table",
    "chosen_rounds",
    "claims_html",
    "comparison_pairs",
    "critic_qa",
    "dev_html",
    "entropy_figure",
    "html_table",
    "paired_differences",
    "paired_figure",
    "premise_flags",
    "premise_rows",
    "provenance",
    "render_report",
    "report",
    "selection_html",
    "table_one",
    "table_one_html",
    "training_curves_figure",
    "training_frame",
]
