"""Adapter: rule build_teacher_contexts -> pipeline.contexts.build_teacher_contexts."""

from pathlib import Path

from pipeline.config import ContextsConfig, PromptConfig, from_params
from pipeline.contexts import build_teacher_contexts
from pipeline.logs import log_disk_use, setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    build_teacher_contexts(
        traces=Path(snakemake.input.traces),
        critiques=Path(snakemake.input.critiques),
        problems=Path(snakemake.input.problems),
        model=Path(snakemake.input.model),
        out=Path(snakemake.output[0]),
        condition=snakemake.wildcards.condition,
        kind=snakemake.params.kind,
        cfg=from_params(ContextsConfig, snakemake.params.cfg, where="contexts"),
        prompt=from_params(PromptConfig, snakemake.params.prompt, where="traces.prompt"),
    )
    log_disk_use(snakemake.output)


if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
