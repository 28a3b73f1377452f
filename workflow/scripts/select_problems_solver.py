"""Adapter: rule select_problems_solver -> pipeline.select_problems.sample_solver."""

from pathlib import Path

from pipeline.config import PromptConfig, SelectionSamplingConfig, from_params
from pipeline.logs import exit_cleanly, log_disk_use, setup_logging
from pipeline.select_problems import sample_solver


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    sample_solver(
        train=Path(snakemake.input.train),
        eval=Path(snakemake.input.eval),
        dev=Path(snakemake.input.dev),
        model=Path(snakemake.input.model),
        out=Path(snakemake.output[0]),
        prompt=from_params(PromptConfig, snakemake.params.prompt, where="traces.prompt"),
        cfg=from_params(SelectionSamplingConfig, snakemake.params.cfg, where="select_problems.solver"),
    )
    log_disk_use(snakemake.output)
    exit_cleanly()


# The guard matters: vLLM spawns its engine process, which re-imports this module.
if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
