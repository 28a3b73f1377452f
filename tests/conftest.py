"""Shared fixtures: repo paths and the prepared smoke and Qwen models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import ModelSpec, from_params
from pipeline.models import prepare_model

ROOT = Path(__file__).resolve().parent.parent
SMOKE_CONFIG = ROOT / "config" / "smoke.yaml"
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"


def _model_dir(config_path: Path, cache: Path) -> Path:
    """Prepare the config's solver once into ``cache`` (reused across sessions like the DAG's)."""
    config = yaml.safe_load(config_path.read_text())
    name = config["solver"]
    out = cache / name
    if not (out / "pipeline_model.json").is_file():
        prepare_model(out_dir=out, name=name, spec=from_params(ModelSpec, config["models"][name]))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke config's tiny model, built fresh for the session (a second or two)."""
    return _model_dir(SMOKE_CONFIG, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def qwen_model_dir() -> Path:
    """The default solver, prepared into resources/models like the DAG does (minutes, once)."""
    return _model_dir(DEFAULT_CONFIG, ROOT / "resources" / "models")


SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


OFFLINE = ROOT / "tests" / "offline"  # its sitecustomize.py refuses any network but loopback
NETWORK_LOG = "network_log.jsonl"  # in a DAG's working directory: what the blocker saw


def offline_env(log: Path) -> dict[str, str]:
    """The environment with outbound network refused in every Python process started with it.

    ``tests/offline/sitecustomize.py`` does the blocking and writes ``log``; the libraries' own
    offline switches (``HF_HUB_OFFLINE`` and friends) are removed, so nothing relies on them.
    """
    env = {key: value for key, value in os.environ.items() if not key.endswith("_OFFLINE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(OFFLINE), os.environ.get("PYTHONPATH")]))
    env["PIPELINE_NETWORK_LOG"] = str(log)
    return env


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the DAG in ``workdir`` with the network blocked (see :func:`offline_env`)."""
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args]
    workdir.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=offline_env(workdir / NETWORK_LOG))
    if check:
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole smoke DAG (two rounds of every arm) run once in a scratch directory."""
    workdir = tmp_path_factory.mktemp("smoke")
    snakemake(workdir, "--configfile", str(SMOKE_CONFIG))
    return workdir
