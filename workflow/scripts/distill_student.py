"""Adapter: rule distill_student -> pipeline.distill.distill_student (under torchrun if gpu > 1)."""

from pathlib import Path

from pipeline.launch import run_training
from pipeline.logs import log_disk_use, setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    paths = {
        "teacher_logprobs": Path(snakemake.input.teacher_logprobs),
        "traces": Path(snakemake.input.traces),
        "student": Path(snakemake.input.student),
        "out_model": Path(snakemake.output.model),
        "out_log": Path(snakemake.output.train_log),
    }
    run_training(
        "distill_student", devices=int(snakemake.resources.get("gpu", 0)), params=snakemake.params.cfg, paths=paths
    )
    log_disk_use(snakemake.output)


if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
