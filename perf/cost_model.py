"""Cost model of a config at scale: tokens and GPU-hours per stage and round (pipeline.cost_model).

    .venv/bin/python perf/cost_model.py config/paper.yaml [--critic-thinking 8000]

Prints the per-stage table (tokens in millions, GPU-hours), round 0, each later round, the once-off
jobs and the whole run, and the wall-clock lower bound on a box of --gpus GPUs.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import polars as pl
import yaml
from snakemake.utils import update_config

from pipeline.cost_model import Lengths, Throughput, experiment_cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path, help="config files merged over config/config.yaml")
    parser.add_argument("--gpus", type=int, default=4, help="GPUs of the box (the paper: 4 x H100)")
    for field in dataclasses.fields(Lengths):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=int, default=field.default)
    args = parser.parse_args()
    config: dict = yaml.safe_load(Path("config/config.yaml").read_text())
    for path in args.configs:
        update_config(config, yaml.safe_load(path.read_text()))
    lengths = Lengths(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Lengths)})
    cost = experiment_cost(config, lengths, Throughput())
    table = cost["table"].with_columns(
        (pl.col(c) / 1e6).round(2) for c in ("solver_decoded", "critic_decoded", "scored", "trained")
    )
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, float_precision=2, tbl_hide_dataframe_shape=True):
        print(f"lengths: {dataclasses.asdict(lengths)}")
        print("tokens in millions per job kind and round (all arms), GPU-hours on H100s:")
        print(table)
    rounds = config["experiment"]["rounds"]
    print(f"round 0: {cost['round_0']:.2f} GPU-h; each later round: {cost['later_round']:.2f} GPU-h; "
          f"once (selection, premise): {cost['once']:.2f} GPU-h")  # fmt: skip
    print(f"whole run ({rounds} rounds, {len(config['experiment']['seeds'])} seed(s)): {cost['whole_run']:.1f} GPU-h, "
          f">= {cost['whole_run'] / args.gpus:.1f} h on {args.gpus} GPUs")  # fmt: skip


if __name__ == "__main__":
    main()
