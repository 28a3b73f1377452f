"""Benchmark: the teacher precompute against one bare forward pass over the same tokens.

Reads the round-0 contexts and traces of a finished default run (``--seed``, ``--kind``), then in one
process times (a) the stage's scoring of the teacher and student sides
(:func:`pipeline.teacher.score_rows`) and (b) a plain ``model(input_ids)`` forward over exactly the
same teacher and student sequences, batched the same way. It prints the ratio (a) / (b) per scored
completion token, and the stored bytes per completion token.

    .venv/bin/snakemake --cores all results/seed_0/contexts/critique/round_0.parquet   # inputs
    .venv/bin/python workflow/benchmarks/precompute_teacher_logprobs.py --n 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

DEFAULT_MODEL = Path("resources/models/qwen2.5-coder-0.5b-instruct")


def bare_forward_seconds(engine, sequences: list[list[int]], max_rows: int) -> float:
    """Seconds for a plain forward (full logits) over ``sequences``, longest first, ``max_rows`` a batch."""
    order = sorted(sequences, key=len, reverse=True)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(order), max_rows):
            ids, mask = engine._left_pad(order[i : i + max_rows])
            engine.model(input_ids=ids, attention_mask=mask)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--results", type=Path, default=Path("results/seed_0"))
    parser.add_argument("--kind", default="critique")
    parser.add_argument("--n", type=int, default=16, help="traces to score")
    parser.add_argument("--top-k", type=int, default=20)
    args = parser.parse_args()

    from pipeline.artifacts import write_artifact
    from pipeline.config import EngineConfig, TeacherConfig
    from pipeline.engines.hf import HFEngine
    from pipeline.teacher import score_rows, teacher_logprobs_schema

    contexts = pl.read_parquet(args.results / f"contexts/{args.kind}/round_0.parquet").head(args.n)
    traces = pl.read_parquet(args.results / "traces/shared/round_0.parquet")
    rows = contexts.join(
        traces.select("trace_id", "prompt_token_ids", "completion_token_ids", "is_correct"), on="trace_id"
    ).with_columns(token_categories=pl.col("completion_token_ids").list.eval(pl.lit("pre_error")))
    cfg = TeacherConfig(top_k=args.top_k, engine=EngineConfig(backend="transformers", max_batch_rows=16))
    engine = HFEngine(args.model, seed=0, max_batch_rows=cfg.engine.max_batch_rows)
    score_rows(engine, rows.head(2), cfg)  # warm-up

    start = time.perf_counter()
    frame, _ = score_rows(engine, rows, cfg)
    precompute = time.perf_counter() - start
    completions = rows["completion_token_ids"].to_list()
    sequences = [list(p) + list(c) for p, c in zip(rows["teacher_prompt_token_ids"], completions)]
    sequences += [list(p) + list(c) for p, c in zip(rows["prompt_token_ids"], completions)]
    bare = bare_forward_seconds(engine, sequences, cfg.engine.max_batch_rows)

    tokens = sum(map(len, completions))
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for dtype in ("float32", "float16"):
            stored = frame.with_columns(
                pl.col("topk_logprobs").cast(teacher_logprobs_schema(args.top_k, dtype)["topk_logprobs"])
            )
            schema = teacher_logprobs_schema(args.top_k, dtype)
            path = write_artifact(
                stored, Path(tmp) / f"{dtype}.parquet", schema=schema, artifact="teacher_logprobs", stage="benchmark"
            )
            sizes[dtype] = path.stat().st_size / tokens
    print(f"{rows.height} traces, {tokens} completion tokens, {sum(map(len, sequences))} sequence tokens scored")
    print(f"precompute {precompute:.1f} s ({tokens / precompute:.1f} completion tok/s); bare forward {bare:.1f} s")
    print(f"precompute / bare forward time: {precompute / bare:.3f} (goal <= 0.5)")
    per_token = f"{sizes['float32']:.1f} (float32), {sizes['float16']:.1f} (float16)"
    print(f"stored bytes per completion token, k={args.top_k}: {per_token}")


if __name__ == "__main__":
    main()
