"""Adapter: rule prepare_problems -> pipeline.problems.prepare_problems."""

from pathlib import Path

from pipeline.config import ProblemsConfig, from_params
from pipeline.logs import log_disk_use, setup_logging
from pipeline.problems import prepare_problems


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    prepare_problems(
        train=Path(snakemake.output.train),
        eval=Path(snakemake.output.eval),
        dev=Path(snakemake.output.dev),
        rejects=Path(snakemake.output.rejects),
        cfg=from_params(ProblemsConfig, snakemake.params.cfg, where="problems"),
    )
    log_disk_use(snakemake.output)


# The guard matters: vLLM spawns its engine process, which re-imports this module.
if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
