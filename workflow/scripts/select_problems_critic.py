"""Adapter: rule select_problems_critic -> pipeline.select_problems.sample_critic."""

from pathlib import Path

from pipeline.config import CriticSolveConfig, from_params
from pipeline.logs import exit_cleanly, log_disk_use, setup_logging
from pipeline.select_problems import sample_critic


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    sample_critic(
        train=Path(snakemake.input.train),
        eval=Path(snakemake.input.eval),
        dev=Path(snakemake.input.dev),
        model=Path(snakemake.input.critic[0]),
        out=Path(snakemake.output[0]),
        cfg=from_params(CriticSolveConfig, snakemake.params.cfg, where="select_problems.critic"),
    )
    log_disk_use(snakemake.output)
    exit_cleanly()


# The guard matters: vLLM spawns its engine process, which re-imports this module.
if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
