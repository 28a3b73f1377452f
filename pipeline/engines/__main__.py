"""Check that a model folder loads and generates: ``python -m pipeline.engines MODEL_DIR "question"``.

Prints one JSON object (engine, start-up seconds, the chat-formatted prompt's completion). Runs the
engine in this process and exits without waiting on vLLM's workers, so it is also what tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("question")
    parser.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--eager", action="store_true", help="vLLM: skip torch.compile (faster start)")
    args = parser.parse_args()

    from pipeline.engines import SamplingConfig, load_engine, load_tokenizer
    from pipeline.tasks.solver_format import render_chat_prompt, solver_user_message

    tokenizer = load_tokenizer(args.model_dir)
    prompt = render_chat_prompt(tokenizer, solver_user_message(args.question))
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    options = {"max_model_len": 2048, "enforce_eager": args.eager} if args.engine == "vllm" else {}
    engine = load_engine(args.engine, args.model_dir, **options)
    try:
        ((completion,),) = engine.generate(
            [prompt_ids], SamplingConfig(temperature=args.temperature, max_tokens=args.max_tokens)
        )
    finally:
        engine.close()
    result = {
        "engine": args.engine,
        "startup_s": round(engine.startup_s, 1),
        "prompt_tokens": len(prompt_ids),
        "text": completion.text,
        "token_ids": completion.token_ids,
        "finish_reason": completion.finish_reason,
    }
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # vLLM's engine processes can abort the interpreter's normal exit (exit 134)


if __name__ == "__main__":
    main()
