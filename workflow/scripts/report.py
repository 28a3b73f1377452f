"""Adapter: rule report -> pipeline.report.report."""

from pathlib import Path

from pipeline.logs import log_disk_use, setup_logging
from pipeline.report import report


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    evaluate = snakemake.params.config["evaluate"]
    report(
        eval_samples=[Path(p) for p in snakemake.input.eval_samples],
        dev_samples=[Path(p) for p in snakemake.input.dev_samples],
        advantage_tokens={seed: Path(p) for seed, p in zip(snakemake.params.seeds, snakemake.input.advantage_tokens)},
        train_logs={tuple(key): Path(p) for key, p in zip(snakemake.params.train_log_keys, snakemake.input.train_logs)},
        premise=Path(snakemake.input.premise),
        advantages=Path(snakemake.input.advantages),
        advantage_figure_png=Path(snakemake.input.advantage_figure_png),
        advantage_figure_html=Path(snakemake.input.advantage_figure_html),
        critiques={Path(p): seed for p, seed in zip(snakemake.input.critiques, snakemake.params.critique_seeds)},
        model_dirs=[Path(p) for p in snakemake.input.models],
        config=snakemake.params.config,
        arms=dict(snakemake.params.arms),
        out=Path(snakemake.output[0]),
        resamples=evaluate.get("bootstrap_resamples", 1000),
        seed=evaluate.get("seed", 0),
        selection=Path(snakemake.input.selection[0]) if snakemake.input.selection else None,
    )
    log_disk_use(snakemake.output)


if __name__ == "__main__":
    main(globals()["snakemake"])  # injected by Snakemake's script: directive
