"""Adapter: rule analyse_advantages -> pipeline.advantages.analyse_advantages."""

from pathlib import Path

from pipeline.advantages import analyse_advantages
from pipeline.config import AdvantagesConfig, from_params
from pipeline.logs import log_disk_use, setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    analyse_advantages(
        teacher_logprobs={
            kind: Path(path) for kind, path in zip(snakemake.params.kinds, snakemake.input.teacher_logprobs)
        },
        traces=Path(snakemake.input.traces),
        critiques=Path(snakemake.input.critiques),
        model=Path(snakemake.input.model),
        tokens_out=Path(snakemake.output.tokens),
        aggregates_out=Path(snakemake.output.aggregates),
        figure_html=Path(snakemake.output.figure_html),
        figure_png=Path(snakemake.output.figure_png),
        cfg=from_params(AdvantagesConfig, snakemake.params.cfg, where="advantages"),
    )
    log_disk_use(snakemake.output)


if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
