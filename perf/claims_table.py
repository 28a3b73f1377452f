"""Print a finished run's claims table (the report's first section) as Markdown, from its Parquet:
each claim per seed and pooled over seeds, with its 95% CI and verdict. Each arm is judged at its
best dev round where the run evaluated dev, else at its last round, as in the report. From the run's
folder:

    .venv/bin/python perf/claims_table.py
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import polars as pl

from pipeline.claims import claims_table
from pipeline.report import checkpoint_table, chosen_rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="the run's results folder")
    parser.add_argument("--resamples", type=int, default=1000, help="as the report: evaluate.bootstrap_resamples")
    args = parser.parse_args()
    evals = pl.read_parquet(sorted(args.results.glob("seed_*/eval/*/round_*.parquet")))
    dev_files = sorted(args.results.glob("seed_*/dev/*/round_*.parquet"))
    checkpoints = checkpoint_table(evals, resamples=args.resamples, seed=0)
    dev = checkpoint_table(pl.read_parquet(dev_files), resamples=args.resamples, seed=0) if dev_files else None
    tokens = {
        int(re.search(r"seed_(\d+)", str(path)).group(1)): pl.read_parquet(path)
        for path in sorted(args.results.glob("seed_*/advantages/tokens.parquet"))
    }
    table = claims_table(evals, chosen_rounds(checkpoints, dev), tokens, resamples=args.resamples, seed=0)
    print("| claim | statement | seed | contrast [95% CI] | verdict | paper |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in table.iter_rows(named=True):
        ci = f"{row['contrast']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
        print(f"| {row['claim']} | {row['statement']} | {row['seed']} | {ci} | {row['verdict']} | {row['paper']} |")


if __name__ == "__main__":
    main()
