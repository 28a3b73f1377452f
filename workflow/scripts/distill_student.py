"""Adapter: rule distill_student -> pipeline.distill.distill_student (under torchrun if gpu > 1)."""

from pathlib import Path

from pipeline.config import DistillConfig, from_params
from pipeline.distill import distill_student
from pipeline.launch import run_distributed
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
    devices = int(snakemake.resources.get("gpu", 0))
    if devices > 1:
        run_distributed("distill_student", nproc=devices, params=snakemake.params.cfg, paths=paths)
    else:
        distill_student(**paths, cfg=from_params(DistillConfig, snakemake.params.cfg, where="distill"))
    log_disk_use(snakemake.output)


if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
