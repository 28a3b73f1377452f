"""A run killed mid-training costs no checkpoint, and the README's recovery commands rebuild every one.

The issue's scenario on the smoke config (critique arm only, longer training): a finished run, a
forced rerun of one student, SIGKILL of the whole process group mid-training, then exactly the
commands of the README's "When a run dies" section.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.artifacts import VERSION_PREFIX, read_provenance, weights_hash
from pipeline.engines.checkpoint import resolve_checkpoint
from pipeline.training import load_student
from tests.conftest import ROOT, SMOKE_CONFIG, SNAKEMAKE, snakemake

KILLED = "results/seed_0/students/critique/round_1"
KILLED_LOG = "logs/distill_student/seed_0/critique/round_1.log"
ROUNDS = (1, 2)


def recovery_commands() -> list[list[str]]:
    """The commands of the README's "When a run dies" code block, in order."""
    section = (ROOT / "README.md").read_text().split("\n## When a run dies\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def on_run(command: list[str], workdir: Path, config: Path) -> list[str]:
    """A README command (run from the repo root) aimed at the scratch run's folder and config."""
    assert command[0] == ".venv/bin/snakemake", command
    return [
        SNAKEMAKE,
        *command[1:],
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
    ]


def text_since(path: Path, since: float) -> str:
    """The file's text if it was written after ``since``, else ''."""
    try:
        return path.read_text() if path.stat().st_mtime > since else ""
    except FileNotFoundError:  # Snakemake removes a job's log before the job starts
        return ""


def kill_mid_training(workdir: Path, config: Path, step: int) -> str:
    """Force a rerun of the KILLED student, SIGKILL its process group at ``step``; return the job's log."""
    started = time.time()
    command = on_run([".venv/bin/snakemake", "--cores", "all", "--forcerun", KILLED, KILLED], workdir, config)
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while f"step {step}/" not in text_since(workdir / KILLED_LOG, started):
        assert proc.poll() is None and time.time() < started + 300, "the forced rerun ended before the kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # what a node failure or an OOM kill does
    proc.wait()
    time.sleep(1)  # nothing of the job is left running to write more
    return (workdir / KILLED_LOG).read_text()


def assert_complete(model: Path) -> None:
    """A link to a complete versioned folder: loads, has its weights, and its provenance hash matches."""
    assert model.is_symlink() and model.resolve().name.startswith(VERSION_PREFIX.format(name=model.name))
    assert resolve_checkpoint(model) == (model, None) and (model / "model.safetensors").is_file()
    load_student(model, None)
    record = read_provenance(model)
    assert record["name"] == model.name and record["weights_sha256"] == weights_hash(model)


@pytest.mark.slow
def test_a_killed_training_job_costs_no_checkpoint_and_the_readme_commands_rebuild_it(tmp_path):
    config = yaml.safe_load(SMOKE_CONFIG.read_text())
    config["experiment"]["conditions"] = ["critique"]
    config["experiment"]["variants"] = []
    config["distill"]["optim"]["epochs"] = 10  # 20 steps: several seconds of training to kill in
    config_path = tmp_path / "critique.yaml"
    config_path.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    snakemake(workdir, "--configfile", str(config_path))
    previous = (workdir / KILLED).resolve()
    previous_hash = weights_hash(previous)

    log = kill_mid_training(workdir, config_path, step=5)
    assert "step 5/" in log and "distilled" not in log
    assert not (workdir / KILLED).exists()  # Snakemake removed the output (the link) before the job
    assert weights_hash(previous) == previous_hash  # the previous student survives on disk
    assert list((workdir / ".snakemake/locks").iterdir())  # the dead run's locks stay

    for command in recovery_commands():
        out = subprocess.run(on_run(command, workdir, config_path), capture_output=True, text=True, timeout=1800)
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]

    students = workdir / "results/seed_0/students/critique"
    for r in ROUNDS:
        assert_complete(students / f"round_{r}")
    assert not previous.exists()  # replaced by the rebuilt version; no other version is left
    assert sorted(p.name for p in students.iterdir()) == sorted(
        name for r in ROUNDS for name in (f"round_{r}", (students / f"round_{r}").resolve().name)
    )
    report = (workdir / "results/report.html").stat().st_mtime
    for r in ROUNDS:
        summary = workdir / f"results/seed_0/eval/critique/round_{r}.json"
        model = students / f"round_{r}"
        # each evaluation sampled the rebuilt checkpoint, and the report was rebuilt from the evaluations
        assert json.loads(summary.read_text())["model"] == f"round_{r}@{weights_hash(model)[:16]}"
        assert model.lstat().st_mtime <= summary.stat().st_mtime <= report
        assert (workdir / f"results/seed_0/train_logs/critique/round_{r}.parquet").stat().st_mtime <= report
    assert "Nothing to be done" in snakemake(workdir, "--configfile", str(config_path), "-n").stdout
