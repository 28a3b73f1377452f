"""Typed config sections of training, evaluation and the checks: LoRA and optimiser settings,
distill, GRPO, advantages, evaluate, premise, and select_problems' sampling, critic and filters."""

from __future__ import annotations

import dataclasses
from typing import Literal

from pipeline.config.data import CPU_SAMPLER, FAST_SCORER, ContextKind, EngineConfig, Layout
from pipeline.config.validation import ConfigError


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """LoRA through peft (the paper: r 64, alpha 128 on all attention and MLP projections)."""

    r: int = 64
    alpha: int = 128
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with warm-up and a schedule, gradient clipping and accumulation to ``batch_size``."""

    lr: float = 1e-5  # 1e-4 and 5e-4 wrecked every student within 4-8 steps (config/config.yaml)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 8  # sequences per optimizer step
    micro_batch_size: int = 2  # sequences per forward/backward
    epochs: int = 1  # passes over the round's traces
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size % self.micro_batch_size:
            raise ConfigError("batch_size must be a multiple of micro_batch_size")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """``distill_student``: the divergence to the stored teacher, which tokens carry it, and training."""

    loss: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    support: Literal["topk", "tail"] = "tail"
    jsd_beta: float = 0.5
    # Reweighting for the student having moved since it sampled the traces (after the first step):
    # none, the sampled token's ratio (SDPO's and TRL's), or the ratio of the token's prefix.
    importance_weight: Literal["none", "token", "prefix"] = "none"
    is_clip: float = 2.0  # cap of the truncated importance weight
    # Cap on each support entry's term of the divergence (OPSD/TRL: 0.05); None: no clip.
    kl_entry_clip: float | None = None
    # Which tokens carry loss: every one (the paper's), up to and including the critic's first wrong
    # step, or the first wrong step only.
    token_mask: Literal["all", "through_first_error", "first_error"] = "all"
    skip_correct: bool = False  # traces with the right answer get no loss (the anchors' self-success rule)
    skip_first_tokens: int = 3  # the first N completion tokens carry no loss (SDFT/TRL: 3; the paper: 0)
    # A guard against flattening: only tokens where the teacher's top token differs from the sampled
    # one and the teacher is surer of it than the student is of its own token.
    token_filter: Literal["none", "teacher_disagrees"] = "none"
    teacher_temperature: float = 1.0  # < 1 sharpens the stored teacher distribution before the loss
    # The format's tags (<step_k>, <answer>, ...) carry no loss: there a teacher that has seen the
    # answer pulls the student toward answering without steps (docs/experiments/loss_variants_and_guards.md).
    mask_format_tokens: bool = False
    lora: LoraSettings | None = LoraSettings()  # None: full fine-tuning (the tiny model)
    optim: OptimConfig = OptimConfig(batch_size=4, micro_batch_size=2)

    def __post_init__(self) -> None:
        if self.teacher_temperature <= 0:
            raise ConfigError("distill.teacher_temperature must be > 0")
        if self.kl_entry_clip is not None and self.kl_entry_clip <= 0:
            raise ConfigError("distill.kl_entry_clip must be > 0 (or null: no clip)")
        if self.skip_first_tokens < 0:
            raise ConfigError("distill.skip_first_tokens must be >= 0")


@dataclasses.dataclass(frozen=True)
class GrpoConfig:
    """``train_grpo``: group-normalised binary reward with a clipped ratio."""

    epsilon: float = 0.2
    advantage_eps: float = 1e-4
    dr_grpo: bool = False
    kl_coef: float = 0.0  # > 0 adds k3 KL to the initial policy
    lora: LoraSettings | None = LoraSettings()
    optim: OptimConfig = OptimConfig(batch_size=8, micro_batch_size=4)  # one problem's G = 8 samples per step


@dataclasses.dataclass(frozen=True)
class AdvantagesConfig:
    """``analyse_advantages``: the per-token advantage figure."""

    figure_traces: int = 3  # traces shown: incorrect ones with a located wrong step, then a correct one
    color_limit: float = 1.0  # |A_t| at which the colour scale saturates

    def __post_init__(self) -> None:
        if self.figure_traces < 1 or self.color_limit <= 0:
            raise ConfigError("advantages: need figure_traces >= 1 and color_limit > 0")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """``evaluate`` and ``check_premise``: how checkpoints are sampled and scored."""

    engine: EngineConfig = CPU_SAMPLER
    samples_per_problem: int = 12  # n of Avg@n, Pass@k (k = 1..n) and Maj@n
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    bootstrap_resamples: int = 1000  # 95% CIs: problems resampled with replacement
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples_per_problem < 1 or self.bootstrap_resamples < 1:
            raise ConfigError("evaluate: samples_per_problem and bootstrap_resamples must be >= 1")


@dataclasses.dataclass(frozen=True)
class PremiseConfig:
    """``check_premise``: which teacher prompts to measure on the round-0 train traces, and how."""

    layouts: tuple[Layout, ...] = ("inline", "anchor", "anchor_example", "multi_turn")
    kinds: tuple[ContextKind, ...] = ("reference", "critique")
    samples: int = 2  # re-solves per trace and (layout, kind)
    advantages: bool = True  # also score A_t per (layout, kind) with score_engine
    engine: EngineConfig = CPU_SAMPLER  # samples the re-solves
    score_engine: EngineConfig = FAST_SCORER  # scores A_t (bf16: mean per-token error 0.003 nats)
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    bootstrap_resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.layouts or not self.kinds:
            raise ConfigError("premise: layouts and kinds must not be empty")
        if self.samples < 1 or self.bootstrap_resamples < 1:
            raise ConfigError("premise: samples and bootstrap_resamples must be >= 1")


@dataclasses.dataclass(frozen=True)
class SelectionSamplingConfig:
    """``select_problems_solver``: how the base solver samples each candidate (the Avg@n table)."""

    samples_per_problem: int = 16  # n of Avg@n (the paper: 16)
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    engine: EngineConfig = CPU_SAMPLER
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples_per_problem < 1:
            raise ConfigError("select_problems.solver.samples_per_problem must be >= 1")


@dataclasses.dataclass(frozen=True)
class CriticSolveConfig:
    """``select_problems_critic``: the critic model's own attempt at each candidate (LLM critic only)."""

    prompt_version: str
    prompt_template: str  # placeholder: {question}
    max_tokens: int = 4096
    enable_thinking: bool = True
    engine: EngineConfig = EngineConfig()


@dataclasses.dataclass(frozen=True)
class SelectionFilters:
    """``select_problems``: the thresholds, applied to stored samples (editing them samples nothing)."""

    max_avg: float = 0.3125  # keep when Avg@n < max_avg (the paper: Avg@16 < 5/16)
    min_avg: float = 0.0  # keep when Avg@n >= min_avg (the paper: no lower bound)
    critic_solves: bool = True  # keep only problems the critic answers right (the oracle: every arith problem)
    min_format_rate: float = 0.5  # keep when at least this share of the samples follows the step format
    n_train: int | None = None  # keep at most this many train problems (in candidate order); None: all
    n_eval: int | None = None
    n_dev: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_avg <= 1 or self.max_avg <= 0 or self.min_avg >= self.max_avg:
            raise ConfigError("select_problems.filters: need 0 <= min_avg < max_avg")
        if not 0 <= self.min_format_rate <= 1:
            raise ConfigError("select_problems.filters.min_format_rate must be in [0, 1]")
