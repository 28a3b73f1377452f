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
from pathlib import Path
from typing import Any

import polars as pl
import torch

from pipeline.artifacts import CRITIQUES_SCHEMA, TRACES_SCHEMA, read_artifact
from pipeline.config import GrpoConfig
from pipeline.losses import clipped_policy_loss, entropy, group_advantages, k3_kl
from pipeline.memory import check_memory, training_memory
from pipeline.training import (
    StepStats,
    completion_logits,
    load_student,
    mean_tokens_per_s,
    train_loop,
    write_training_outputs,
)

log = logging.getLogger(__name__)
STAGE = "train_grpo"


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
    device = next(model.parameters()).device

    def micro_step(chunk: pl.DataFrame, batch_tokens: int, step: int, stats: StepStats) -> torch.Tensor:
        prompts, completions = chunk["prompt_token_ids"].to_list(), chunk["completion_token_ids"].to_list()
        logits = completion_logits(model, prompts, completions)
        ref_logits = None
        if cfg.kl_coef > 0:
            with torch.no_grad(), reference_context(model, reference) as ref:
                ref_logits = completion_logits(ref, prompts, completions)
        loss = torch.zeros((), device=device)
        for i, row in enumerate(chunk.iter_rows(named=True)):
            ids = torch.tensor(row["completion_token_ids"], device=device)[:, None]
            student = logits[i].log_softmax(-1)
            current = student.gather(-1, ids).squeeze(-1)
            old = torch.tensor(row["completion_logprobs"], device=device)
            advantage = torch.tensor(row["advantage"], device=device)
            per_token = clipped_policy_loss(current, old, advantage, epsilon=cfg.epsilon)
            if ref_logits is not None:
                kl = k3_kl(current, ref_logits[i].log_softmax(-1).gather(-1, ids).squeeze(-1))
                per_token = per_token + cfg.kl_coef * kl
                stats.kl += kl.detach().sum().item()
            loss = loss + per_token.sum() / batch_tokens
            ratio = torch.exp(current.detach() - old)
            stats.add_ratio(ratio, (ratio - 1).abs() > cfg.epsilon)
            with torch.no_grad():
                stats.add_entropy(entropy(student))
        stats.rewards += chunk["reward"].to_list()
        return loss

    return train_loop(model, rows, cfg.optim, micro_step)


def train_grpo(
    *, traces: Path, critiques: Path, student: Path, initial: Path, out_model: Path, out_log: Path, cfg: GrpoConfig
) -> dict[str, Any]:
    """One GRPO round: round r's ``student`` and its group traces give round r+1's checkpoint."""
    rows = grpo_rows(
        read_artifact(traces, schema=TRACES_SCHEMA, artifact="traces"),
        read_artifact(critiques, schema=CRITIQUES_SCHEMA, artifact="critiques"),
        cfg,
    )
    reference_copy = cfg.kl_coef > 0 and cfg.lora is None
    check_memory(training_memory("train_grpo", rows, student, cfg.optim, cfg.lora, reference=reference_copy))
    model, tokenizer, base_dir = load_student(student, cfg.lora)
    reference = None
    if reference_copy:
        from transformers import AutoModelForCausalLM

        reference = AutoModelForCausalLM.from_pretrained(initial, use_safetensors=True)
        reference = reference.to(next(model.parameters()).device).eval()
    train_log = train_policy(model, rows, cfg, reference)
    stats = {
        "steps": train_log.height,
        "traces": rows.height,
        "groups_with_signal": int(rows.group_by("problem_id").agg(pl.col("reward").n_unique() > 1)["reward"].sum()),
        "mean_reward": float(rows["reward"].mean() or 0.0),
        "tokens_per_s": mean_tokens_per_s(train_log),
    }
    write_training_outputs(
        model, tokenizer, train_log, stage=STAGE, cfg=cfg, stats=stats,
        student=student, base_dir=base_dir, out_model=out_model, out_log=out_log,
    )  # fmt: skip
    log.info("GRPO round: %s", stats)
    return stats
