"""Adapter: rule score_traces -> pipeline.score_traces.score_traces."""

from pathlib import Path

from pipeline.config import EngineConfig, from_params
from pipeline.logs import exit_cleanly, log_disk_use, setup_logging
from pipeline.score_traces import score_traces


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    score_traces(
        traces=Path(snakemake.input.traces),
        model=Path(snakemake.input.model),
        out=Path(snakemake.output[0]),
        cfg=from_params(EngineConfig, snakemake.params.cfg, where="teacher.engine"),
    )
    log_disk_use(snakemake.output)
    exit_cleanly()


# The guard matters: vLLM spawns its engine process, which re-imports this module.
if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
