"""Critic QA of the query_critic stage on real traces: parse, fallback, alignment, leak and agreement rates.

Runs the stage (pipeline.critic.query_critic) with the `critic` section of the merged configs on each
traces file, rewriting every trace (also GRPO's, for more data), and prints one line of QA figures per
file plus the total. On `arith` traces it also prints the agreement with the exact oracle.

    .venv/bin/python perf/query_critic.py --config config/config.yaml config/critic_llm.yaml \\
        --traces results/seed_0/traces/shared/round_0.parquet results/seed_0/traces/grpo/round_0.parquet
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl
import yaml
from snakemake.utils import update_config

from pipeline.artifacts import CRITIQUES_SCHEMA, PROBLEMS_SCHEMA, TRACES_SCHEMA, read_artifact
from pipeline.config import CriticConfig, from_params
from pipeline.critic import critique_stats, oracle_agreement, query_critic, review_traces
from pipeline.logs import exit_cleanly, setup_logging

SHOWN = (
    "traces", "parse_rate", "fallback_rate", "parse_error_kinds", "mean_alignment", "leak_rate",
    "rewrite_correct_rate", "verdicts", "tokens_per_s", "startup_s",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", required=True, help="config files, merged left to right")
    parser.add_argument("--traces", nargs="+", type=Path, required=True)
    parser.add_argument("--problems", type=Path, default=Path("results/problems/train.parquet"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/query_critic/qa"))
    args = parser.parse_args()
    setup_logging()
    config: dict = {}
    for path in args.config:
        update_config(config, yaml.safe_load(Path(path).read_text()))
    cfg = from_params(CriticConfig, config["critic"], where="critic")
    model = Path("resources/models") / cfg.model if cfg.model else None
    problems = read_artifact(args.problems, schema=PROBLEMS_SCHEMA, artifact="problems")
    frames = []
    for traces in args.traces:
        out = args.out / f"{traces.parent.name}_{traces.stem}.parquet"
        start = time.perf_counter()
        stats = query_critic(traces=traces, problems=args.problems, out=out, cfg=cfg, critic_model=model)
        wall = time.perf_counter() - start
        critiques = read_artifact(out, schema=CRITIQUES_SCHEMA, artifact="critiques")
        frames.append(critiques)
        line = {k: stats[k] for k in SHOWN}
        line["wall_s"] = round(wall, 1)
        line |= _oracle(critiques, traces, problems)
        print(f"{traces}: {json.dumps(line, default=str)}")
    total = pl.concat(frames)
    summary = {k: v for k, v in critique_stats(total).items() if k != "verdicts"}
    print(f"all {total.height} traces: {json.dumps(summary | _oracle_all(total, args.traces, problems), default=str)}")
    exit_cleanly()  # vLLM's engine processes can abort a normal interpreter exit


def _joined(traces: Path, problems: pl.DataFrame) -> pl.DataFrame:
    frame = read_artifact(traces, schema=TRACES_SCHEMA, artifact="traces")
    return frame.join(problems.select("problem_id", "answer", "reference", "verifier", "steps"), on="problem_id")


def _oracle(critiques: pl.DataFrame, traces: Path, problems: pl.DataFrame) -> dict:
    joined = _joined(traces, problems)
    if critiques["critic"].first() != "llm" or not joined["steps"].list.len().min():
        return {}
    oracle = review_traces(joined, cfg=CriticConfig(backend="oracle"))
    return {"oracle_agreement": oracle_agreement(critiques, oracle)}


def _oracle_all(critiques: pl.DataFrame, traces: list[Path], problems: pl.DataFrame) -> dict:
    joined = pl.concat([_joined(t, problems) for t in traces])
    if critiques["critic"].first() != "llm" or not joined["steps"].list.len().min():
        return {}
    return {"oracle_agreement": oracle_agreement(critiques, review_traces(joined, cfg=CriticConfig(backend="oracle")))}


if __name__ == "__main__":
    main()
