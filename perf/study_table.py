"""Print a study's table from its evaluation samples, as Markdown: one row per checkpoint of a split
(Avg@n with its 95% CI, format rate, answer-only share, mean length) and its paired difference to a
baseline checkpoint on the same problems. It reads only the Parquet a run wrote, so the table in
docs/experiments/loss_study.md is reproduced from a finished study folder by:

    .venv/bin/python perf/study_table.py --split dev --baseline critique
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from pipeline.report import checkpoint_table, paired_differences


def study_table(samples: pl.DataFrame, baseline: str, *, resamples: int = 2000, seed: int = 0) -> pl.DataFrame:
    """Per (condition, round): the split's metrics and the paired Avg@n difference to ``baseline``
    (its last round) with a 95% bootstrap CI over problems."""
    table = checkpoint_table(samples, resamples=resamples, seed=seed)
    base_round = int(table.filter(condition=baseline)["round"].max())
    rows = []
    for row in table.iter_rows(named=True):
        paired = paired_differences(
            samples,
            [(row["condition"], baseline)],
            {row["condition"]: row["round"], baseline: base_round},
            resamples=resamples,
            seed=seed,
        )
        same = row["condition"] == baseline and row["round"] == base_round
        diff = None if same or not paired.height else paired.row(0, named=True)
        versus = "" if diff is None else f"{diff['difference']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]"
        rows.append(
            {
                "checkpoint": f"{row['condition']} r{row['round']}",
                "avg": f"{row['avg']:.3f} [{row['avg_low']:.3f}, {row['avg_high']:.3f}]",
                "format": f"{row['format_rate']:.2f}",
                "answer_only": f"{row['answer_only']:.3f}",
                "length": f"{row['length']:.0f}",
                f"minus {baseline}": versus,
            }
        )
    return pl.DataFrame(rows)


def markdown(frame: pl.DataFrame) -> str:
    """The frame as a Markdown table."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="the run's results folder")
    parser.add_argument("--split", default="dev", choices=["dev", "eval"])
    parser.add_argument("--baseline", default="critique", help="the checkpoint every row is compared with")
    args = parser.parse_args()
    samples = pl.read_parquet(sorted(args.results.glob(f"seed_*/{args.split}/*/round_*.parquet")))
    print(markdown(study_table(samples, args.baseline)))


if __name__ == "__main__":
    main()
