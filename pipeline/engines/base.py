"""The engine interface shared by every model backend: ``generate`` and ``score``.

Prompts and completions are token ids, built once with the model's own tokenizer, so that every
engine sees identical inputs. All log-probs are at temperature 1 (the model's raw distribution),
whatever temperature was used to sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample completions."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_tokens < 1:
            raise ValueError("sampling: n and max_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("sampling: need temperature >= 0 and 0 < top_p <= 1")


@dataclass(frozen=True)
class Completion:
    """One sampled completion: ids include the EOS token when generation stopped on it."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS) or "length" (hit max_tokens)


@dataclass(frozen=True)
class TokenScores:
    """Per completion position: top-k ids and log-probs, the realised token's log-prob, tail log-mass."""

    topk_ids: np.ndarray  # [T, k] int32
    topk_logprobs: np.ndarray  # [T, k] float32
    token_logprobs: np.ndarray  # [T] float32
    tail_logmass: np.ndarray  # [T] float32: log(1 - sum(exp(topk_logprobs)))

    def __len__(self) -> int:
        return len(self.token_logprobs)


@runtime_checkable
class Engine(Protocol):
    """A loaded model that samples completions and scores given ones.

    Engines are seeded once at construction; successive ``generate`` calls continue one random
    stream, so a job's samples are reproducible for a fixed seed and call order.
    """

    name: str

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig) -> list[list[Completion]]:
        """``sampling.n`` completions for each prompt, in prompt order."""
        ...

    def score(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *, top_k: int
    ) -> list[TokenScores]:
        """Score each completion given its prompt, at exactly the completion's positions."""
        ...

    def close(self) -> None:
        """Release the model (and any engine processes)."""
        ...


def tail_logmass_from_topk(topk_logprobs: np.ndarray) -> np.ndarray:
    """``log(1 - sum_k p_k)`` per row, -inf when the top-k hold all the mass."""
    with np.errstate(divide="ignore"):
        mass = np.exp(topk_logprobs.astype(np.float64)).sum(axis=-1)
        return np.log(np.clip(1.0 - mass, 0.0, None)).astype(np.float32)


def check_lengths(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]) -> None:
    if len(prompts) != len(completions):
        raise ValueError(f"score: {len(prompts)} prompts but {len(completions)} completions")
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"score: prompt {i} is empty; the first completion token needs a context")
