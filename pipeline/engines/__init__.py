"""Model engines behind one interface (``generate``, ``score``): transformers and vLLM."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pipeline.config import EngineConfig
from pipeline.engines.base import Completion, Engine, SamplingConfig, TokenScores
from pipeline.engines.checkpoint import load_tokenizer

log = logging.getLogger(__name__)

EngineName = Literal["transformers", "vllm", "server"]
T = TypeVar("T")

__all__ = [
    "Completion",
    "Engine",
    "EngineName",
    "SamplingConfig",
    "TokenScores",
    "engine_from_config",
    "load_engine",
    "load_tokenizer",
    "run_engine",
    "sample_model",
    "timing_stats",
]


def load_engine(name: EngineName, model_path: str | Path, **kwargs: Any) -> Engine:
    """Start the named engine on a model folder."""
    if name == "transformers":
        from pipeline.engines.hf import HFEngine

        return HFEngine(model_path, **kwargs)
    if name == "vllm":
        from pipeline.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model_path, **kwargs)
    if name == "server":
        from pipeline.engines.server import ServerEngine

        return ServerEngine(model_path, **kwargs)
    raise ValueError(f"unknown engine {name!r}; expected 'transformers', 'vllm' or 'server'")


def engine_from_config(
    cfg: EngineConfig, model_path: str | Path, *, seed: int, max_logprobs: int = 20, where: str = "engine"
) -> Engine:
    """Start the engine a stage's ``engine`` config section (named ``where``) asks for.

    Before loading, the stage's estimated memory is checked against the available memory
    (:mod:`pipeline.memory`): a config that cannot fit fails here, naming the key to change.
    """
    from pipeline.memory import ModelSize, check_memory, engine_estimate

    if cfg.backend == "server" and _student_in_process(cfg, model_path):
        log.info(
            "%s: %s is a LoRA student: merged and run in-process (vllm) rather than as an adapter on the "
            "server (%s.lora: %s; on CPU, LoRA through the server sampled 8.5 tok/s against 116 merged: "
            "perf/serve.py)",
            *(where, model_path, where, cfg.lora),
        )
        cfg = dataclasses.replace(cfg, backend="vllm", lora="merge", server_url=None)
    if cfg.backend != "server":
        check_memory(engine_estimate(cfg, ModelSize.of(model_path), where=where))
    if cfg.backend == "transformers":
        dtype = "float32" if cfg.dtype == "auto" else cfg.dtype
        return load_engine("transformers", model_path, seed=seed, max_batch_rows=cfg.max_batch_rows, dtype=dtype)
    if cfg.backend == "vllm":
        return load_engine(
            "vllm",
            model_path,
            seed=seed,
            max_model_len=cfg.max_model_len,
            max_logprobs=max_logprobs,
            kv_cache_gib=cfg.kv_cache_gib,
            enforce_eager=cfg.enforce_eager,
            dtype=None if cfg.dtype == "auto" else cfg.dtype,
            lora=cfg.lora,
            tensor_parallel_size=cfg.tensor_parallel_size,
        )
    if not cfg.server_url:
        raise ValueError(f"{where}.backend is 'server' but {where}.server_url is not set")
    url = cfg.server_url
    if url == "auto":  # the run's own server, started by the Snakefile's onstart
        from pipeline.engines.run_server import ensure_run_server

        url, _ = ensure_run_server()
    return load_engine("server", model_path, base_url=url)


def _student_in_process(cfg: EngineConfig, model_path: str | Path) -> bool:
    """Whether a server section runs this model in-process: a LoRA student with ``lora: merge``, or
    ``lora: auto`` on the run's own server (``server_url: auto``, this machine) without a GPU."""
    from pipeline.engines.checkpoint import resolve_checkpoint
    from pipeline.memory import on_gpu

    if cfg.lora == "adapter" or resolve_checkpoint(model_path)[1] is None:
        return False
    return cfg.lora == "merge" or (cfg.server_url == "auto" and not on_gpu())


def run_engine(
    cfg: EngineConfig,
    model: str | Path,
    work: Callable[[Engine], T],
    *,
    seed: int,
    max_logprobs: int = 20,
    where: str = "engine",
) -> tuple[T, float, float]:
    """Start the configured engine (section ``where``) on ``model``, run ``work`` on it, and close it.

    Returns (work's result, engine start-up seconds, work seconds); the engine is always closed.
    """
    engine = engine_from_config(cfg, model, seed=seed, max_logprobs=max_logprobs, where=where)
    try:
        start = time.perf_counter()
        result = work(engine)
        return result, engine.startup_s, time.perf_counter() - start
    finally:
        engine.close()


def timing_stats(startup_s: float, seconds: float, tokens: int, *, work: str = "generate") -> dict[str, float | None]:
    """The timing fields of a model stage's stats: ``startup_s`` (the engine's start-up), ``<work>_s``
    (the sampling or scoring) and ``tokens_per_s`` over it (None when nothing ran: no engine, no time).

    Wall-clock values: the determinism checks leave them out.
    """
    return {
        "startup_s": round(startup_s, 2),
        f"{work}_s": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
    }


def sample_model(
    cfg: EngineConfig,
    model: str | Path,
    prompts: list[list[int]],
    sampling: SamplingConfig,
    *,
    seed: int,
    where: str = "engine",
) -> tuple[list[list[Completion]], float, float]:
    """Sample every prompt on a fresh engine: (completions, engine start-up seconds, sampling seconds)."""
    return run_engine(cfg, model, lambda engine: engine.generate(prompts, sampling), seed=seed, where=where)
