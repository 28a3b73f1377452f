"""Sample the default config's evaluation workload with its evaluate engine, in a fresh process.

Usage: python tests/engines/vllm_sampler.py MODEL_DIR RESULT.json
The default config's eval problems, solver prompt, ``evaluate.engine`` (vLLM, bf16) and sampling
settings; RESULT holds each sample's token ids and log-probs, problem by problem.
"""

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    model_dir, result_path = sys.argv[1:3]
    from transformers import AutoTokenizer

    from pipeline.config import EvaluateConfig, ProblemsConfig, PromptConfig, from_params
    from pipeline.engines import SamplingConfig, sample_model
    from pipeline.logs import exit_cleanly
    from pipeline.problems import arith_frames
    from pipeline.tasks.solver_format import build_prompts

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    eval_set = arith_frames(from_params(ProblemsConfig, config["problems"], where="problems"))["eval"]
    prompt = from_params(PromptConfig, config["traces"]["prompt"], where="traces.prompt")
    cfg = from_params(EvaluateConfig, config["evaluate"], where="evaluate")
    assert cfg.engine.backend == "vllm", "the default evaluate engine is no longer vLLM"
    prompts = build_prompts(eval_set, AutoTokenizer.from_pretrained(model_dir), prompt)["prompt_token_ids"].to_list()
    sampling = SamplingConfig(
        n=cfg.samples_per_problem, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens
    )
    completions, _, _ = sample_model(cfg.engine, model_dir, prompts, sampling, seed=cfg.seed)
    samples = [[c.token_ids, c.logprobs] for group in completions for c in group]
    Path(result_path).write_text(json.dumps(samples))
    exit_cleanly()


if __name__ == "__main__":
    main()
