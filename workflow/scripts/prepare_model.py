"""Adapter: rule prepare_model -> pipeline.models.prepare_model."""

from pathlib import Path

from pipeline.config import ModelSpec, from_params
from pipeline.logs import log_disk_use, setup_logging
from pipeline.models import prepare_model


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    prepare_model(
        out_dir=Path(snakemake.output[0]),
        name=snakemake.wildcards.model,
        spec=from_params(ModelSpec, snakemake.params.spec, where=f"models.{snakemake.wildcards.model}"),
    )
    log_disk_use(snakemake.output)


# The guard matters: vLLM spawns its engine process, which re-imports this module.
if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
