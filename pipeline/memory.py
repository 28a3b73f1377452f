"""Memory estimates of the model stages, checked against the machine's available memory before a model loads.

A config that cannot fit fails at the start of its job with the estimate, its parts and the config key to
change, instead of being killed by the kernel's OOM killer halfway through. The parts are the ones that
scale with the config (weights x dtype bytes, LoRA and optimizer state, vLLM's KV cache, the logits of a
batch, training activations) plus fixed process overheads; the overheads and the activation factors are
calibrated on the default run's measured peaks (``docs/reliability/kill_resume_and_memory.md``).
On GPUs the large parts live in device memory, which vLLM and torch check themselves: the check applies
to CPU runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from pipeline.config import EngineConfig, LoraSettings, OptimConfig
from pipeline.engines.checkpoint import resolve_checkpoint, safetensors_header, weight_files

log = logging.getLogger(__name__)

GIB = 1 << 30
# Cap on the fp32 logits one batch of the transformers engine may hold (pipeline.engines.hf: generate
# keeps [batch, new tokens, vocab]); its batches are sized to it, and its estimate counts it.
LOGITS_BUDGET_BYTES = 1 << 30
# Python with torch, transformers and peft imported: 0.37 GiB measured, rounded up.
PROCESS_BYTES = GIB // 2
# vLLM's front-end and engine-core processes beyond weights and KV cache: the default run's vLLM jobs
# peaked at 6.2-6.6 GiB with 1.2 GiB of bf16 weights, a 2.3 GiB weights file and a 2 GiB KV cache.
VLLM_PROCESSES_BYTES = int(1.5 * GIB)
# Training activations kept for the backward pass, per token and layer, in fp32 values per
# (hidden + intermediate) unit; fit to the default run's distill_student (8.2-8.7 GiB) and train_grpo
# (15.0 GiB) peaks with the other parts below (6.5 and 11.2), then raised for a margin.
ACTIVATION_FACTOR = {"distill_student": 8.5, "train_grpo": 12.5}
# Copies of the [micro batch, completion, vocabulary] logits a training step holds (logits, log-softmax,
# softmax for the entropy, gradient).
TRAINING_LOGITS_COPIES = 4
SKIP_ENV = "PIPELINE_SKIP_MEMORY_CHECK"


class MemoryEstimateError(MemoryError):
    """A stage's estimated memory exceeds what the machine has available."""


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """What a model's memory depends on: its parameters, weight files and shapes."""

    params: int
    file_bytes: int  # the weight files, read (memory-mapped) while loading
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    kv_size: int  # width of the key (and value) projection: kv heads x head size

    @classmethod
    def of(cls, model_dir: str | Path) -> ModelSize:
        """Read from a model folder (a LoRA student: its base) without loading it."""
        base_dir, _ = resolve_checkpoint(model_dir)
        config = json.loads((base_dir / "config.json").read_text())
        config = config.get("text_config", config)
        files = weight_files(base_dir)
        if not files:
            raise FileNotFoundError(f"{base_dir}: no .safetensors weights to size")
        heads = config["num_attention_heads"]
        head_size = config.get("head_dim") or config["hidden_size"] // heads
        return cls(
            params=sum(safetensors_params(f) for f in files),
            file_bytes=sum(f.stat().st_size for f in files),
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_layers=config["num_hidden_layers"],
            kv_size=config.get("num_key_value_heads", heads) * head_size,
        )

    def lora_params(self, lora: LoraSettings) -> int:
        """Parameters of a LoRA adapter on every layer's target projections: r x (in + out) each."""
        h, kv, inter = self.hidden_size, self.kv_size, self.intermediate_size
        shapes = {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, inter),
            "up_proj": (h, inter),
            "down_proj": (inter, h),
        }
        return self.num_layers * sum(lora.r * sum(shapes[m]) for m in lora.target_modules if m in shapes)


def safetensors_params(path: Path) -> int:
    """Parameters in a safetensors file, from its header alone."""
    return sum(math.prod(entry["shape"]) for entry in safetensors_header(path)[1].values())


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A stage's estimated peak memory, by part, and the config key that moves it most."""

    what: str
    parts: Mapping[str, int]
    key: str

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        parts = ", ".join(f"{name} {size / GIB:.2f}" for name, size in self.parts.items())
        return f"{self.total / GIB:.1f} GiB ({parts})"


def _dtype_bytes(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else 4  # auto: fp32 on CPU for both engines


def engine_estimate(cfg: EngineConfig, size: ModelSize, *, where: str) -> Estimate:
    """Peak memory of a stage that runs one engine (``where``: its config section, e.g. ``evaluate.engine``)."""
    weights = size.params * _dtype_bytes(cfg.dtype)
    if cfg.backend == "vllm":
        parts = {
            "weights": weights,
            "weights file": size.file_bytes,
            "KV cache": cfg.kv_cache_gib * GIB,
            "vLLM processes": VLLM_PROCESSES_BYTES,
        }
        return Estimate(f"{where} (vllm)", parts, f"{where}.kv_cache_gib")
    if cfg.backend == "server":  # the model lives in the server's process
        return Estimate(f"{where} (server)", {"process": PROCESS_BYTES}, f"{where}.server_url")
    logits = min(cfg.max_batch_rows * cfg.max_model_len * size.vocab_size * 4, LOGITS_BUDGET_BYTES)
    parts = {"weights": weights, "weights file": size.file_bytes, "batch logits": logits, "process": PROCESS_BYTES}
    key = f"{where}.max_batch_rows" if logits > weights else f"{where}.dtype"
    return Estimate(f"{where} (transformers)", parts, key)


def training_estimate(
    stage: str,
    optim: OptimConfig,
    lora: LoraSettings | None,
    size: ModelSize,
    *,
    longest: int,
    completion: int,
    reference: bool = False,
) -> Estimate:
    """Peak memory of a training job (fp32): ``longest`` prompt + completion tokens, ``completion`` tokens.

    ``reference``: a second, frozen copy of the model is loaded (GRPO's KL term without LoRA).
    """
    weights = size.params * 4
    trainable = size.lora_params(lora) if lora is not None else size.params
    # LoRA: the adapter's weights, gradients and two Adam moments; full training: gradients and moments
    state = trainable * 4 * (4 if lora is not None else 3)
    per_token = size.num_layers * (size.hidden_size + size.intermediate_size) * 4
    activations = int(ACTIVATION_FACTOR[stage] * optim.micro_batch_size * longest * per_token)
    logits = TRAINING_LOGITS_COPIES * optim.micro_batch_size * (completion + 1) * size.vocab_size * 4
    parts = {
        "weights": weights + (weights if reference else 0),
        "weights file": size.file_bytes,
        "LoRA and optimizer state" if lora is not None else "optimizer state": state,
        "activations": activations,
        "logits": logits,
        "process": PROCESS_BYTES,
    }
    section = "distill" if stage == "distill_student" else "grpo"
    key = f"{section}.optim.micro_batch_size" if activations + logits > state else f"{section}.lora"
    return Estimate(stage, parts, key)


def training_memory(
    stage: str,
    rows: pl.DataFrame,
    student: Path,
    optim: OptimConfig,
    lora: LoraSettings | None,
    reference: bool = False,
) -> Estimate:
    """The estimate of a training job over ``rows`` (traces with prompt and completion token ids)."""
    prompts = rows["prompt_token_ids"].list.len()
    completions = rows["completion_token_ids"].list.len()
    return training_estimate(
        stage,
        optim,
        lora,
        ModelSize.of(student),
        longest=int((prompts + completions).max() or 0),
        completion=int(completions.max() or 0),
        reference=reference,
    )


def available_bytes() -> int:
    """Memory available to this process now: the system's, or its cgroup's limit if that is lower."""
    try:
        import psutil

        available = psutil.virtual_memory().available
    except ImportError:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available = int(meminfo["MemAvailable"].split()[0]) * 1024
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            available = min(available, int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return available


def on_gpu() -> bool:
    """Whether this process sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def check_memory(estimate: Estimate, available: int | None = None) -> None:
    """Raise :class:`MemoryEstimateError` before loading if ``estimate`` exceeds the available memory.

    Skipped on GPUs (device memory is checked by vLLM and torch) and when ``PIPELINE_SKIP_MEMORY_CHECK=1``.
    """
    if os.environ.get(SKIP_ENV) == "1" or (available is None and on_gpu()):
        log.info("memory: %s needs an estimated %s; not checked", estimate.what, estimate.describe())
        return
    available = available_bytes() if available is None else available
    log.info(
        "memory: %s needs an estimated %s; %.1f GiB available",
        estimate.what, estimate.describe(), available / GIB,
    )  # fmt: skip
    if estimate.total > available:
        message = (
            f"{estimate.what} needs an estimated {estimate.describe()}, more than the {available / GIB:.1f} GiB "
            f"of memory available: lower {estimate.key} (or free memory; {SKIP_ENV}=1 skips this check)"
        )
        log.error(message)  # in the job's log too, which --show-failed-logs prints
        raise MemoryEstimateError(message)
