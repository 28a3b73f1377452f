"""Adapter: rule precompute_teacher_logprobs -> pipeline.teacher.precompute_teacher_logprobs."""

from pathlib import Path

from pipeline.config import TeacherConfig, from_params
from pipeline.logs import exit_cleanly, log_disk_use, setup_logging
from pipeline.teacher import precompute_teacher_logprobs


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    precompute_teacher_logprobs(
        contexts=Path(snakemake.input.contexts),
        traces=Path(snakemake.input.traces),
        critiques=Path(snakemake.input.critiques),
        student_scores=Path(snakemake.input.student_scores),
        model=Path(snakemake.input.model),
        out=Path(snakemake.output[0]),
        cfg=from_params(TeacherConfig, snakemake.params.cfg, where="teacher"),
    )
    log_disk_use(snakemake.output)
    exit_cleanly()


# The guard matters: vLLM spawns its engine process, which re-imports this module.
if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
