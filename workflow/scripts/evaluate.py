"""Adapter: rule evaluate -> pipeline.evaluate.evaluate."""

from pathlib import Path

from pipeline.config import EvaluateConfig, PromptConfig, from_params
from pipeline.evaluate import evaluate
from pipeline.logs import exit_cleanly, log_disk_use, setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    evaluate(
        problems=Path(snakemake.input.problems),
        model=Path(snakemake.input.model),
        samples_out=Path(snakemake.output.samples),
        summary_out=Path(snakemake.output.summary),
        condition=snakemake.wildcards.condition,
        round_index=int(snakemake.wildcards.round),
        run_seed=int(snakemake.wildcards.seed),
        prompt=from_params(PromptConfig, snakemake.params.prompt, where="traces.prompt"),
        cfg=from_params(EvaluateConfig, snakemake.params.cfg, where="evaluate"),
    )
    log_disk_use(snakemake.output)
    exit_cleanly()


# The guard matters: vLLM spawns its engine process, which re-imports this module.
if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
