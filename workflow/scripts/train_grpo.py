"""Adapter: rule train_grpo -> pipeline.grpo.train_grpo."""

from pathlib import Path

from pipeline.config import GrpoConfig, from_params
from pipeline.grpo import train_grpo
from pipeline.logs import setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    train_grpo(
        traces=Path(snakemake.input.traces),
        critiques=Path(snakemake.input.critiques),
        student=Path(snakemake.input.student),
        initial=Path(snakemake.input.initial),
        out_model=Path(snakemake.output.model),
        out_log=Path(snakemake.output.train_log),
        cfg=from_params(GrpoConfig, snakemake.params.cfg, where="grpo"),
    )


if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
