"""Adapter: rule train_grpo -> pipeline.grpo.train_grpo (under torchrun if gpu > 1)."""

from pathlib import Path

from pipeline.launch import run_training
from pipeline.logs import log_disk_use, setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    paths = {
        "traces": Path(snakemake.input.traces),
        "critiques": Path(snakemake.input.critiques),
        "student": Path(snakemake.input.student),
        "initial": Path(snakemake.input.initial),
        "out_model": Path(snakemake.output.model),
        "out_log": Path(snakemake.output.train_log),
    }
    devices = int(snakemake.resources.get("gpu", 0))
    run_training("train_grpo", devices=devices, params=snakemake.params.cfg, paths=paths)
    log_disk_use(snakemake.output)


if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
