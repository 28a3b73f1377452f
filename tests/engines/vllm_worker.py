"""Run VLLMEngine in a fresh process (vLLM spawns workers; tests must not host it in-process).

Usage: python tests/engines/vllm_worker.py MODEL_DIR REQUEST.json RESULT.npz
REQUEST holds "prompts", "completions", "top_k" (score) and "generate_prompts", "max_tokens" (greedy).
"""

import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    model_dir, request_path, result_path = sys.argv[1:4]
    request = json.loads(Path(request_path).read_text())
    from pipeline.engines import SamplingConfig
    from pipeline.engines.vllm_engine import VLLMEngine
    from pipeline.logs import exit_cleanly

    engine = VLLMEngine(model_dir, enforce_eager=True, max_model_len=1024, max_logprobs=request["top_k"])
    scores = engine.score(request["prompts"], request["completions"], top_k=request["top_k"])
    greedy = engine.generate(
        request["generate_prompts"], SamplingConfig(temperature=0.0, max_tokens=request["max_tokens"])
    )
    engine.close()
    arrays = {}
    for i, s in enumerate(scores):
        arrays |= {f"{i}_topk_ids": s.topk_ids, f"{i}_topk_logprobs": s.topk_logprobs}
        arrays |= {f"{i}_token_logprobs": s.token_logprobs, f"{i}_tail_logmass": s.tail_logmass}
    for i, (c,) in enumerate(greedy):
        arrays |= {f"greedy_{i}_ids": np.array(c.token_ids), f"greedy_{i}_logprobs": np.array(c.logprobs)}
    np.savez(result_path, **arrays)
    exit_cleanly()


if __name__ == "__main__":
    main()
