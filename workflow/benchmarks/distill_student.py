"""Benchmark: where a distillation step spends its time, against a bare forward + backward.

Reads the round-0 teacher log-probs and traces of a finished default run, loads the student as the
stage does (LoRA r 64 on the base solver), and in one process times, per optimizer step, the phases
of ``distill_student``'s step: building the batch tensors (data), the student forward at the
completion positions (forward), the per-token loss (loss), backward, and the optimizer. It then
times a bare forward + backward of the very same padded batch (a sum of the kept logits as loss)
and prints ``bare / step`` (goal >= 0.8: the step adds little to the model's own compute). With
``--autocast`` it also runs the step under bf16 autocast and prints the loss difference to fp32.

    .venv/bin/python workflow/benchmarks/distill_student.py --steps 2 [--autocast]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import defaultdict
from pathlib import Path

import polars as pl
import torch

DEFAULT_MODEL = Path("resources/models/qwen2.5-coder-0.5b-instruct")


def timed_step(model, optimizer, chunks: list[pl.DataFrame], cfg, *, autocast: bool) -> tuple[dict[str, float], float]:
    """One optimizer step over ``chunks`` (micro-batches) with each phase timed; returns (phases, loss)."""
    from pipeline.distill import distill_loss
    from pipeline.training import completion_logits

    phases: dict[str, float] = defaultdict(float)
    batch_tokens = sum(int(c["loss_mask"].list.sum().sum()) for c in chunks)
    total = 0.0
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    for chunk in chunks:
        start = time.perf_counter()
        rows = list(chunk.iter_rows(named=True))
        tensors = [
            (
                torch.tensor(r["topk_ids"]), torch.tensor(r["topk_logprobs"], dtype=torch.float32),
                torch.tensor(r["tail_logmass"]), torch.tensor(r["completion_logprobs"]),
                torch.tensor(r["completion_token_ids"]), torch.tensor(r["loss_mask"]),
            )
            for r in rows
        ]  # fmt: skip
        phases["data"] += time.perf_counter() - start
        start = time.perf_counter()
        with amp:
            logits = completion_logits(
                model, chunk["prompt_token_ids"].to_list(), chunk["completion_token_ids"].to_list()
            )
        phases["forward"] += time.perf_counter() - start
        start = time.perf_counter()
        loss = (
            sum(distill_loss(lg, *t, cfg, importance=False)[0].sum() for lg, t in zip(logits, tensors)) / batch_tokens
        )
        phases["loss"] += time.perf_counter() - start
        start = time.perf_counter()
        loss.backward()
        phases["backward"] += time.perf_counter() - start
        total += loss.item()
    start = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    phases["optimizer"] += time.perf_counter() - start
    return phases, total


def bare_step(model, chunks: list[pl.DataFrame]) -> float:
    """Seconds for a forward + backward of the same micro-batches with a trivial loss."""
    from pipeline.training import completion_logits

    start = time.perf_counter()
    for chunk in chunks:
        logits = completion_logits(model, chunk["prompt_token_ids"].to_list(), chunk["completion_token_ids"].to_list())
        sum(lg.sum() for lg in logits).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--results", type=Path, default=Path("results/seed_0"))
    parser.add_argument("--kind", default="critique")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--micro", type=int, default=2)
    parser.add_argument("--autocast", action="store_true", help="also time the step under bf16 autocast")
    args = parser.parse_args()

    from pipeline.config import DistillConfig, LoraSettings
    from pipeline.distill import training_rows
    from pipeline.training import load_student

    cfg = DistillConfig(lora=LoraSettings())
    rows = training_rows(
        pl.read_parquet(args.results / f"teacher_logprobs/{args.kind}/round_0.parquet"),
        pl.read_parquet(args.results / "traces/shared/round_0.parquet"),
        cfg,
    )
    batches = [rows.slice(s * args.batch, args.batch) for s in range(args.steps)]
    modes = [False, True] if args.autocast else [False]
    for autocast in modes:
        torch.manual_seed(0)
        model, _, _ = load_student(args.model, cfg.lora)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        totals: dict[str, float] = defaultdict(float)
        losses, bare, tokens = [], 0.0, 0
        for batch in batches:
            chunks = [batch.slice(i, args.micro) for i in range(0, batch.height, args.micro)]
            phases, loss = timed_step(model, optimizer, chunks, cfg, autocast=autocast)
            losses.append(loss)
            for name, seconds in phases.items():
                totals[name] += seconds
            bare += bare_step(model, chunks)
            tokens += int(batch["completion_token_ids"].list.len().sum())
        step = sum(totals.values())
        label = "bf16 autocast" if autocast else "fp32"
        split = ", ".join(f"{name} {seconds / step:.0%}" for name, seconds in totals.items())
        print(f"{label}: {args.steps} steps of {args.batch} traces, {tokens} completion tokens, {step:.1f} s "
              f"({tokens / step:.1f} completion tok/s): {split}")  # fmt: skip
        print(f"{label}: bare forward + backward {bare:.1f} s; bare / step = {bare / step:.2f} (goal >= 0.8)")
        print(f"{label}: losses {[round(x, 6) for x in losses]}")


if __name__ == "__main__":
    main()
