"""Stage ``distill_student``: round r's student and its stored teacher log-probs give round r+1's.

The student runs on the no-context prompt + its own completion; at every completion token the loss
compares it with the stored teacher top-k (forward KL by default, or reverse KL or generalised JSD;
on the renormalised top-k or with the tail bucket). The teacher is fixed: nothing recomputes it.
After the first optimizer step the student has moved away from the policy that sampled the traces,
so each token's loss is weighted by the truncated importance ratio current / generation-time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl
import torch

from pipeline.artifacts import TRACES_SCHEMA, read_artifact
from pipeline.config import DistillConfig
from pipeline.losses import clipped_importance_weight, divergence, supported_logprobs
from pipeline.training import (
    StepStats,
    completion_logits,
    load_student,
    mean_tokens_per_s,
    train_loop,
    write_training_outputs,
)

log = logging.getLogger(__name__)
STAGE = "distill_student"


def distill_loss(
    logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    tail_logmass: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    completion_ids: torch.Tensor,
    cfg: DistillConfig,
    *,
    importance: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss ``[T]`` for one completion, and per-token diagnostics (no gradient)."""
    student = logits.log_softmax(-1)
    teacher_lp, student_lp = supported_logprobs(student, topk_ids, topk_logprobs, tail_logmass, cfg.support)
    per_token = divergence(teacher_lp, student_lp, cfg.loss, beta=cfg.jsd_beta)
    realised = student.gather(-1, completion_ids[:, None].long()).squeeze(-1)
    ratio = torch.exp(realised.detach() - behaviour_logprobs)
    if importance:
        per_token = per_token * clipped_importance_weight(realised, behaviour_logprobs, cfg.is_clip)
    with torch.no_grad():
        forward = divergence(*supported_logprobs(student, topk_ids, topk_logprobs, tail_logmass, "tail"), "forward_kl")
    stats = {"kl": forward, "ratio": ratio, "teacher_mass": topk_logprobs.float().exp().sum(-1)}
    return per_token, stats


def training_rows(teacher: pl.DataFrame, traces: pl.DataFrame) -> pl.DataFrame:
    """Teacher rows joined with the no-context prompt and generation-time log-probs."""
    return teacher.join(
        traces.select("trace_id", "prompt_token_ids", "completion_logprobs"), on="trace_id", how="inner"
    ).filter(pl.col("completion_token_ids").list.len() > 0)


def train_distill(model: Any, rows: pl.DataFrame, cfg: DistillConfig) -> pl.DataFrame:
    """Run the optimizer over ``rows``; return the training log (one row per step)."""
    device = next(model.parameters()).device

    def micro_step(chunk: pl.DataFrame, batch_tokens: int, step: int, stats: StepStats) -> torch.Tensor:
        logits = completion_logits(model, chunk["prompt_token_ids"].to_list(), chunk["completion_token_ids"].to_list())
        loss = torch.zeros((), device=device)
        stats.teacher_mass = stats.teacher_mass or 0.0
        for i, row in enumerate(chunk.iter_rows(named=True)):
            per_token, diag = distill_loss(
                logits[i],
                torch.tensor(row["topk_ids"], device=device),
                torch.tensor(row["topk_logprobs"], device=device, dtype=torch.float32),
                torch.tensor(row["tail_logmass"], device=device),
                torch.tensor(row["completion_logprobs"], device=device),
                torch.tensor(row["completion_token_ids"], device=device),
                cfg,
                importance=step > 0,
            )
            loss = loss + per_token.sum() / batch_tokens
            stats.kl += diag["kl"].sum().item()
            stats.teacher_mass += diag["teacher_mass"].sum().item()
            stats.add_ratio(diag["ratio"], diag["ratio"] > cfg.is_clip)
        return loss

    return train_loop(model, rows, cfg.optim, micro_step)


def distill_student(
    *, teacher_logprobs: Path, traces: Path, student: Path, out_model: Path, out_log: Path, cfg: DistillConfig
) -> dict[str, Any]:
    """Train round r's ``student`` toward the stored teacher; save round r+1's checkpoint and log."""
    rows = training_rows(
        pl.read_parquet(teacher_logprobs), read_artifact(traces, schema=TRACES_SCHEMA, artifact="traces")
    )
    if rows.height == 0:
        raise ValueError(f"{teacher_logprobs}: no trace with a completion to distill on")
    model, tokenizer, base_dir = load_student(student, cfg.lora)
    train_log = train_distill(model, rows, cfg)
    stats = {
        "steps": train_log.height,
        "traces": rows.height,
        "first_kl": float(train_log["kl"][0]),
        "last_kl": float(train_log["kl"][-1]),
        "tokens_per_s": mean_tokens_per_s(train_log),
    }
    write_training_outputs(
        model, tokenizer, train_log, stage=STAGE, cfg=cfg, stats=stats,
        student=student, base_dir=base_dir, out_model=out_model, out_log=out_log,
    )  # fmt: skip
    log.info("distilled: %s", stats)
    return stats
