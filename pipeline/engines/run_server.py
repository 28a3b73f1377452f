"""One vLLM server on the solver per workflow run (``server_url: auto``).

An engine section ``{backend: server, server_url: auto}`` asks for the run's own server. When any
section does, the Snakefile's ``onstart`` calls :func:`register_run`, which records the server's
settings in a state file ``logs/server/run-<snakemake pid>.json`` in the run's working directory and
points the environment variable :data:`STATE_ENV` at it; every job inherits it from Snakemake's
process. The first job that needs the server starts it (:func:`ensure_run_server`, under a lock):
``python -m pipeline.engines.server`` on the solver, bound to 127.0.0.1 on a free port, in a
session of its own; its URL and process ids go into the state file, and every later job of the run
uses it. ``onsuccess`` and ``onerror`` call :func:`stop_run_server`. Two runs never share or stop
each other's server: each has its own state file (Snakemake's lock keeps two runs from writing the
same outputs; runs on disjoint targets in one folder each get their own file and server).

A run that is killed runs neither hook. The server's supervisor then notices that the Snakemake
process it watches is gone and stops the server within seconds (:func:`watch`), and the next run's
``onstart`` stops whatever a dead run's state file still names (:func:`stop_stale`).

``auto`` is for local runs: on a cluster ``onstart`` runs on the submit host, whose loopback the
jobs cannot reach; give those jobs an explicit ``server_url`` instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.config import DistillConfig, EngineConfig, GrpoConfig, LoraSettings
from pipeline.engines.processes import (  # noqa: F401  (group_members, watch: unused here, still importable)
    ServerError,
    alive,
    free_port,
    group_members,
    start_ticks,
    stop_group,
    wait_until_healthy,
    watch,
)

log = logging.getLogger(__name__)

AUTO = "auto"
STATE_ENV = "PIPELINE_SERVER_STATE"
STATE_DIR = Path("logs/server")
DEFAULT_LORA_RANK = LoraSettings().r  # a trainer's lora section that leaves r out
# EngineConfig's defaults: what an engine section that leaves these keys out gets
SERVE_DEFAULTS = {
    key: getattr(EngineConfig(), key) for key in ("dtype", "enforce_eager", "kv_cache_gib", "max_model_len")
}


class RunServerError(RuntimeError):
    """The run's server is misconfigured, could not start, or is not running."""


@dataclass(frozen=True)
class ServeSettings:
    """How the run's server is started: from the ``serve`` section and the sections that use it."""

    model: str  # the solver's folder, which the server serves as its base
    sections: tuple[str, ...]  # the engine sections that say server_url: auto
    dtype: str | None = None  # None: float32 on CPU (exact log-probs), bfloat16 on GPU
    max_model_len: int = 2048
    max_logprobs: int = 20
    lora_rank: int = DEFAULT_LORA_RANK  # 0: no LoRA adapters
    enforce_eager: bool = True
    kv_cache_gib: int = 2
    startup_timeout_s: float = 900.0


def auto_sections(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every engine section (dotted key, section) of ``config`` whose ``server_url`` is ``auto``."""
    for key, value in config.items():
        if not isinstance(value, Mapping):
            continue
        path = f"{prefix}{key}"
        if value.get("server_url") == AUTO:
            yield path, value
        yield from auto_sections(value, prefix=f"{path}.")


def _lora_ranks(config: Mapping[str, Any]) -> list[int]:
    sections = [config.get("distill") or {}, config.get("grpo") or {}]
    sections += [(v.get("distill") or {}) for v in (config.get("experiment") or {}).get("variants") or []]
    ranks = []
    for section in sections:
        if "lora" not in section:
            continue
        lora = section["lora"]
        ranks.append(0 if lora is None else int(lora.get("r", DEFAULT_LORA_RANK)))
    for trainer, typed in (("distill", DistillConfig), ("grpo", GrpoConfig)):
        if "lora" not in (config.get(trainer) or {}):  # a trainer without the key uses its default LoRA
            default = typed().lora
            ranks.append(0 if default is None else default.r)
    return ranks


def serve_settings(config: Mapping[str, Any]) -> ServeSettings | None:
    """The run's server settings, or None when no engine section says ``server_url: auto``.

    One server has one dtype and one compilation mode: the sections that use it must agree on
    ``dtype`` and ``enforce_eager`` (both are those sections' params, so editing them reruns their
    jobs). ``serve.<key>`` sets the rest; unset, max_model_len is the sections' largest,
    kv_cache_gib their common value, the LoRA rank the trainers' largest and max_logprobs the
    teacher's top-k (at least 20).
    """
    sections = list(auto_sections({k: v for k, v in config.items() if k != "serve"}))
    if not sections:
        return None
    serve = dict(config.get("serve") or {})
    solver = config["solver"]
    critic_model = (config.get("critic") or {}).get("model")
    for path, section in sections:
        if section.get("backend", "vllm") != "server":
            backend = section.get("backend", "vllm")
            raise RunServerError(f"{path}.server_url is auto but {path}.backend is {backend!r}: use server")
        if "critic" in path.split(".") and critic_model != solver:
            raise RunServerError(
                f"{path}.server_url: auto serves the solver ({solver}) only; the critic {critic_model} "
                "needs its own engine or an explicit server_url"
            )

    def agreed(key: str) -> Any:
        if serve.get(key) is not None:
            return serve[key]
        values = {section.get(key, SERVE_DEFAULTS[key]) for _, section in sections}
        if len(values) > 1:
            users = ", ".join(f"{path}.{key}={section.get(key)!r}" for path, section in sections)
            fix = f"set serve.{key}" if key == "kv_cache_gib" else "make them agree"
            raise RunServerError(f"one server has one {key}, but the sections using it differ: {users}; {fix}")
        return values.pop()

    longest = max(section.get("max_model_len", SERVE_DEFAULTS["max_model_len"]) for _, section in sections)
    if serve.get("max_model_len") is not None and serve["max_model_len"] < longest:
        raise RunServerError(f"serve.max_model_len {serve['max_model_len']} is below a using section's {longest}")
    ranks = _lora_ranks(config)
    dtype = agreed("dtype")
    return ServeSettings(
        model=f"resources/models/{solver}",
        sections=tuple(path for path, _ in sections),
        dtype=None if dtype == "auto" else dtype,
        max_model_len=int(serve.get("max_model_len") or longest),
        max_logprobs=max(20, int((config.get("teacher") or {}).get("top_k", 20))),
        lora_rank=int(serve["lora_rank"] if serve.get("lora_rank") is not None else max(ranks, default=0)),
        enforce_eager=bool(agreed("enforce_eager")),
        kv_cache_gib=int(agreed("kv_cache_gib")),
        startup_timeout_s=float(serve.get("startup_timeout_s", 900.0)),
    )


# --- the state file --------------------------------------------------------------------------


def state_path(state_dir: Path = STATE_DIR, run_pid: int | None = None) -> Path:
    return Path(state_dir) / f"run-{run_pid or os.getpid()}.json"


def read_state(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the state file (jobs of one run may start at the same time)."""
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stop_recorded(state: dict[str, Any], grace_s: float = 30.0) -> bool:
    if not state.get("pid"):
        return False
    stop_group(state["pid"], state["pgid"], ticks=state.get("ticks"), grace_s=grace_s)
    return True


def _remove(path: Path) -> None:
    for name in (path, path.with_suffix(".lock")):
        name.unlink(missing_ok=True)


def stop_stale(state_dir: Path = STATE_DIR) -> list[Path]:
    """Stop the server of every state file whose run is gone (a killed run); return those files."""
    stale = []
    for path in sorted(Path(state_dir).glob("run-*.json")):
        try:
            state = read_state(path)
        except (OSError, ValueError):
            continue
        if alive(state["run_pid"], state.get("run_ticks")):
            continue  # another live run in this folder (on other targets): its server, not ours
        if _stop_recorded(state, grace_s=10):
            log.info("run server: stopped the server (pid %s) of a run that is gone (%s)", state["pid"], path)
        _remove(path)
        stale.append(path)
    return stale


def register_run(
    settings: ServeSettings, *, state_dir: Path = STATE_DIR, run_pid: int | None = None, start: bool = False
) -> Path:
    """The workflow's ``onstart``: record this run's server settings; return the state file.

    The server itself starts when the first job asks for it (:func:`ensure_run_server`): the solver's
    folder may not exist yet when the run starts (prepare_models builds it), and a run that needs no
    model job pays nothing. ``start=True`` starts it now. Sets :data:`STATE_ENV` in this process
    (Snakemake's), so that every job started afterwards finds the file. Stops the servers that
    killed runs left behind in ``state_dir``.
    """
    run_pid = run_pid or os.getpid()
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    stop_stale(state_dir)
    path = state_path(state_dir, run_pid)
    state = {
        "run_pid": run_pid,
        "run_ticks": start_ticks(run_pid),
        "host": socket.gethostname(),
        "settings": asdict(settings),
        "starts": 0,
    }
    _write_state(path, state)
    os.environ[STATE_ENV] = str(path.resolve())
    if start:
        ensure_run_server(path)
    return path


def _launch(path: Path, state: dict[str, Any], attempts: int = 3) -> dict[str, Any]:
    """Start the server the state file describes; return the state with its URL and process ids."""
    settings = ServeSettings(**{**state["settings"], "sections": tuple(state["settings"]["sections"])})
    log_path = path.with_suffix(".log")
    for attempt in range(1, attempts + 1):
        port = free_port()
        cmd = [
            sys.executable, "-m", "pipeline.engines.server", settings.model,
            "--port", str(port), "--max-model-len", str(settings.max_model_len),
            "--max-logprobs", str(settings.max_logprobs), "--lora-rank", str(settings.lora_rank),
            "--kv-cache-gib", str(settings.kv_cache_gib), "--log", str(log_path),
            "--watch-pid", str(state["run_pid"]), "--startup-timeout", str(settings.startup_timeout_s),
        ]  # fmt: skip
        if settings.enforce_eager:
            cmd.append("--eager")
        if settings.dtype:
            cmd += ["--dtype", settings.dtype]
        # a job's logging setup turns vLLM's own logging off (pipeline.logs); the server keeps it
        env = {key: value for key, value in os.environ.items() if key != "VLLM_CONFIGURE_LOGGING"}
        with open(log_path, "a") as out:  # the supervisor's lines; vLLM appends its own
            process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        url = f"http://127.0.0.1:{port}"
        state = {
            **state,
            "url": url,
            "pid": process.pid,
            "pgid": process.pid,  # a session of its own: the supervisor leads the group
            "ticks": start_ticks(process.pid),
            "log": str(log_path),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "starts": state.get("starts", 0) + 1,
        }
        _write_state(path, state)  # before the wait: a run killed now still leaves the server's ids
        start = time.perf_counter()
        try:
            wait_until_healthy(url, timeout=settings.startup_timeout_s, process=process)
        except ServerError as exc:
            _stop_recorded(state, grace_s=10)
            state = {key: value for key, value in state.items() if key not in ("url", "pid", "pgid", "ticks")}
            _write_state(path, state)
            tail = log_path.read_text(errors="replace")[-3000:]
            if "address already in use" in tail.lower() and attempt < attempts:
                log.warning("run server: port %d was taken meanwhile; trying another", port)
                continue
            raise RunServerError(f"the run's vLLM server did not start: {exc}; {log_path} ends with:\n{tail}") from exc
        state["startup_s"] = round(time.perf_counter() - start, 1)
        _write_state(path, state)
        # "started in": perf/wall_time_split.py counts it as this job's engine start-up
        users = ", ".join(settings.sections)
        log.info(
            "run server: %s at %s for %s (pid %d, log %s) started in %.1fs",
            *(settings.model, url, users, process.pid, log_path, state["startup_s"]),
        )
        return state
    raise AssertionError("unreachable")


def ensure_run_server(path: str | Path | None = None) -> tuple[str, dict[str, Any]]:
    """The URL of this run's server, started now if no job has started it yet; and its state.

    For a job whose engine says ``server_url: auto``. Fails with what to do when the run has no
    server state (no ``onstart``: a job run by hand, ``--no-hooks``, a cluster node).
    """
    path = path or os.environ.get(STATE_ENV)
    if not path:
        raise RunServerError(
            f"engine server_url is auto but this process belongs to no run with a server ({STATE_ENV} is "
            "unset): the Snakefile's onstart sets it up for a local `snakemake` run (not with --no-hooks); "
            "a job run by hand or on a cluster needs an explicit server_url"
        )
    path = Path(path)
    if not path.is_file():
        raise RunServerError(f"engine server_url is auto but the run's server state {path} does not exist")
    with _locked(path):
        state = read_state(path)
        if state.get("host", socket.gethostname()) != socket.gethostname():
            raise RunServerError(
                f"engine server_url is auto, which serves local runs only: this job runs on {socket.gethostname()}, "
                f"the run on {state['host']}; on a cluster give the jobs an explicit server_url"
            )
        if not alive(state["run_pid"], state.get("run_ticks")):
            raise RunServerError(
                f"engine server_url is auto but the run that owns {path} (pid {state['run_pid']}) is gone"
            )
        if state.get("pid") and alive(state["pid"], state.get("ticks")):
            try:
                wait_until_healthy(state["url"], timeout=state["settings"]["startup_timeout_s"])
                log.info(
                    "run server: using the run's server at %s (pid %d, started by an earlier job)",
                    state["url"],
                    state["pid"],
                )
                return state["url"], state
            except ServerError:
                log.warning("run server: pid %d does not answer at %s; restarting it", state["pid"], state["url"])
                _stop_recorded(state, grace_s=10)
        elif state.get("pid"):
            log.warning(
                "run server: the run's server (pid %d) has died; starting another (log %s)", state["pid"], state["log"]
            )
        state = _launch(path, state)
        return state["url"], state


def stop_run_server(path: str | Path | None = None) -> bool:
    """The workflow's ``onsuccess``/``onerror``: stop the run's server and remove its state.

    ``path`` defaults to this process's :data:`STATE_ENV`. Returns whether a server was stopped.
    """
    path = path or os.environ.get(STATE_ENV)
    if not path or not Path(path).is_file():
        return False
    path = Path(path)
    state = read_state(path)
    stopped = _stop_recorded(state)
    _remove(path)
    if os.environ.get(STATE_ENV) == str(path):
        del os.environ[STATE_ENV]
    if stopped:
        print(
            f"run server: stopped pid {state['pid']} ({state['url']}; log {state['log']})", file=sys.stderr, flush=True
        )
    return stopped
