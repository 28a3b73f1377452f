"""Benchmark: solver generation throughput against this machine's measured matmul limit.

One process measures both sides: the bf16 (or fp32) matmul rate of torch on this CPU, and the
generated tokens/s of an engine on the solver at batch >= 64 sequences. The share of the limit is
``2 x (every Linear weight, the LM head included) x tokens/s / matmul FLOP/s``; attention over the
short contexts here adds a few % and is not counted, so the share is a slight underestimate.

    .venv/bin/python perf/generate_traces.py                       # vLLM, bf16
    .venv/bin/python perf/generate_traces.py --engine transformers --dtype float32
    .venv/bin/python perf/generate_traces.py --prompts 36 --samples 12   # an evaluation's shape
    .venv/bin/python perf/generate_traces.py --prompts 36 --samples 12 --block-size 128 --no-tcmalloc
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pipeline.engines import vllm_engine

DEFAULT_MODEL = Path("resources/models/qwen2.5-coder-0.5b-instruct")


def matmul_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Sustained FLOP/s of a ``size``-square matmul in ``dtype`` with every torch thread."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def linear_params(model_dir: Path) -> int:
    """Weights every generated token multiplies through: all Linear layers and the LM head."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    head_dim = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    kv = cfg.num_key_value_heads * head_dim
    attention = h * (cfg.num_attention_heads * head_dim) * 2 + h * kv * 2  # q, o and k, v
    mlp = 3 * h * inter
    return layers * (attention + mlp) + h * cfg.vocab_size


def sample_prompts(model_dir: Path, n: int) -> list[list[int]]:
    """``n`` chat-formatted solver prompts on the default config's arith problems."""
    import yaml
    from transformers import AutoTokenizer

    from pipeline.config import ProblemsConfig, PromptConfig, from_params
    from pipeline.problems import arith_frames
    from pipeline.tasks.solver_format import build_prompts

    config = yaml.safe_load(Path("config/config.yaml").read_text())
    train = arith_frames(from_params(ProblemsConfig, config["problems"] | {"n_train": n}, where="problems"))["eval"]
    prompt = from_params(PromptConfig, config["traces"]["prompt"], where="traces.prompt")
    return build_prompts(train.head(n), AutoTokenizer.from_pretrained(model_dir), prompt)["prompt_token_ids"].to_list()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--engine", choices=["vllm", "transformers"], default="vllm")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4, help="per prompt: the batch is prompts x samples")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--block-size", type=int, help="vLLM on CPU: KV block tokens (default: the engine's 32)")
    parser.add_argument("--no-tcmalloc", action="store_true", help="vLLM on CPU: glibc's allocator (before)")
    args = parser.parse_args()
    if args.block_size:
        vllm_engine.CPU_BLOCK_SIZE = args.block_size
    if args.no_tcmalloc:
        vllm_engine.tcmalloc_preload = lambda current, library: None

    from pipeline.config import EngineConfig
    from pipeline.engines import SamplingConfig, engine_from_config

    peak = matmul_flops(getattr(torch, args.dtype))
    params = linear_params(args.model)
    prompts = sample_prompts(args.model, args.prompts)
    cfg = EngineConfig(backend=args.engine, enforce_eager=True, dtype=args.dtype, max_model_len=2048, max_batch_rows=64)
    engine = engine_from_config(cfg, args.model, seed=0)
    try:
        sampling = SamplingConfig(n=args.samples, temperature=1.0, max_tokens=args.max_tokens)
        start = time.perf_counter()
        completions = engine.generate(prompts, sampling)
        seconds = time.perf_counter() - start
    finally:
        engine.close()
    tokens = sum(len(c.token_ids) for group in completions for c in group)
    rate = tokens / seconds
    share = 2 * params * rate / peak
    allocator = "glibc" if args.no_tcmalloc else "tcmalloc if installed"
    print(f"engine {args.engine} {args.dtype}, batch {args.prompts * args.samples} sequences", end="")
    print(f", KV block {vllm_engine.CPU_BLOCK_SIZE}, {allocator}" if args.engine == "vllm" else "")
    print(f"matmul limit ({args.dtype}, 2048^2): {peak / 1e9:.1f} GFLOP/s")
    print(f"weights per token (Linear + LM head): {params / 1e6:.1f} M")
    print(f"start-up {engine.startup_s:.1f} s; generated {tokens} tokens in {seconds:.1f} s = {rate:.1f} tok/s")
    print(f"share of the matmul limit: {share:.1%} (goal >= 60% at batch >= 64)")


if __name__ == "__main__":
    main()
