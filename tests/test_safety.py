"""Safety: no network at run time, no pickle or code execution of files or model output, loopback servers.

The DAG tests run with outbound network refused (``tests/offline/sitecustomize.py``, through
``tests.conftest.snakemake``); the tests here check that the blocker works and is in force, audit
the sources, and check the server's address.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NETWORK_LOG, ROOT, offline_env

SOURCES = sorted([*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "workflow").rglob("*.py")])
RULES = sorted([ROOT / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk")])


def events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_offline(code: str, log: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=offline_env(log), timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_the_blocker_refuses_every_address_but_loopback(tmp_path):
    log = tmp_path / "net.jsonl"
    out = run_offline(
        """
import socket, urllib.request
attempts = {
    "tcp": lambda: socket.create_connection(("1.1.1.1", 443), timeout=2),
    "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(("8.8.8.8", 80)),
    "datagram": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("8.8.8.8", 53)),
    "dns": lambda: socket.getaddrinfo("huggingface.co", 443),
    "https": lambda: urllib.request.urlopen("https://huggingface.co/api/models", timeout=2),
}
for name, attempt in attempts.items():
    try:
        attempt()
        print(name, "connected")
    except OSError as exc:
        print(name, "refused" if "network blocked" in str(exc) else f"other {exc}")
server = socket.create_server(("127.0.0.1", 0))
socket.create_connection(server.getsockname(), timeout=2).close()
socket.create_connection(("localhost", server.getsockname()[1]), timeout=2).close()
print("loopback ok")
""",
        log,
    )
    lines = out.stdout.split("\n")
    assert lines[:6] == [f"{name} refused" for name in ("tcp", "udp", "datagram", "dns", "https")] + ["loopback ok"]
    assert [e["event"] for e in events(log)] == ["loaded", "lookup", "connect", "connect", "lookup", "lookup"]


def test_every_model_loading_path_runs_offline_with_no_attempt(tmp_path):
    """Build, load, train and save the tiny model, a missing folder and a hub-shaped id: no network asked for."""
    log = tmp_path / "net.jsonl"
    run_offline(
        f"""
from pathlib import Path
from pipeline.config import LoraSettings, ModelSpec
from pipeline.engines import load_tokenizer
from pipeline.engines.checkpoint import ModelFolderError
from pipeline.engines.hf import HFEngine
from pipeline.models import prepare_model
from pipeline.training import load_student, save_student

tmp = Path({str(tmp_path)!r})
prepare_model(out_dir=tmp / "tiny", name="tiny", spec=ModelSpec(source="tiny"))
prepare_model(out_dir=tmp / "linked", name="linked", spec=ModelSpec(source="local", path=str(tmp / "tiny")))
load_tokenizer(tmp / "linked")
HFEngine(tmp / "linked").score([[5, 6]], [[7]], top_k=2)
model, tokenizer, base = load_student(tmp / "tiny", LoraSettings(r=4, alpha=8))
save_student(model, tokenizer, tmp / "round_1", base_dir=base, details={{}})
HFEngine(tmp / "round_1").generate([[5, 6]], __import__("pipeline.engines").engines.SamplingConfig(max_tokens=2))
load_student(tmp / "round_1", LoraSettings(r=4, alpha=8))
for missing in (tmp / "absent", Path("Qwen/Qwen2.5-0.5B")):
    try:
        HFEngine(missing)
    except ModelFolderError:
        pass
""",
        log,
    )
    assert [e["event"] for e in events(log)] == ["loaded"]


def test_a_hub_source_fails_offline_with_what_to_do(tmp_path):
    log = tmp_path / "net.jsonl"
    out = run_offline(
        f"""
from pathlib import Path
from pipeline.config import ModelSpec
from pipeline.models import ModelSourceError, prepare_model
try:
    prepare_model(out_dir=Path({str(tmp_path)!r}) / "m", name="m", spec=ModelSpec(source="hub", path="Qwen/Qwen3-1.7B"))
except ModelSourceError as exc:
    print(exc)
""",
        log,
    )
    assert "could not fetch hub model 'Qwen/Qwen3-1.7B'" in out.stdout and "use source: local" in out.stdout
    assert {e["event"] for e in events(log)} - {"loaded"} <= {"lookup"}  # it asked, and was refused
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_the_smoke_dag_ran_with_the_network_blocked(smoke_run):
    """The session's smoke DAG (every stage, two rounds of every arm) ran under the blocker and asked for nothing."""
    seen = events(smoke_run / NETWORK_LOG)
    scripts = {Path(e["argv"][0]).name for e in seen if e["event"] == "loaded" and e["argv"]}
    assert any(name.startswith("snakemake") for name in scripts), scripts
    assert sum(e["event"] == "loaded" for e in seen) > 10  # the job scripts ran under it too
    assert [e for e in seen if e["event"] != "loaded"] == []
    assert (smoke_run / "results" / "report.html").is_file()


# ---------------------------------------------------------------------------------------------
# Audits of the sources: what would load a pickle or run code.

FORBIDDEN_CALLS = {
    "eval": "runs a string as code",
    "exec": "runs a string as code",
    "compile": "builds code from a string",
    "__import__": "imports by a computed name",
    "torch.load": "unpickles (safetensors only)",
    "pickle.load": "unpickles",
    "pickle.loads": "unpickles",
    "joblib.load": "unpickles",
    "dill.load": "unpickles",
    "marshal.loads": "loads code objects",
    "shelve.open": "unpickles",
    "yaml.load": "can build arbitrary objects (use yaml.safe_load)",
    "yaml.unsafe_load": "can build arbitrary objects",
    "os.system": "runs a shell",
    "os.popen": "runs a shell",
}
FORBIDDEN_KEYWORDS = {
    "trust_remote_code": "runs a model folder's code",
    "allow_pickle": "unpickles",
    "shell": "runs a shell",
}


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def calls(path: Path) -> list[tuple[int, str, ast.Call]]:
    return [
        (node.lineno, dotted(node.func), node)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.Call)
    ]


def test_no_source_unpickles_runs_strings_as_code_or_a_shell():
    found = []
    for path in SOURCES:
        for line, name, call in calls(path):
            if name in FORBIDDEN_CALLS:
                found.append(f"{path.relative_to(ROOT)}:{line}: {name} {FORBIDDEN_CALLS[name]}")
            for keyword in call.keywords:
                truthy = not (isinstance(keyword.value, ast.Constant) and not keyword.value.value)
                if keyword.arg in FORBIDDEN_KEYWORDS and truthy:
                    found.append(f"{path.relative_to(ROOT)}:{line}: {keyword.arg}= {FORBIDDEN_KEYWORDS[keyword.arg]}")
    for path in RULES:  # Snakemake syntax: a text search
        for number, text in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\b(eval|exec)\(|\b(pickle|torch\.load|trust_remote_code)\b", text):
                found.append(f"{path.relative_to(ROOT)}:{number}: {text.strip()}")
    assert found == []


def test_weights_load_from_safetensors_only():
    """Every ``*.from_pretrained`` of a model asks for safetensors (or reads a GGUF); adapters are checked first."""
    loose = []
    for path in SOURCES:
        for line, name, call in calls(path):
            if not name.endswith(".from_pretrained") or "Tokenizer" in name or "Config" in name:
                continue
            keywords = {k.arg: k.value for k in call.keywords}
            safetensors = (
                isinstance(keywords.get("use_safetensors"), ast.Constant) and keywords["use_safetensors"].value
            )
            adapter = name == "PeftModel.from_pretrained" and path.name == "checkpoint.py"  # after check_model_dir
            if not (safetensors or "gguf_file" in keywords or adapter):
                loose.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert loose == []


def test_the_engine_server_binds_to_loopback_only():
    from pipeline.engines.server import server_command

    cmd = server_command("m", port=8000, max_model_len=64, max_logprobs=1, lora_rank=0, enforce_eager=True)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd.count("--host") == 1
    source = (ROOT / "pipeline" / "engines" / "server.py").read_text()
    assert "0.0.0.0" not in source and "--host" not in source.split("def main")[1]  # no option to widen it
