"""Top-k log-prob parity of two engines (vLLM against the transformers reference) in one dtype.

The teacher's stored top-k and the trainers' log-probs must not depend on which engine computed
them. This samples greedy completions of a few solver prompts with the first engine, scores the same
token ids with both, and compares per completion position: the realised token's log-prob, the top-1
id, the overlap of the top-k id sets and the log-probs of the ids both top-k sets share.

    python -m pipeline.engines.parity --model resources/models/qwen2.5-coder-0.5b-instruct --dtype bfloat16

Prints the figures as JSON and exits 1 when one breaks the dtype's tolerance. The default tolerances
are a first guess for GPUs (fp32: kernel-order noise; bf16: 8-bit mantissa), not yet measured on one:
``--max-token-diff`` and friends override them. Used by perf/gpu_check.sh; on CPU,
``--engines transformers,transformers`` exercises everything but vLLM.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.engines.base import SamplingConfig, TokenScores
from pipeline.engines.checkpoint import load_tokenizer

DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class Tolerance:
    """Largest differences two engines may show in one dtype (log-probs in nats)."""

    max_token_diff: float  # realised token's log-prob, any position
    mean_token_diff: float  # realised token's log-prob, mean over positions
    max_shared_topk_diff: float  # log-prob of an id in both top-k sets, any position
    min_top1_agreement: float  # share of positions with the same most likely id
    min_topk_overlap: float  # mean share of the k ids both sets hold


TOLERANCES = {
    "float32": Tolerance(2e-3, 2e-4, 5e-3, 0.99, 0.95),
    "bfloat16": Tolerance(0.5, 0.05, 0.75, 0.9, 0.8),
}


def compare_scores(reference: Sequence[TokenScores], other: Sequence[TokenScores]) -> dict[str, float]:
    """Parity figures of ``other`` against ``reference`` over every completion position."""
    if len(reference) != len(other):
        raise ValueError(f"parity: {len(reference)} scored completions against {len(other)}")
    token, top1, overlap, shared = [], [], [], []
    for a, b in zip(reference, other):
        if len(a) != len(b):
            raise ValueError(f"parity: a completion scored at {len(a)} positions against {len(b)}")
        token.append(np.abs(a.token_logprobs.astype(np.float64) - b.token_logprobs))
        top1.append(a.topk_ids[:, 0] == b.topk_ids[:, 0])
        for t in range(len(a)):
            ours = dict(zip(a.topk_ids[t].tolist(), a.topk_logprobs[t].tolist()))
            theirs = dict(zip(b.topk_ids[t].tolist(), b.topk_logprobs[t].tolist()))
            common = ours.keys() & theirs.keys()
            overlap.append(len(common) / len(ours))
            shared.extend(abs(ours[i] - theirs[i]) for i in common)
    tokens = np.concatenate(token) if token else np.zeros(0)
    return {
        "positions": int(tokens.size),
        "max_token_diff": float(tokens.max(initial=0.0)),
        "mean_token_diff": float(tokens.mean()) if tokens.size else 0.0,
        "max_shared_topk_diff": float(max(shared, default=0.0)),
        "top1_agreement": float(np.concatenate(top1).mean()) if top1 else 1.0,
        "topk_overlap": float(np.mean(overlap)) if overlap else 1.0,
    }


def failures(figures: dict[str, float], tolerance: Tolerance) -> list[str]:
    """Each figure that breaks the tolerance, as a sentence (empty: parity holds)."""
    out = []
    for name in ("max_token_diff", "mean_token_diff", "max_shared_topk_diff"):
        if figures[name] > getattr(tolerance, name):
            out.append(f"{name} {figures[name]:.3g} > {getattr(tolerance, name):.3g}")
    if figures["top1_agreement"] < tolerance.min_top1_agreement:
        out.append(f"top1_agreement {figures['top1_agreement']:.3f} < {tolerance.min_top1_agreement}")
    if figures["topk_overlap"] < tolerance.min_topk_overlap:
        out.append(f"topk_overlap {figures['topk_overlap']:.3f} < {tolerance.min_topk_overlap}")
    if figures["positions"] == 0:
        out.append("no completion position was scored")
    return out


def solver_prompts(model: Path, n: int, seed: int = 0) -> list[list[int]]:
    """``n`` chat-formatted solver prompts on seeded ``arith`` problems, as the model's token ids."""
    from pipeline.tasks.arith import ArithSettings, generate_problems
    from pipeline.tasks.solver_format import render_chat_prompt, solver_user_message

    tokenizer = load_tokenizer(model)
    problems = generate_problems(n, seed=f"parity-{seed}", settings=ArithSettings())
    texts = [render_chat_prompt(tokenizer, solver_user_message(p.question)) for p in problems]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _engine(name: str, model: Path, dtype: str, top_k: int, max_model_len: int) -> Any:
    from pipeline.engines import load_engine

    if name == "vllm":
        return load_engine(
            "vllm", model, dtype=dtype, max_logprobs=top_k, max_model_len=max_model_len, enforce_eager=True
        )
    return load_engine("transformers", model, dtype=dtype)


def run_parity(
    model: Path,
    *,
    dtype: str,
    engines: tuple[str, str] = ("vllm", "transformers"),
    prompts: int = 8,
    max_tokens: int = 48,
    top_k: int = 20,
    max_model_len: int = 2048,
) -> dict[str, Any]:
    """Greedy completions from the first engine, scored by both; the figures and timings."""
    ids = solver_prompts(model, prompts)
    first = _engine(engines[0], model, dtype, top_k, max_model_len)
    try:
        start = time.perf_counter()
        completions = [
            c[0].token_ids for c in first.generate(ids, SamplingConfig(n=1, temperature=0.0, max_tokens=max_tokens))
        ]
        completions = [c for c in completions if c] or [[0]]
        ids = ids[: len(completions)]
        scores_first = first.score(ids, completions, top_k=top_k)
        first_s = time.perf_counter() - start
    finally:
        first.close()
    second = _engine(engines[1], model, dtype, top_k, max_model_len)
    try:
        start = time.perf_counter()
        scores_second = second.score(ids, completions, top_k=top_k)
        second_s = time.perf_counter() - start
    finally:
        second.close()
    return {
        "model": str(model),
        "dtype": dtype,
        "engines": list(engines),
        "top_k": top_k,
        "completions": len(completions),
        **compare_scores(scores_second, scores_first),
        "seconds": {engines[0]: round(first_s, 2), engines[1]: round(second_s, 2)},
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a model folder (resources/models/<name>)")
    parser.add_argument("--dtype", choices=DTYPES, required=True)
    parser.add_argument("--engines", default="vllm,transformers", help="engine pair: the first samples, both score")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    for name, value in asdict(TOLERANCES["float32"]).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), help=f"override the dtype's {name}")
    args = parser.parse_args(argv)
    pair = tuple(args.engines.split(","))
    if len(pair) != 2 or not set(pair) <= {"vllm", "transformers"}:
        parser.error(f"--engines takes two of vllm, transformers separated by a comma, got {args.engines!r}")
    args.engines = pair
    overrides = {k: getattr(args, k) for k in asdict(TOLERANCES[args.dtype]) if getattr(args, k) is not None}
    args.tolerance = Tolerance(**{**asdict(TOLERANCES[args.dtype]), **overrides})
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    figures = run_parity(
        args.model, dtype=args.dtype, engines=args.engines, prompts=args.prompts, max_tokens=args.max_tokens,
        top_k=args.top_k,
    )  # fmt: skip
    problems = failures(figures, args.tolerance)
    figures |= {"tolerance": asdict(args.tolerance), "failures": problems, "ok": not problems}
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if not problems else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    import os

    os._exit(code)  # vLLM's engine processes can abort a normal interpreter exit
