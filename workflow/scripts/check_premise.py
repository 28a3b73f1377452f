"""Adapter: rule check_premise -> pipeline.premise.check_premise."""

from pathlib import Path

from pipeline.config import ContextTemplates, PremiseConfig, PromptConfig, from_params
from pipeline.logs import exit_cleanly, log_disk_use, setup_logging
from pipeline.premise import check_premise


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    check_premise(
        traces=Path(snakemake.input.traces),
        critiques=Path(snakemake.input.critiques),
        problems=Path(snakemake.input.problems),
        model=Path(snakemake.input.model),
        samples_out=Path(snakemake.output.samples),
        advantages_out=Path(snakemake.output.advantages),
        summary_out=Path(snakemake.output.summary),
        run_seed=int(snakemake.wildcards.seed),
        cfg=from_params(PremiseConfig, snakemake.params.cfg, where="premise"),
        templates=from_params(ContextTemplates, snakemake.params.templates, where="contexts.templates"),
        prompt=from_params(PromptConfig, snakemake.params.prompt, where="traces.prompt"),
        enable_thinking=bool(snakemake.params.enable_thinking),
    )
    log_disk_use(snakemake.output)
    exit_cleanly()


# The guard matters: vLLM spawns its engine process, which re-imports this module.
if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
