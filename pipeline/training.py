"""Shared training ground for ``distill_student`` and ``train_grpo``.

Loading a student (base + LoRA adapter, or full weights), per-token log-probs at completion
positions, AdamW with a schedule, accumulation to the configured batch, and saving a checkpoint the
engines load for the next round.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl
import torch

from pipeline.artifacts import (
    PROVENANCE_FILE,
    TRAIN_LOG_SCHEMA,
    read_provenance,
    versioned_dir,
    weights_hash,
    write_artifact,
)
from pipeline.config import LoraSettings, OptimConfig
from pipeline.engines.checkpoint import (
    ModelFolderError,
    adapter_rank,
    load_adapter,
    load_tokenizer,
    resolve_checkpoint,
)

log = logging.getLogger(__name__)


def training_dtype() -> torch.dtype:
    """fp32 on CPU, bf16 on GPU."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def lora_config(lora: LoraSettings) -> Any:
    """peft's ``LoraConfig`` for the configured adapter (a causal LM's projections)."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )


def load_student(model_dir: Path, lora: LoraSettings | None) -> tuple[Any, Any, Path]:
    """The trainable student and its tokenizer; returns (model, tokenizer, base model folder).

    A folder holding a LoRA adapter continues training that adapter on its base; a full-weights
    folder gets a fresh adapter (``lora`` set) or is trained in full (``lora`` None).
    """
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    base_dir, adapter_dir = resolve_checkpoint(model_dir)
    if adapter_dir is not None and lora is not None and adapter_rank(adapter_dir) != lora.r:
        raise ModelFolderError(
            f"{adapter_dir}: the LoRA adapter has rank {adapter_rank(adapter_dir)}, but the config trains rank "
            f"{lora.r}; continuing it would not train the configured student (retrain from the base)"
        )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=training_dtype(), use_safetensors=True).to(device)
    tokenizer = load_tokenizer(model_dir)
    if adapter_dir is not None:
        model = load_adapter(model, adapter_dir, is_trainable=True)
    elif lora is not None:
        model = get_peft_model(model, lora_config(lora))
    model.train()
    log.info("student model: %s loaded in %.1fs on %s", model_dir, time.perf_counter() - start, device)
    return model, tokenizer, base_dir


def save_student(model: Any, tokenizer: Any, out_dir: Path, *, base_dir: Path, details: dict[str, Any]) -> None:
    """Save an adapter (with its base recorded) or full weights, plus provenance.

    ``out_dir`` becomes a link to a complete versioned folder (:func:`versioned_dir`): the previous
    checkpoint there is replaced only once this one is written in full.
    """
    with versioned_dir(out_dir) as version:
        model.save_pretrained(version)
        tokenizer.save_pretrained(version)
        provenance = {
            "name": out_dir.name,
            "base_model": str(base_dir),
            "base_weights_sha256": read_provenance(base_dir)["weights_sha256"],
            "adapter": (version / "adapter_config.json").is_file(),
            **details,
            "weights_sha256": weights_hash(version),
        }
        (version / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True, default=str))


def write_training_outputs(
    model: Any,
    tokenizer: Any,
    train_log: pl.DataFrame,
    *,
    stage: str,
    cfg: Any,
    stats: dict[str, Any],
    student: Path,
    base_dir: Path,
    out_model: Path,
    out_log: Path,
) -> None:
    """Write the training log, then the next round's checkpoint (on rank 0 only under torchrun).

    The checkpoint comes last, so the previous version is deleted only once every output is complete.
    """
    if dist_rank_world()[0] > 0:
        return
    write_artifact(
        train_log, out_log, schema=TRAIN_LOG_SCHEMA, artifact="train_log", stage=stage,
        params={**config_record(cfg), "stats": stats}, model=str(student),
    )  # fmt: skip
    save_student(
        model, tokenizer, out_model, base_dir=base_dir, details={"stage": stage, "from": str(student), **stats}
    )


def make_optimizer(model: Any, cfg: OptimConfig, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters with warm-up then a constant/linear/cosine schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        if cfg.schedule == "linear":
            return max(0.0, 1.0 - progress)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batches(n: int, cfg: OptimConfig) -> Iterator[tuple[int, list[list[int]]]]:
    """(epoch, micro-batches of row indices) per optimizer step, shuffled per epoch by the seed."""
    for epoch in range(cfg.epochs):
        order = list(range(n))
        random.Random(f"{cfg.seed}-{epoch}").shuffle(order)
        for start in range(0, n, cfg.batch_size):
            chunk = order[start : start + cfg.batch_size]
            yield epoch, [chunk[i : i + cfg.micro_batch_size] for i in range(0, len(chunk), cfg.micro_batch_size)]


def steps_per_run(n: int, cfg: OptimConfig) -> int:
    return cfg.epochs * math.ceil(n / cfg.batch_size)


def completion_logits(
    model: Any, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]
) -> list[torch.Tensor]:
    """Per row, the student's logits ``[T, V]`` that predict each completion token (with gradient)."""
    device = next(model.parameters()).device
    rows = [list(p) + list(c) for p, c in zip(prompts, completions)]
    width = max(map(len, rows))
    ids = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):  # left padding: every row ends at the same place
        ids[i, width - len(row) :] = torch.tensor(row, device=device)
        mask[i, width - len(row) :] = 1
    keep = max(map(len, completions)) + 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    return [logits[i, keep - len(c) - 1 : keep - 1].float() for i, c in enumerate(completions)]


def config_record(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))


class StepStats:
    """Token-summed diagnostics of one optimizer step, filled by a stage's micro-batch function."""

    def __init__(self) -> None:
        self.loss = 0.0
        self.kl = 0.0
        self.teacher_mass: float | None = None
        self.ratio = 0.0
        self.ratio_max = 0.0
        self.clipped = 0.0
        self.rewards: list[float] = []  # GRPO: the batch's sequence rewards
        self.student_entropy = 0.0  # token sums over every completion token of the batch
        self.teacher_entropy: float | None = None  # distillation: on the stored top-k + tail support
        self.student_support_entropy: float | None = None  # the student on that same support
        self.entropy_tokens = 0

    def add_ratio(self, ratio: torch.Tensor, clipped: torch.Tensor) -> None:
        if ratio.numel() == 0:
            return
        self.ratio += ratio.sum().item()
        self.ratio_max = max(self.ratio_max, ratio.max().item())
        self.clipped += clipped.sum().item()

    def add_entropy(
        self, student: torch.Tensor, teacher: torch.Tensor | None = None, student_support: torch.Tensor | None = None
    ) -> None:
        """Per-token entropies ``[T]`` of one completion: the student's over the vocabulary, and for
        distillation the teacher's and the student's on the teacher's stored support."""
        self.student_entropy += student.sum().item()
        if teacher is not None and student_support is not None:
            self.teacher_entropy = (self.teacher_entropy or 0.0) + teacher.sum().item()
            self.student_support_entropy = (self.student_support_entropy or 0.0) + student_support.sum().item()
        self.entropy_tokens += len(student)


MicroStep = Callable[[pl.DataFrame, int, int, StepStats], torch.Tensor]


def train_loop(
    model: Any, rows: pl.DataFrame, cfg: OptimConfig, micro_step: MicroStep, token_counts: Sequence[int] | None = None
) -> pl.DataFrame:
    """Optimise over ``rows`` and return the training log (one row per optimizer step).

    ``micro_step(chunk, batch_tokens, step, stats)`` returns the chunk's share of the batch loss
    (its token sum divided by ``batch_tokens``, so accumulation gives the token mean over the whole
    batch) and adds its diagnostics to ``stats``. ``token_counts``: per row, the tokens that carry
    loss (default: every completion token).
    """
    torch.manual_seed(cfg.seed)
    total = steps_per_run(rows.height, cfg)
    optimizer, scheduler = make_optimizer(model, cfg, total)
    trainable = [p for p in model.parameters() if p.requires_grad]
    lengths = rows["completion_token_ids"].list.len().to_list()
    counts = lengths if token_counts is None else list(token_counts)
    records = []
    rank, world = dist_rank_world()
    for step, (epoch, micro_batches) in enumerate(batches(rows.height, cfg)):
        start = time.perf_counter()
        batch_tokens = sum(counts[i] for mb in micro_batches for i in mb)
        processed = sum(lengths[i] for mb in micro_batches for i in mb)
        stats = StepStats()
        for indices in micro_batches[rank::world]:  # each process takes its share of the batch
            loss = micro_step(rows[indices], batch_tokens, step, stats)
            loss.backward()
            stats.loss += loss.item()
        if world > 1:
            all_reduce_step(trainable, stats)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        records.append(
            {
                "step": step,
                "epoch": epoch,
                "loss": stats.loss,
                "kl": stats.kl / batch_tokens,
                "grad_norm": grad_norm,
                "lr": lr,
                "teacher_topk_mass": None if stats.teacher_mass is None else stats.teacher_mass / batch_tokens,
                "is_ratio_mean": stats.ratio / batch_tokens,
                "is_ratio_max": stats.ratio_max,
                "is_clipped_frac": stats.clipped / batch_tokens,
                "mean_reward": sum(stats.rewards) / len(stats.rewards) if stats.rewards else None,
                "student_entropy": stats.student_entropy / max(stats.entropy_tokens, 1),
                "teacher_entropy": _per_token(stats.teacher_entropy, stats.entropy_tokens),
                "student_support_entropy": _per_token(stats.student_support_entropy, stats.entropy_tokens),
                "tokens": processed,
                "loss_tokens": batch_tokens,
                "tokens_per_s": processed / seconds,
            }
        )
        log.info(
            "step %d/%d loss %.4f kl %.4f grad %.3f entropy %.3f (teacher %s) %.0f tok/s",
            step + 1, total, stats.loss, records[-1]["kl"], grad_norm, records[-1]["student_entropy"],
            "-" if records[-1]["teacher_entropy"] is None else f"{records[-1]['teacher_entropy']:.3f}",
            processed / seconds,
        )  # fmt: skip
    return pl.DataFrame(records, schema=TRAIN_LOG_SCHEMA)


def _per_token(total: float | None, tokens: int) -> float | None:
    return None if total is None else total / max(tokens, 1)


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torch.distributed is initialised (torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_step(trainable: Sequence[torch.nn.Parameter], stats: StepStats) -> None:
    """Sum gradients and diagnostics over processes, so the update equals one process's on the batch.

    Each process's loss is already its token sum over the *whole* batch's token count, so the sum
    of gradients (not DDP's mean) is the single-process gradient.
    """
    import torch.distributed as dist

    for p in trainable:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
    sums = torch.tensor(
        [
            stats.loss, stats.kl, stats.teacher_mass or 0.0, stats.ratio, stats.clipped, stats.student_entropy,
            stats.teacher_entropy or 0.0, stats.student_support_entropy or 0.0, stats.entropy_tokens,
        ],
        dtype=torch.float64,
    )  # fmt: skip
    dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    (stats.loss, stats.kl, mass, stats.ratio, stats.clipped, stats.student_entropy, teacher_entropy, support_entropy,
     n) = sums.tolist()  # fmt: skip
    stats.teacher_mass = None if stats.teacher_mass is None else mass
    stats.teacher_entropy = None if stats.teacher_entropy is None else teacher_entropy
    stats.student_support_entropy = None if stats.student_support_entropy is None else support_entropy
    stats.entropy_tokens = int(n)
    top = torch.tensor([stats.ratio_max], dtype=torch.float64)
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    stats.ratio_max = top.item()
    gathered: list[list[float]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, stats.rewards)
    stats.rewards = [r for part in gathered for r in part]


def mean_tokens_per_s(train_log: pl.DataFrame) -> float | None:
    """Tokens over total step time, across a training log (None: no step)."""
    if train_log.height == 0:
        return None
    return float(train_log["tokens"].sum() / (train_log["tokens"] / train_log["tokens_per_s"]).sum())
