"""Stage ``train_grpo``: the GRPO arm, one job per round.

Each problem has G sampled traces with a binary reward from the critic/verifier. Advantages are
group-normalised (``(r - mean) / (std + eps)``, or Dr.GRPO's ``r - mean``) and every token of a
trace shares its trace's advantage. The loss is PPO's clipped ratio against the generation-time
log-probs, plus an optional k3 KL to the initial policy. Same optimizer, LoRA and checkpoint format
as distillation.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch

from pipeline.artifacts import CRITIQUES_SCHEMA, TRACES_SCHEMA, TRAIN_LOG_SCHEMA, read_artifact, write_artifact
from pipeline.config import GrpoConfig
from pipeline.losses import clipped_policy_loss, group_advantages, k3_kl
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
STAGE = "train_grpo"
STAGE_VERSION = 1


def grpo_rows(traces: pl.DataFrame, critiques: pl.DataFrame, cfg: GrpoConfig) -> pl.DataFrame:
    """Traces with their reward and group-normalised advantage; empty completions dropped."""
    rows = traces.join(critiques.select("trace_id", "reward"), on="trace_id", how="inner")
    groups = torch.tensor(rows["problem_id"].rank("dense").to_numpy().astype("int64"))
    advantages = group_advantages(
        torch.tensor(rows["reward"].to_numpy()), groups, eps=cfg.advantage_eps, dr_grpo=cfg.dr_grpo
    )
    rows = rows.with_columns(advantage=pl.Series(advantages.numpy(), dtype=pl.Float32))
    return rows.filter(pl.col("completion_token_ids").list.len() > 0)


def reference_context(model: Any, reference: Any | None) -> contextlib.AbstractContextManager:
    """Run the initial policy: the base under a disabled adapter, or a separate frozen model."""
    if reference is not None:
        return contextlib.nullcontext(reference)
    return _adapter_off(model)


@contextlib.contextmanager
def _adapter_off(model: Any):
    with model.disable_adapter():
        yield model


def train_policy(model: Any, rows: pl.DataFrame, cfg: GrpoConfig, reference: Any | None = None) -> pl.DataFrame:
    """Optimise the clipped GRPO objective over ``rows``; return the training log."""
    torch.manual_seed(cfg.optim.seed)
    total = steps_per_run(rows.height, cfg.optim)
    optimizer, scheduler = make_optimizer(model, cfg.optim, total)
    device = next(model.parameters()).device
    records = []
    for step, (epoch, micro_batches) in enumerate(batches(rows.height, cfg.optim)):
        start = time.perf_counter()
        indices = [i for mb in micro_batches for i in mb]
        batch_tokens = int(rows[indices]["completion_token_ids"].list.len().sum())
        sums = {"loss": 0.0, "kl": 0.0, "ratio": 0.0, "clipped": 0.0}
        ratio_max = 0.0
        for mb in micro_batches:
            chunk = rows[mb]
            prompts, completions = chunk["prompt_token_ids"].to_list(), chunk["completion_token_ids"].to_list()
            logits = completion_logits(model, prompts, completions)
            ref_logits = None
            if cfg.kl_coef > 0:
                with torch.no_grad(), reference_context(model, reference) as ref:
                    ref_logits = completion_logits(ref, prompts, completions)
            loss = torch.zeros((), device=device)
            for i, row in enumerate(chunk.iter_rows(named=True)):
                ids = torch.tensor(row["completion_token_ids"], device=device)[:, None]
                current = logits[i].log_softmax(-1).gather(-1, ids).squeeze(-1)
                old = torch.tensor(row["completion_logprobs"], device=device)
                per_token = clipped_policy_loss(
                    current, old, torch.tensor(row["advantage"], device=device), epsilon=cfg.epsilon
                )
                if ref_logits is not None:
                    ref = ref_logits[i].log_softmax(-1).gather(-1, ids).squeeze(-1)
                    kl = k3_kl(current, ref)
                    per_token = per_token + cfg.kl_coef * kl
                    sums["kl"] += kl.detach().sum().item()
                loss = loss + per_token.sum() / batch_tokens
                ratio = torch.exp(current.detach() - old)
                sums["ratio"] += ratio.sum().item()
                sums["clipped"] += ((ratio - 1).abs() > cfg.epsilon).sum().item()
                ratio_max = max(ratio_max, ratio.max().item())
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
                "teacher_topk_mass": None,
                "is_ratio_mean": sums["ratio"] / batch_tokens,
                "is_ratio_max": ratio_max,
                "is_clipped_frac": sums["clipped"] / batch_tokens,
                "mean_reward": float(rows[indices]["reward"].mean()),
                "tokens": batch_tokens,
                "tokens_per_s": batch_tokens / seconds,
            }
        )
        log.info(
            "step %d/%d loss %.4f reward %.3f %.0f tok/s",
            step + 1,
            total,
            sums["loss"],
            records[-1]["mean_reward"],
            batch_tokens / seconds,
        )
    return pl.DataFrame(records, schema=TRAIN_LOG_SCHEMA)


def train_grpo(
    *, traces: Path, critiques: Path, student: Path, initial: Path, out_model: Path, out_log: Path, cfg: GrpoConfig
) -> dict[str, Any]:
    """One GRPO round: round r's ``student`` and its group traces give round r+1's checkpoint."""
    rows = grpo_rows(
        read_artifact(traces, schema=TRACES_SCHEMA, artifact="traces"),
        read_artifact(critiques, schema=CRITIQUES_SCHEMA, artifact="critiques"),
        cfg,
    )
    model, tokenizer, base_dir = load_student(student, cfg.lora)
    reference = None
    if cfg.kl_coef > 0 and cfg.lora is None:
        from transformers import AutoModelForCausalLM

        reference = AutoModelForCausalLM.from_pretrained(initial).to(next(model.parameters()).device).eval()
    train_log = train_policy(model, rows, cfg, reference)
    stats = {
        "steps": train_log.height,
        "traces": rows.height,
        "groups_with_signal": int(rows.group_by("problem_id").agg(pl.col("reward").n_unique() > 1)["reward"].sum()),
        "mean_reward": float(rows["reward"].mean() or 0.0),
        "tokens_per_s": float(train_log["tokens"].sum() / (train_log["tokens"] / train_log["tokens_per_s"]).sum()),
    }
    save_student(
        model, tokenizer, out_model, base_dir=base_dir, details={"stage": STAGE, "from": str(student), **stats}
    )
    write_artifact(
        train_log, out_log, schema=TRAIN_LOG_SCHEMA, artifact="train_log", stage=STAGE,
        params={**config_record(cfg), "stats": stats}, model=str(student),
    )  # fmt: skip
    log.info("GRPO round: %s", stats)
    return stats
