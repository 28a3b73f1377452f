"""The run's own server (``server_url: auto``): settings, state file, free port, start and stop.

Without vLLM: a stand-in ``vllm.entrypoints.openai.api_server`` on PYTHONPATH answers ``/health``
and ``/v1/models`` on the port it is given and starts a child (as vLLM's engine core does), so the
real supervisor (``python -m pipeline.engines.server --watch-pid``) and process-group handling run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from pipeline.config import ConfigError, validate_config
from pipeline.engines import run_server
from pipeline.engines.processes import free_port, group_members, stop_group
from pipeline.engines.run_server import (
    STATE_ENV,
    RunServerError,
    ServeSettings,
    ensure_run_server,
    read_state,
    register_run,
    serve_settings,
    stop_run_server,
)
from tests.conftest import DEFAULT_CONFIG, ROOT, SMOKE_CONFIG, snakemake

FAKE_API_SERVER = """
import argparse, http.server, json, signal, subprocess, sys
parser = argparse.ArgumentParser()
parser.add_argument("--model")
parser.add_argument("--port", type=int)
args, _ = parser.parse_known_args()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # an engine-core stand-in
def stop(*_):
    child.kill()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": args.model}]}).encode() if self.path == "/v1/models" else b"ok"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
print("fake vllm argv", json.dumps(sys.argv[1:]), flush=True)
http.server.HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
"""


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """PYTHONPATH with the stand-in API server first; the worktree's pipeline after it."""
    package = tmp_path / "fake" / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for folder in (package, package.parent, package.parent.parent):
        (folder / "__init__.py").write_text("")
    (package / "api_server.py").write_text(FAKE_API_SERVER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "fake"), str(ROOT)]))
    monkeypatch.setenv(STATE_ENV, "")  # restored (unset) afterwards, whatever a test registers
    monkeypatch.delenv(STATE_ENV)
    return tmp_path


def settings(**overrides) -> ServeSettings:
    return ServeSettings(**{"model": "resources/models/m", "sections": ("evaluate.engine",), **overrides})


def sleeper() -> subprocess.Popen:
    """A stand-in for the Snakemake process a run's server watches."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def wait_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not group_members(pgid)


def health(url: str) -> int:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
        return response.status


# --- settings --------------------------------------------------------------------------------


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_default_configs_start_no_server():
    assert serve_settings(load(DEFAULT_CONFIG)) is None
    assert serve_settings(load(SMOKE_CONFIG)) is None


def test_auto_sections_share_one_server_with_derived_settings():
    config = load(DEFAULT_CONFIG)
    for section in ("evaluate", "premise"):
        config[section]["engine"] |= {"backend": "server", "server_url": "auto"}
    validate_config(config)
    got = serve_settings(config)
    assert got.sections == ("evaluate.engine", "premise.engine")
    assert got.model == "resources/models/qwen2.5-coder-0.5b-instruct"
    assert (got.dtype, got.enforce_eager, got.kv_cache_gib, got.max_model_len) == ("bfloat16", True, 2, 2048)
    assert got.lora_rank == 64 and got.max_logprobs == 20  # distill/grpo lora r; teacher.top_k

    config["serve"] = {"max_model_len": 4096, "lora_rank": 8, "kv_cache_gib": 3}
    validate_config(config)
    got = serve_settings(config)
    assert (got.max_model_len, got.lora_rank, got.kv_cache_gib) == (4096, 8, 3)


def test_smoke_students_without_lora_give_a_server_without_adapters():
    config = load(SMOKE_CONFIG)
    config["evaluate"]["engine"] = {"backend": "server", "server_url": "auto"}
    got = serve_settings(config)
    assert got.lora_rank == 0 and got.dtype is None  # dtype auto: float32 on CPU


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["evaluate"]["engine"].update(backend="vllm"), "backend is 'vllm'"),
        (lambda c: c["teacher"]["engine"].update(backend="server", server_url="auto"), "one dtype"),
        (lambda c: c["premise"]["engine"].update(enforce_eager=False), "one enforce_eager"),
        (lambda c: c.update(serve={"max_model_len": 1024}), "below"),
        (
            lambda c: c["critic"].update(
                backend="llm", model="other", llm={"engine": {"backend": "server", "server_url": "auto"}}
            ),
            "serves the solver",
        ),
    ],
)
def test_settings_that_one_server_cannot_serve_fail_naming_the_key(edit, message):
    config = load(DEFAULT_CONFIG)
    for section in ("evaluate", "premise"):
        config[section]["engine"] |= {"backend": "server", "server_url": "auto"}
    edit(config)
    with pytest.raises(RunServerError, match=message):
        serve_settings(config)


def test_the_schema_accepts_auto_or_a_url_and_a_serve_section():
    config = load(DEFAULT_CONFIG)
    config["evaluate"]["engine"]["server_url"] = "http://127.0.0.1:8000"
    validate_config(config)
    for bad in ({"evaluate": "automatic"}, {"serve": {"dtype": "float32"}}):
        broken = copy.deepcopy(config)
        if "serve" in bad:
            broken["serve"] = bad["serve"]
        else:
            broken["evaluate"]["engine"]["server_url"] = bad["evaluate"]
        with pytest.raises(ConfigError):
            validate_config(broken)


def test_a_lora_student_on_the_cpu_run_server_runs_in_process_merged(tiny_model_dir, tmp_path, monkeypatch):
    """lora: auto on server_url: auto without a GPU: the student is merged and run in-process."""
    from pipeline import memory
    from pipeline.config import EngineConfig, LoraSettings
    from pipeline.engines import _student_in_process
    from pipeline.training import load_student, save_student

    model, tokenizer, base = load_student(tiny_model_dir, LoraSettings(r=4, alpha=8))
    student = tmp_path / "round_1"
    save_student(model, tokenizer, student, base_dir=base, details={})
    auto = EngineConfig(backend="server", server_url="auto")
    monkeypatch.setattr(memory, "on_gpu", lambda: False)
    assert _student_in_process(auto, student)
    assert not _student_in_process(auto, tiny_model_dir)  # the base: the server serves it
    assert not _student_in_process(EngineConfig(backend="server", server_url="auto", lora="adapter"), student)
    assert not _student_in_process(EngineConfig(backend="server", server_url="http://gpu-node:8000"), student)
    assert _student_in_process(EngineConfig(backend="server", server_url="http://gpu-node:8000", lora="merge"), student)
    monkeypatch.setattr(memory, "on_gpu", lambda: True)
    assert not _student_in_process(auto, student)


# --- processes -------------------------------------------------------------------------------


def test_free_port_is_bindable_on_loopback():
    port = free_port()
    assert 1024 < port < 65536  # an unprivileged port the OS handed out
    with contextlib.closing(socket.socket()) as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens on it
    with socket.create_server(("127.0.0.1", port)) as server:
        assert server.getsockname() == ("127.0.0.1", port)


def test_a_job_outside_a_run_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.delenv(STATE_ENV, raising=False)
    with pytest.raises(RunServerError, match="explicit server_url"):
        ensure_run_server()
    with pytest.raises(RunServerError, match="does not exist"):
        ensure_run_server(tmp_path / "run-1.json")
    path = register_run(settings(), state_dir=tmp_path, run_pid=os.getpid())
    state = read_state(path)
    path.write_text(json.dumps({**state, "host": "submit-host"}))  # a cluster job on another node
    with pytest.raises(RunServerError, match="local runs only"):
        ensure_run_server(path)
    path.write_text(json.dumps({**state, "run_ticks": -1}))  # the run that registered it is gone
    with pytest.raises(RunServerError, match="is gone"):
        ensure_run_server(path)
    stop_run_server(path)


def test_one_server_per_run_started_by_the_first_job_stopped_at_the_end(fake_vllm):
    run = sleeper()
    try:
        path = register_run(settings(), state_dir=fake_vllm / "logs", run_pid=run.pid)
        assert os.environ[STATE_ENV] == str(path.resolve())
        assert "pid" not in read_state(path)  # nothing starts until a job asks
        url, state = ensure_run_server()
        assert url.startswith("http://127.0.0.1:") and health(url) == 200
        again, _ = ensure_run_server()  # a later job: the same server, not a second one
        assert again == url and read_state(path)["starts"] == 1 and read_state(path)["pid"] == state["pid"]
        (line,) = [x for x in path.with_suffix(".log").read_text().splitlines() if x.startswith("fake vllm argv")]
        argv = json.loads(line.removeprefix("fake vllm argv"))
        flag = {name: argv[argv.index(name) + 1] for name in ("--host", "--port", "--max-lora-rank")}
        assert flag == {"--host": "127.0.0.1", "--port": url.rsplit(":", 1)[1], "--max-lora-rank": "64"}
        assert "--enforce-eager" in argv
        assert len(group_members(state["pgid"])) >= 3  # supervisor, server, its child
        assert stop_run_server() and wait_gone(state["pgid"], 5)
        assert not path.exists() and not path.with_suffix(".lock").exists() and STATE_ENV not in os.environ
        assert not stop_run_server(path)  # idempotent
    finally:
        run.kill()


def test_two_runs_get_two_servers_and_stop_only_their_own(fake_vllm):
    runs = [sleeper(), sleeper()]
    try:
        paths = [
            register_run(settings(), state_dir=fake_vllm / f"run{i}" / "logs", run_pid=r.pid)
            for i, r in enumerate(runs)
        ]
        states = [ensure_run_server(p)[1] for p in paths]
        assert states[0]["url"] != states[1]["url"]
        stop_run_server(paths[0])
        assert wait_gone(states[0]["pgid"], 5)
        assert health(states[1]["url"]) == 200
        stop_run_server(paths[1])
        assert wait_gone(states[1]["pgid"], 5)
    finally:
        for r in runs:
            r.kill()


def test_a_killed_run_takes_its_server_with_it(fake_vllm):
    run = sleeper()
    path = register_run(settings(), state_dir=fake_vllm / "logs", run_pid=run.pid)
    _, state = ensure_run_server(path)
    run.kill()  # SIGKILL: no onerror
    run.wait()
    assert wait_gone(state["pgid"], 15), "the supervisor did not notice its run is gone"
    assert "has ended: stopping the server" in path.with_suffix(".log").read_text()


def test_the_next_run_stops_what_a_killed_run_left(fake_vllm):
    run = sleeper()
    path = register_run(settings(), state_dir=fake_vllm / "logs", run_pid=run.pid)
    _, state = ensure_run_server(path)
    os.kill(state["pid"], signal.SIGKILL)  # the supervisor dies too: its vLLM is orphaned
    run.kill()
    run.wait()
    time.sleep(0.5)
    assert group_members(state["pgid"]), "the orphaned server should still run"
    nxt = sleeper()
    try:
        register_run(settings(), state_dir=fake_vllm / "logs", run_pid=nxt.pid)
        assert wait_gone(state["pgid"], 5) and not path.exists()
        stop_run_server()
    finally:
        nxt.kill()


def test_a_dead_server_is_restarted_by_the_next_job(fake_vllm):
    run = sleeper()
    try:
        path = register_run(settings(), state_dir=fake_vllm / "logs", run_pid=run.pid)
        _, first = ensure_run_server(path)
        stop_group(first["pid"], first["pgid"], grace_s=5)
        url, second = ensure_run_server(path)
        assert second["pid"] != first["pid"] and second["starts"] == 2 and health(url) == 200
        stop_run_server(path)
        assert wait_gone(second["pgid"], 5)
    finally:
        run.kill()


def test_a_server_that_cannot_start_fails_the_job_with_its_log(fake_vllm):
    broken = fake_vllm / "fake" / "vllm" / "entrypoints" / "openai" / "api_server.py"
    broken.write_text("import sys; print('no such model'); sys.exit(3)")
    run = sleeper()
    try:
        path = register_run(settings(), state_dir=fake_vllm / "logs", run_pid=run.pid)
        with pytest.raises(RunServerError, match="no such model"):
            ensure_run_server(path)
        assert "pid" not in read_state(path)
        stop_run_server(path)
    finally:
        run.kill()


def test_stop_group_kills_what_ignores_sigterm(tmp_path):
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
    process.stdout.readline()
    stop_group(process.pid, process.pid, grace_s=1)
    assert process.wait(timeout=60) == -signal.SIGKILL  # SIGTERM was ignored: the group got SIGKILL
    assert group_members(process.pid) == []


def test_state_file_names_the_run(tmp_path):
    assert run_server.state_path(tmp_path, 123) == tmp_path / "run-123.json"
    path = register_run(settings(), state_dir=tmp_path, run_pid=os.getpid())
    state = json.loads(path.read_text())
    assert state["run_pid"] == os.getpid() and state["settings"]["model"] == "resources/models/m"
    stop_run_server(path)


# --- the workflow ----------------------------------------------------------------------------


def processes_in(folder: Path) -> list[psutil.Process]:
    """Live processes working in ``folder`` (a run's server and its workers run there)."""
    found = []
    for process in psutil.process_iter(["cwd"]):
        with contextlib.suppress(psutil.Error):
            if (process.info["cwd"] or "").startswith(str(folder)) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


@pytest.mark.slow
def test_smoke_run_serves_evaluation_and_traces_from_one_server(tmp_path):
    """The smoke DAG up to round 1's evaluation and traces, with evaluate and traces on server_url: auto.

    LoRA students (r 8): evaluate (lora: adapter) loads round 1's into the server as an adapter,
    generate_traces (lora: auto, CPU) merges it and samples in-process. One server for the whole
    run, started by the first sampling job, used by the others, and gone when the run ends.
    """
    config = load(SMOKE_CONFIG)
    auto = {"backend": "server", "server_url": "auto", "max_model_len": 1024, "enforce_eager": True}
    config["traces"]["engine"] = dict(auto)
    config["evaluate"]["engine"] = dict(auto, lora="adapter")
    config["experiment"]["conditions"] = ["critique"]
    config["experiment"]["variants"] = []
    config["distill"]["lora"] = {"r": 8, "alpha": 16, "dropout": 0.0}
    edited = tmp_path / "serve.yaml"
    edited.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    targets = [f"results/seed_0/eval/{arm}/round_{r}.json" for arm, r in (("base", 0), ("critique", 1))]
    targets.append("results/seed_0/traces/critique/round_1.parquet")
    out = snakemake(workdir, *targets, "--configfile", str(edited))  # --configfile takes every word after it

    server_logs = list((workdir / "logs" / "server").glob("run-*.log"))
    assert len(server_logs) == 1, server_logs  # one run, one server state
    server_log = server_logs[0].read_text()
    assert server_log.count("serving resources/models/tiny-qwen2 at http://127.0.0.1:") == 1
    job_logs = {
        str(p.relative_to(workdir / "logs")): p.read_text()
        for rule in ("evaluate", "generate_traces")
        for p in (workdir / "logs" / rule).rglob("*.log")
    }
    assert len(job_logs) == 4, sorted(job_logs)  # base and round-1 evaluation, round-0 and round-1 traces
    started = [name for name, text in job_logs.items() if re.search(r"run server: .* started in", text)]
    assert len(started) == 1, started  # the first sampling job started it; the others used it
    url = re.search(r"at (http://127\.0\.0\.1:\d+)", server_log).group(1)
    served = ["evaluate/seed_0/eval/base/round_0.log", "evaluate/seed_0/eval/critique/round_1.log"]
    served.append("generate_traces/seed_0/shared/round_0.log")
    for name in served:
        assert "server engine: " in job_logs[name] and url in job_logs[name], name
    assert "as LoRA adapter" in job_logs["evaluate/seed_0/eval/critique/round_1.log"]
    assert '/v1/load_lora_adapter HTTP/1.1" 200' in server_log
    in_process = job_logs["generate_traces/seed_0/critique/round_1.log"]
    assert "merged and run in-process" in in_process and "server engine: " not in in_process
    assert "run server: stopped pid" in out.stderr
    assert not list((workdir / "logs" / "server").glob("run-*.json"))  # the state is gone with the run
    assert not processes_in(workdir), "a server process outlived its run"
