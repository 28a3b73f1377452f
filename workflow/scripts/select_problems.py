"""Adapter: rule select_problems -> pipeline.select_problems.select_problems."""

from pathlib import Path

from pipeline.config import SelectionFilters, from_params
from pipeline.logs import log_disk_use, setup_logging
from pipeline.select_problems import select_problems


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    select_problems(
        train=Path(snakemake.input.train),
        eval=Path(snakemake.input.eval),
        dev=Path(snakemake.input.dev),
        samples=Path(snakemake.input.samples),
        critic_answers=Path(snakemake.input.critic_answers[0]) if snakemake.input.critic_answers else None,
        train_out=Path(snakemake.output.train),
        eval_out=Path(snakemake.output.eval),
        dev_out=Path(snakemake.output.dev),
        dropped_out=Path(snakemake.output.dropped),
        summary_out=Path(snakemake.output.summary),
        filters=from_params(SelectionFilters, snakemake.params.cfg, where="select_problems.filters"),
    )
    log_disk_use(snakemake.output)


if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
