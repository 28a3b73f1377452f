"""Benchmark: are vLLM's evaluation samples the same on a rerun? Prints, per run in a fresh process,
the requests in the engine's first scheduler steps, the sampling time, and the completions
identical to the first run (docs/reliability/determinism.md).

    .venv/bin/python perf/evaluate.py --model /tmp/tiny-qwen2 --runs 3
    .venv/bin/python perf/evaluate.py --model /tmp/tiny-qwen2 --runs 3 --engine-process
    flock /tmp/heavy.lock .venv/bin/python perf/evaluate.py --prompts 8

``--engine-process`` builds ``vllm.LLM`` as ``VLLMEngine`` did before the fix (vLLM's own engine-core
process); the default is ``VLLMEngine`` itself. Prompts: the default config's first train problems.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Logs every scheduler step's {request: tokens} to $STEP_TRACE.<pid>, in whichever process schedules.
HOOK = """import importlib.abc, importlib.machinery, json, os, sys
class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "vllm.v1.core.sched.scheduler":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            schedule = module.Scheduler.schedule
            def traced(self, *a, **k):
                out = schedule(self, *a, **k)
                if out.total_num_scheduled_tokens:
                    with open(os.environ["STEP_TRACE"] + "." + str(os.getpid()), "a") as f:
                        f.write(json.dumps(list(out.num_scheduled_tokens.values())) + "\\n")
                return out
            module.Scheduler.schedule = traced
        spec.loader.exec_module = exec_module
        return spec
if os.environ.get("STEP_TRACE"):
    sys.meta_path.insert(0, _Hook())
"""


def worker(args: argparse.Namespace) -> None:
    """One run: sample, write the token ids and the sampling time to ``args.out``."""
    import yaml
    from transformers import AutoTokenizer

    from pipeline.config import ProblemsConfig, PromptConfig, from_params
    from pipeline.engines import SamplingConfig
    from pipeline.logs import exit_cleanly
    from pipeline.problems import arith_frames
    from pipeline.tasks.solver_format import build_prompts

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    train = arith_frames(from_params(ProblemsConfig, config["problems"], where="problems"))["train"]
    prompt = from_params(PromptConfig, config["traces"]["prompt"], where="traces.prompt")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = build_prompts(train.head(args.prompts), tokenizer, prompt)["prompt_token_ids"].to_list()
    sampling = SamplingConfig(n=args.n, temperature=1.0, top_p=1.0, max_tokens=args.max_tokens)
    if args.engine_process:
        from vllm import LLM, SamplingParams

        from pipeline.engines.vllm_engine import configure_cpu_env

        configure_cpu_env(2)
        llm = LLM(model=args.model, dtype="bfloat16", seed=0, max_model_len=2048, enforce_eager=True)
        start = time.perf_counter()
        params = SamplingParams(n=args.n, temperature=1.0, top_p=1.0, max_tokens=args.max_tokens, logprobs=0)
        outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        ids = [list(c.token_ids) for out in outputs for c in out.outputs]
        seconds = time.perf_counter() - start
        llm.llm_engine.engine_core.shutdown()
    else:
        from pipeline.engines.vllm_engine import VLLMEngine

        engine = VLLMEngine(args.model, seed=0, dtype="bfloat16", max_model_len=2048, enforce_eager=True)
        start = time.perf_counter()
        ids = [c.token_ids for group in engine.generate(prompts, sampling) for c in group]
        seconds = time.perf_counter() - start
        engine.close()
    Path(args.out).write_text(json.dumps({"ids": ids, "seconds": seconds}))
    exit_cleanly()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resources/models/qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--engine-process", action="store_true", help="vLLM's own engine-core process (before)")
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.out:
        return worker(args)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sitecustomize.py").write_text(HOOK)
        first = None
        for run in range(args.runs):
            trace, out = Path(tmp) / f"steps{run}", Path(tmp) / f"run{run}.json"
            env = dict(os.environ, STEP_TRACE=str(trace), PYTHONPATH=os.pathsep.join([tmp, str(ROOT)]))
            cmd = [sys.executable, __file__, "--out", str(out), *sys.argv[1:]]
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            result = json.loads(out.read_text())
            (steps,) = Path(tmp).glob(f"steps{run}.*")
            sizes = [len(json.loads(line)) for line in steps.read_text().splitlines()[:4]]
            first = first or result["ids"]
            same = sum(a == b for a, b in zip(first, result["ids"]))
            print(
                f"run {run}: requests in the first steps {sizes}, sampling {result['seconds']:.1f} s, "
                f"identical to run 0: {same}/{len(first)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
