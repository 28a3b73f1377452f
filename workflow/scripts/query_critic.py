"""Adapter: rule query_critic -> pipeline.critic.query_critic."""

from pathlib import Path

from pipeline.config import CriticConfig, from_params
from pipeline.critic import query_critic
from pipeline.logs import exit_cleanly, log_disk_use, setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    query_critic(
        traces=Path(snakemake.input.traces),
        problems=Path(snakemake.input.problems),
        out=Path(snakemake.output[0]),
        cfg=from_params(CriticConfig, snakemake.params.cfg, where="critic"),
        critic_model=Path(snakemake.input.critic[0]) if snakemake.input.critic else None,
        rewrite=bool(snakemake.params.rewrite),
    )
    log_disk_use(snakemake.output)
    exit_cleanly()


# The guard matters: vLLM spawns its engine process, which re-imports this module.
if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
