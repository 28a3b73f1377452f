"""Adapter: rule check_premise -> pipeline.premise.check_premise."""

from pathlib import Path

from pipeline.config import EvaluateConfig, from_params
from pipeline.logs import exit_cleanly, setup_logging
from pipeline.premise import check_premise


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    check_premise(
        traces=Path(snakemake.input.traces),
        contexts={kind: Path(path) for kind, path in zip(snakemake.params.kinds, snakemake.input.contexts)},
        problems=Path(snakemake.input.problems),
        model=Path(snakemake.input.model),
        samples_out=Path(snakemake.output.samples),
        summary_out=Path(snakemake.output.summary),
        run_seed=int(snakemake.wildcards.seed),
        cfg=from_params(EvaluateConfig, snakemake.params.cfg, where="evaluate"),
    )
    exit_cleanly()


# The guard matters: vLLM spawns its engine process, which re-imports this module.
if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
