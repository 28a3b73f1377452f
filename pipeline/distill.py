"""Stage ``distill_student``: round r's student and its stored teacher log-probs give round r+1's.

The student runs on the no-context prompt + its own completion; at every completion token the loss
compares it with the stored teacher top-k (forward KL by default, or reverse KL or generalised JSD;
on the renormalised top-k or with the tail bucket). The teacher is fixed: nothing recomputes it.
After the first optimizer step the student has moved away from the policy that sampled the traces;
``importance_weight`` says whether and how each token's loss is reweighted for that (none, the
anchors' sampled-token ratio, or the ratio of the token's prefix).

Which tokens carry loss follows the feedback (:func:`loss_mask`): every token (the paper's), up to
and including the critic's first wrong step, or that step alone; traces with the right answer can
be skipped; the first completion tokens can be skipped (SDFT's and TRL's guard); the format's tags
can be left out; and a guard keeps only tokens where the teacher is surer of another token than the
student is of its own. Each support entry's term can be clipped (OPSD's and TRL's guard). The loss
is the mean over the tokens that carry it. Every step logs the student's and the teacher's mean
token entropy, so a flattening student shows as it happens.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from pipeline.artifacts import TRACES_SCHEMA, read_artifact, read_teacher_logprobs
from pipeline.config import DistillConfig
from pipeline.engines.checkpoint import load_tokenizer
from pipeline.losses import (
    clipped_importance_weight,
    divergence,
    entropy,
    prefix_importance_weight,
    sharpen,
    supported_logprobs,
)
from pipeline.memory import check_memory, training_memory
from pipeline.tasks.token_spans import format_tokens, token_char_spans
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


def token_mask(categories: Sequence[str], mode: str) -> list[bool]:
    """Which tokens carry loss under ``distill.token_mask``, from their categories.

    ``all``: every token. ``through_first_error``: every token up to and including the critic's first
    wrong step; the later steps and the (wrong) final answer carry none, since there the student's
    own continuation has left the critique's path. A trace without a located wrong step keeps every
    token. ``first_error``: the tokens of the first wrong step only.
    """
    if mode == "all":
        return [True] * len(categories)
    if mode == "through_first_error":
        located = "first_wrong" in categories
        return [c in ("pre_error", "first_wrong") or (c == "answer" and not located) for c in categories]
    if mode == "first_error":
        return [c == "first_wrong" for c in categories]
    raise ValueError(f"unknown token_mask {mode!r}")


def teacher_disagrees(
    topk_ids: np.ndarray, topk_logprobs: np.ndarray, completion_ids: Sequence[int], student_logprobs: Sequence[float]
) -> list[bool]:
    """Tokens where the teacher's top token is not the sampled one and the teacher is surer of it than
    the student that sampled the trace was of its own token (``student_logprobs``, generation time)."""
    top_ids, top_lp = np.asarray(topk_ids)[:, 0], np.asarray(topk_logprobs, dtype=np.float32)[:, 0]
    return ((top_ids != np.asarray(completion_ids)) & (top_lp > np.asarray(student_logprobs))).tolist()


def loss_mask(row: Mapping[str, Any], cfg: DistillConfig) -> list[bool]:
    """The tokens of one joined teacher/trace row that carry loss.

    ``row`` holds ``token_categories``, ``is_correct``, for ``mask_format_tokens`` the
    ``format_tokens`` flags, and for the ``teacher_disagrees`` guard the stored
    ``topk_ids``/``topk_logprobs``, ``completion_token_ids`` and ``completion_logprobs``.
    """
    categories = row["token_categories"]
    if cfg.skip_correct and row["is_correct"]:
        return [False] * len(categories)
    mask = token_mask(categories, cfg.token_mask)
    mask = [m and i >= cfg.skip_first_tokens for i, m in enumerate(mask)]
    if cfg.mask_format_tokens:
        mask = [m and not f for m, f in zip(mask, row["format_tokens"])]
    if cfg.token_filter == "teacher_disagrees":
        guard = teacher_disagrees(
            np.asarray(row["topk_ids"]), np.asarray(row["topk_logprobs"]),
            row["completion_token_ids"], row["completion_logprobs"],
        )  # fmt: skip
        mask = [m and g for m, g in zip(mask, guard)]
    return mask


def distill_loss(
    logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    tail_logmass: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    completion_ids: torch.Tensor,
    mask: torch.Tensor,
    cfg: DistillConfig,
    *,
    importance: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss ``[T]`` for one completion (zero where ``mask``, :func:`loss_mask`'s, is
    False), and per-token diagnostics (no gradient)."""
    student = logits.log_softmax(-1)
    teacher_lp, student_lp = supported_logprobs(student, topk_ids, topk_logprobs, tail_logmass, cfg.support)
    teacher_lp = sharpen(teacher_lp, cfg.teacher_temperature, tail=cfg.support == "tail")
    per_token = divergence(teacher_lp, student_lp, cfg.loss, beta=cfg.jsd_beta, entry_clip=cfg.kl_entry_clip)
    realised = student.gather(-1, completion_ids[:, None].long()).squeeze(-1)
    ratio = torch.exp(realised.detach() - behaviour_logprobs)
    if importance and cfg.importance_weight == "token":
        per_token = per_token * clipped_importance_weight(realised, behaviour_logprobs, cfg.is_clip)
    elif importance and cfg.importance_weight == "prefix":
        per_token = per_token * prefix_importance_weight(realised, behaviour_logprobs, cfg.is_clip)
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))
    with torch.no_grad():
        forward = divergence(*supported_logprobs(student, topk_ids, topk_logprobs, tail_logmass, "tail"), "forward_kl")
        stats = {
            "kl": forward,
            "ratio": ratio,
            "teacher_mass": topk_logprobs.float().exp().sum(-1),
            "mask": mask,
            "student_entropy": entropy(student),
            "teacher_entropy": entropy(teacher_lp),
            "student_support_entropy": entropy(student_lp if cfg.support == "tail" else student_lp.log_softmax(-1)),
        }
    return per_token, stats


def training_rows(
    teacher: pl.DataFrame, traces: pl.DataFrame, cfg: DistillConfig, tokenizer: Any = None
) -> pl.DataFrame:
    """Teacher rows joined with the no-context prompt and generation-time log-probs, with each
    row's ``loss_mask``; rows with no token carrying loss are dropped. ``mask_format_tokens`` needs
    the ``tokenizer`` (to find each token's characters in the completion)."""
    columns = ["trace_id", "prompt_token_ids", "completion_logprobs"] + ["completion_text"] * cfg.mask_format_tokens
    rows = teacher.join(traces.select(columns), on="trace_id", how="inner")
    rows = rows.filter(pl.col("completion_token_ids").list.len() > 0)
    if cfg.mask_format_tokens:
        flags = [
            format_tokens(token_char_spans(ids, text, tokenizer), text)
            for ids, text in zip(rows["completion_token_ids"].to_list(), rows["completion_text"].to_list())
        ]
        rows = rows.with_columns(format_tokens=pl.Series(flags, dtype=pl.List(pl.Boolean)))
    masks = [loss_mask(row, cfg) for row in rows.iter_rows(named=True)]
    rows = rows.with_columns(loss_mask=pl.Series(masks, dtype=pl.List(pl.Boolean)))
    return rows.filter(pl.col("loss_mask").list.any())


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
                torch.tensor(row["loss_mask"], device=device),
                cfg,
                importance=step > 0,
            )
            loss = loss + per_token.sum() / batch_tokens
            mask = diag["mask"]
            stats.kl += diag["kl"][mask].sum().item()
            stats.teacher_mass += diag["teacher_mass"][mask].sum().item()
            stats.add_ratio(diag["ratio"][mask], diag["ratio"][mask] > cfg.is_clip)
            stats.add_entropy(diag["student_entropy"], diag["teacher_entropy"], diag["student_support_entropy"])
        return loss

    return train_loop(model, rows, cfg.optim, micro_step, token_counts=rows["loss_mask"].list.sum().to_list())


def distill_student(
    *, teacher_logprobs: Path, traces: Path, student: Path, out_model: Path, out_log: Path, cfg: DistillConfig
) -> dict[str, Any]:
    """Train round r's ``student`` toward the stored teacher; save round r+1's checkpoint and log."""
    teacher = read_teacher_logprobs(teacher_logprobs)
    # mask_format_tokens finds each token's characters with the student's tokenizer
    tokenizer = load_tokenizer(student) if cfg.mask_format_tokens else None
    rows = training_rows(teacher, read_artifact(traces, schema=TRACES_SCHEMA, artifact="traces"), cfg, tokenizer)
    if rows.height == 0:
        log.warning(
            "%s: no trace has a token that carries loss (token_mask %r, skip_correct %s, skip_first_tokens %d, "
            "token_filter %r, mask_format_tokens %s) among %d traces: the student is saved unchanged",
            teacher_logprobs, cfg.token_mask, cfg.skip_correct, cfg.skip_first_tokens, cfg.token_filter,
            cfg.mask_format_tokens, teacher.height,
        )  # fmt: skip
    check_memory(training_memory("distill_student", rows, student, cfg.optim, cfg.lora))
    model, tokenizer, base_dir = load_student(student, cfg.lora)
    train_log = train_distill(model, rows, cfg)
    stats = {
        "steps": train_log.height,
        "traces": rows.height,
        "traces_without_loss": teacher.height - rows.height,
        "loss_tokens": int(rows["loss_mask"].list.sum().sum()),
        "first_kl": float(train_log["kl"][0]) if train_log.height else None,
        "last_kl": float(train_log["kl"][-1]) if train_log.height else None,
        "tokens_per_s": mean_tokens_per_s(train_log),
    }
    write_training_outputs(
        model, tokenizer, train_log, stage=STAGE, cfg=cfg, stats=stats,
        student=student, base_dir=base_dir, out_model=out_model, out_log=out_log,
    )  # fmt: skip
    log.info("distilled: %s", stats)
    return stats
