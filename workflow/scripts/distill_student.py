"""Adapter: rule distill_student -> pipeline.distill.distill_student."""

from pathlib import Path

from pipeline.config import DistillConfig, from_params
from pipeline.distill import distill_student
from pipeline.logs import setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    distill_student(
        teacher_logprobs=Path(snakemake.input.teacher_logprobs),
        traces=Path(snakemake.input.traces),
        student=Path(snakemake.input.student),
        out_model=Path(snakemake.output.model),
        out_log=Path(snakemake.output.train_log),
        cfg=from_params(DistillConfig, snakemake.params.cfg, where="distill"),
    )


if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
