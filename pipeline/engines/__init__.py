"""Model engines behind one interface (``generate``, ``score``): transformers and vLLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pipeline.engines.base import Completion, Engine, SamplingConfig, TokenScores

EngineName = Literal["transformers", "vllm"]

__all__ = ["Completion", "Engine", "EngineName", "SamplingConfig", "TokenScores", "load_engine"]


def load_engine(name: EngineName, model_path: str | Path, **kwargs: Any) -> Engine:
    """Start the named engine on a model folder."""
    if name == "transformers":
        from pipeline.engines.hf import HFEngine

        return HFEngine(model_path, **kwargs)
    if name == "vllm":
        from pipeline.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model_path, **kwargs)
    raise ValueError(f"unknown engine {name!r}; expected 'transformers' or 'vllm'")
