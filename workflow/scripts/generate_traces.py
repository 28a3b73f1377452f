"""Adapter: rule generate_traces -> pipeline.traces.generate_traces."""

from pathlib import Path

from pipeline.config import TracesConfig, from_params
from pipeline.logs import exit_cleanly, log_disk_use, setup_logging
from pipeline.traces import generate_traces


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    generate_traces(
        problems=Path(snakemake.input.problems),
        model=Path(snakemake.input.model),
        out=Path(snakemake.output[0]),
        condition=snakemake.wildcards.condition,
        round_index=int(snakemake.wildcards.round),
        cfg=from_params(TracesConfig, snakemake.params.cfg, where="traces"),
    )
    log_disk_use(snakemake.output)
    exit_cleanly()


# The guard matters: vLLM spawns its engine process, which re-imports this module.
if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
