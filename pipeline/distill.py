"""Stage ``distill_student``: round r's student and its stored teacher log-probs give round r+1's.

The student runs on the no-context prompt + its own completion; at every completion token the loss
compares it with the stored teacher top-k (forward KL by default, or reverse KL or generalised JSD;
on the renormalised top-k or with the tail bucket). The teacher is fixed: nothing recomputes it.
After the first optimizer step the student has moved away from the policy that sampled the traces,
so each token's loss is weighted by the truncated importance ratio current / generation-time.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch

from pipeline.artifacts import TRACES_SCHEMA, TRAIN_LOG_SCHEMA, read_artifact, write_artifact
from pipeline.config import DistillConfig
from pipeline.losses import clipped_importance_weight, divergence, supported_logprobs
from pipeline.training import (
    batches,
    completion_logits,
    config_record,
    load_student,
    make_optimizer,
    save_student,
    steps_per_run,
)

log = logging.getLogger(__name__)
STAGE = "distill_student"
STAGE_VERSION = 1


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
    torch.manual_seed(cfg.optim.seed)
    total = steps_per_run(rows.height, cfg.optim)
    optimizer, scheduler = make_optimizer(model, cfg.optim, total)
    device = next(model.parameters()).device
    records = []
    for step, (epoch, micro_batches) in enumerate(batches(rows.height, cfg.optim)):
        start = time.perf_counter()
        batch_tokens = sum(len(rows["completion_token_ids"][i]) for mb in micro_batches for i in mb)
        sums = {"loss": 0.0, "kl": 0.0, "mass": 0.0, "ratio": 0.0, "clipped": 0.0}
        ratio_max = 0.0
        for indices in micro_batches:
            chunk = rows[indices]
            logits = completion_logits(
                model, chunk["prompt_token_ids"].to_list(), chunk["completion_token_ids"].to_list()
            )
            loss = torch.zeros((), device=device)
            for i, row in enumerate(chunk.iter_rows(named=True)):
                per_token, stats = distill_loss(
                    logits[i],
                    torch.tensor(row["topk_ids"], device=device),
                    torch.tensor(row["topk_logprobs"], device=device, dtype=torch.float32),
                    torch.tensor(row["tail_logmass"], device=device),
                    torch.tensor(row["completion_logprobs"], device=device),
                    torch.tensor(row["completion_token_ids"], device=device),
                    cfg,
                    importance=step > 0,
                )
                loss = loss + per_token.sum() / batch_tokens  # token mean over the whole batch
                sums["kl"] += stats["kl"].sum().item()
                sums["mass"] += stats["teacher_mass"].sum().item()
                sums["ratio"] += stats["ratio"].sum().item()
                sums["clipped"] += (stats["ratio"] > cfg.is_clip).sum().item()
                ratio_max = max(ratio_max, stats["ratio"].max().item())
            loss.backward()
            sums["loss"] += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], cfg.optim.max_grad_norm
        )
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        records.append(
            {
                "step": step,
                "epoch": epoch,
                "loss": sums["loss"],
                "kl": sums["kl"] / batch_tokens,
                "grad_norm": float(grad_norm),
                "lr": lr,
                "teacher_topk_mass": sums["mass"] / batch_tokens,
                "is_ratio_mean": sums["ratio"] / batch_tokens,
                "is_ratio_max": ratio_max,
                "is_clipped_frac": sums["clipped"] / batch_tokens,
                "mean_reward": None,
                "tokens": batch_tokens,
                "tokens_per_s": batch_tokens / seconds,
            }
        )
        log.info(
            "step %d/%d loss %.4f kl %.4f grad %.3f %.0f tok/s",
            step + 1,
            total,
            sums["loss"],
            records[-1]["kl"],
            float(grad_norm),
            batch_tokens / seconds,
        )
    return pl.DataFrame(records, schema=TRAIN_LOG_SCHEMA)


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
        "tokens_per_s": float(train_log["tokens"].sum() / (train_log["tokens"] / train_log["tokens_per_s"]).sum()),
    }
    save_student(
        model, tokenizer, out_model, base_dir=base_dir, details={"stage": STAGE, "from": str(student), **stats}
    )
    write_artifact(
        train_log, out_log, schema=TRAIN_LOG_SCHEMA, artifact="train_log", stage=STAGE,
        params={**config_record(cfg), "stats": stats}, model=str(student),
    )  # fmt: skip
    log.info("distilled: %s", stats)
    return stats
