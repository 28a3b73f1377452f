"""Benchmark: the teacher precompute against one bare forward pass over the same tokens.

Reads the round-0 contexts and shared traces of a finished default run, then in one process times
(a) the work of round 0's teacher jobs: ``score_traces`` scoring the student side once, and each
context kind's teacher side (:func:`pipeline.teacher.score_rows`), and (b) a plain
``model(input_ids)`` forward over what scoring each kind's teacher and student sides costs
naively: every kind's teacher sequences plus the student sequences once per kind, batched the same
way. It prints (a) / (b) for round 0's kinds together (the goal, <= 0.5: prefix reuse and one
student side for all kinds), per kind with the student side unshared (later rounds: one kind per
arm's traces), and the stored bytes per completion token.

    .venv/bin/snakemake --cores all results/seed_0/contexts/critique/round_0.parquet   # inputs
    .venv/bin/python perf/precompute_teacher_logprobs.py --n 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

DEFAULT_MODEL = Path("resources/models/qwen2.5-coder-0.5b-instruct")
ROUND_0_KINDS = ("reference", "critique", "critique_full_quote", "critique_labels_only")


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
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=list(ROUND_0_KINDS),
        help="context kinds scored on the same traces (round 0 of the default: all four)",
    )
    parser.add_argument("--n", type=int, default=16, help="traces to score")
    parser.add_argument("--top-k", type=int, default=20)
    args = parser.parse_args()

    from pipeline.artifacts import write_artifact
    from pipeline.config import EngineConfig, TeacherConfig
    from pipeline.engines.hf import HFEngine
    from pipeline.score_traces import trace_scores_frame
    from pipeline.teacher import score_rows, teacher_logprobs_schema

    traces = pl.read_parquet(args.results / "traces/shared/round_0.parquet")
    cfg = TeacherConfig(top_k=args.top_k, engine=EngineConfig(backend="transformers", max_batch_rows=16))
    engine = HFEngine(args.model, seed=0, max_batch_rows=cfg.engine.max_batch_rows)
    contexts = {
        kind: pl.read_parquet(args.results / f"contexts/{kind}/round_0.parquet").head(args.n) for kind in args.kinds
    }
    ids = contexts[args.kinds[0]]["trace_id"]
    traces = traces.filter(pl.col("trace_id").is_in(ids.implode())).sort("trace_id")
    prompts, completions = traces["prompt_token_ids"].to_list(), traces["completion_token_ids"].to_list()
    engine.score(prompts[:2], completions[:2], top_k=1)  # warm-up

    start = time.perf_counter()
    students = trace_scores_frame(traces, engine.score(prompts, completions, top_k=1))
    student_s = time.perf_counter() - start
    student_sequences = [list(p) + list(c) for p, c in zip(prompts, completions)]
    student_bare = bare_forward_seconds(engine, student_sequences, cfg.engine.max_batch_rows)

    teacher_s, teacher_bare, frame = {}, {}, None
    for kind, context in contexts.items():
        rows = context.join(
            traces.select("trace_id", "prompt_token_ids", "completion_token_ids", "is_correct"), on="trace_id"
        ).join(students, on="trace_id")
        rows = rows.with_columns(token_categories=pl.col("completion_token_ids").list.eval(pl.lit("pre_error")))
        start = time.perf_counter()
        frame, _ = score_rows(engine, rows, cfg)
        teacher_s[kind] = time.perf_counter() - start
        sequences = [list(p) + list(c) for p, c in zip(rows["teacher_prompt_token_ids"], rows["completion_token_ids"])]
        teacher_bare[kind] = bare_forward_seconds(engine, sequences, cfg.engine.max_batch_rows)

    tokens = sum(map(len, completions))
    kinds = len(contexts)
    shared = sum(teacher_s.values()) + student_s
    naive = sum(teacher_bare.values()) + kinds * student_bare
    print(f"{len(prompts)} traces, {tokens} completion tokens, {kinds} context kinds: {', '.join(contexts)}")
    print(f"student side once: {student_s:.1f} s (bare forward {student_bare:.1f} s)")
    for kind in contexts:
        unshared = (teacher_s[kind] + student_s) / (teacher_bare[kind] + student_bare)
        print(
            f"  {kind}: teacher side {teacher_s[kind]:.1f} s (bare {teacher_bare[kind]:.1f} s); "
            f"with its own student side: {unshared:.3f} of the bare forward"
        )
    print(f"round 0's teacher jobs: {shared:.1f} s against {naive:.1f} s bare ({kinds} kinds x teacher + student)")
    print(f"precompute / bare forward time: {shared / naive:.3f} (goal <= 0.5)")
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for dtype in ("float32", "float16"):
            schema = teacher_logprobs_schema(args.top_k, dtype)
            stored = frame.with_columns(pl.col("topk_logprobs").cast(schema["topk_logprobs"]))
            path = write_artifact(
                stored, Path(tmp) / f"{dtype}.parquet", schema=schema, artifact="teacher_logprobs", stage="benchmark"
            )
            sizes[dtype] = path.stat().st_size / tokens
    per_token = f"{sizes['float32']:.1f} (float32), {sizes['float16']:.1f} (float16)"
    print(f"stored bytes per completion token, k={args.top_k}: {per_token}")


if __name__ == "__main__":
    main()
