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


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path):
    """The tiny model's tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_causal_lm(tiny_model_dir: Path):
    """The tiny model loaded straight with transformers (fp32, eval mode): the reference the engines
    and the stages that score with them are checked against."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, use_safetensors=True).eval()


def completion_logprobs(model, prompt: list[int], completion: list[int]):
    """``[len(completion), vocab]`` log-probs of ``model`` at each completion token, one unpadded forward."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([list(prompt) + list(completion)])).logits[0].float()
    return logits[len(prompt) - 1 : len(prompt) + len(completion) - 1].log_softmax(-1).numpy()


# Step-tagged completions and their spans, for the token-category tests (tasks, advantages).
WRONG_TEXT = (
    "<step_1> 2 + 3 = 5 </step_1>\n<step_2> 5 * 4 = 21 </step_2>\n<step_3> 21 - 1 = 20 </step_3>\n<answer> 20 </answer>"
)
CORRECT_TEXT = "<step_1> 2 + 3 = 5 </step_1>\n<step_2> 5 * 4 = 20 </step_2>\n<answer> 20 </answer>"


def step_spans(text: str) -> list[dict[str, int]]:
    """The ``step_spans`` column of a trace with ``text``."""
    from pipeline.tasks.solver_format import parse_response

    return [{"number": s.number, "start": s.start, "end": s.end} for s in parse_response(text).steps]


def spans_of(pieces: list[str]) -> list[tuple[int, int]]:
    """Character spans of consecutive token texts."""
    spans, pos = [], 0
    for piece in pieces:
        spans.append((pos, pos + len(piece)))
        pos += len(piece)
    return spans


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
