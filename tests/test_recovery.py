"""A killed run loses nothing, and the README's recovery commands finish it as if it had never died.

Two scenarios on the smoke config, each SIGKILLing the whole process group (what a node failure or
an OOM kill does) and then running exactly the commands of the README's "When a run dies" section:
a forced rerun of one student killed mid-training (the previous checkpoint survives), and a run
killed inside every stage in turn (its final artifacts equal an uninterrupted run's).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shlex
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file

from pipeline.artifacts import PROVENANCE_FILE, VERSION_PREFIX, read_provenance, weights_hash
from pipeline.engines.checkpoint import resolve_checkpoint
from pipeline.logs import DISK_USE_LINE
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


def written_since(path: Path, since: float) -> bool:
    """Whether the file exists and was written after ``since``."""
    try:
        return path.stat().st_mtime > since
    except FileNotFoundError:
        return False


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


# ---------------------------------------------------------------------------------------------
# A SIGKILL inside every stage in turn, resumed each time with the README's commands.

KILL_SEED = 13
# Every rule of the smoke DAG, in the order their jobs first start (select_problems_critic needs an LLM critic).
STAGES = (
    "prepare_model", "prepare_problems", "select_problems_solver", "select_problems", "generate_traces",
    "evaluate", "query_critic", "build_teacher_contexts", "check_premise", "score_traces", "precompute_teacher_logprobs",
    "distill_student", "train_grpo", "analyse_advantages", "report",
)  # fmt: skip
# Killed once more the moment this output appears: its job has written one of its four files, and
# Snakemake has not yet recorded the job as complete.
BETWEEN_JOBS = "results/problems/selection/train.parquet"
# Wall-clock figures (seconds, tokens/s): the only fields two runs of the same work may differ in.
WALL_CLOCK = re.compile(r"(_s|^seconds)$")
# The report receives the whole config, so the reduced run's page differs from the smoke run's by design.
NOT_COMPARED = {"results/report.html"}


def reduced_config(tmp_path: Path) -> Path:
    """The smoke config with one arm of each kind and one round: every stage, a third of the jobs.

    Every artifact it makes is one the smoke run makes too, from the same inputs and params.
    """
    config = yaml.safe_load(SMOKE_CONFIG.read_text())
    config["experiment"] |= {"conditions": ["grpo", "critique"], "variants": [], "rounds": 1}
    path = tmp_path / "reduced.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def log_span(log: Path) -> float:
    """Seconds between a job log's first and last timestamped lines."""
    stamps = [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        for line in log.read_text().splitlines()
        if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line)
    ]
    return (max(stamps) - min(stamps)).total_seconds() if stamps else 0.0


def work_spans(reference: Path) -> dict[str, float]:
    """Per rule, the shortest span one of its jobs logged for in the reference run: where a kill lands in its work."""
    spans: dict[str, float] = {}
    for log in (reference / "logs").rglob("*.log"):
        rule = log.relative_to(reference / "logs").parts[0]
        spans[rule] = min(spans.get(rule, math.inf), log_span(log))
    return spans


def is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def artifacts(workdir: Path) -> list[Path]:
    """Every visible file, model folder and checkpoint of a run (a student link counts as one checkpoint)."""
    results = workdir / "results"
    students = {p for p in results.glob("seed_*/students/*/round_*")}
    files = [
        p
        for p in results.rglob("*")
        if p.is_file() and not is_hidden(p, results) and not any(s in p.parents for s in students)
    ]
    models = [p for p in (workdir / "resources" / "models").glob("*") if not p.name.startswith(".")]
    return sorted(files + list(students) + models)


def is_model(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def assert_nothing_half_written(workdir: Path) -> None:
    """Every visible artifact reads in full; every checkpoint is complete or absent."""
    for path in artifacts(workdir):
        if path.is_symlink():
            assert_complete(path)
        elif path.parent.name == "models":  # renamed into place complete, with its provenance
            assert (path / "model.safetensors").is_file() and (path / PROVENANCE_FILE).is_file()
            assert read_provenance(path)["weights_sha256"] == weights_hash(path)
        elif path.suffix == ".parquet":
            pl.read_parquet(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())


def without_wall_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_wall_clock(v) for k, v in value.items() if not WALL_CLOCK.search(k)}
    if isinstance(value, list):
        return [without_wall_clock(v) for v in value]
    return value


def assert_same_content(path: Path, expected: Path) -> None:
    """Same content: Parquet frames, JSON values (wall-clock fields aside), checkpoint tensors, other bytes."""
    if is_model(path):  # a model folder or checkpoint: every tensor, then the config
        ours, theirs = load_file(path / "model.safetensors"), load_file(expected / "model.safetensors")
        assert ours.keys() == theirs.keys(), path
        assert all(torch.equal(ours[name], theirs[name]) for name in ours), path
        assert json.loads((path / "config.json").read_text()) == json.loads((expected / "config.json").read_text())
    elif path.suffix == ".parquet":
        frames = [pl.read_parquet(p) for p in (path, expected)]
        frames = [f.drop([c for c in f.columns if WALL_CLOCK.search(c)]) for f in frames]
        assert frames[0].equals(frames[1]), path
    elif path.suffix == ".json":
        assert without_wall_clock(json.loads(path.read_text())) == without_wall_clock(json.loads(expected.read_text()))
    else:
        assert path.read_bytes() == expected.read_bytes(), path


def leftovers(workdir: Path) -> list[Path]:
    """Hidden files or folders under results/ and resources/ that are neither a linked checkpoint nor
    Snakemake's marker of a folder output: what killed writes left."""
    current = {link.resolve() for link in (workdir / "results").glob("seed_*/students/*/round_*")}
    return sorted(
        p
        for root in (workdir / "results", workdir / "resources")
        for p in root.rglob(".*")
        if p.name != ".snakemake_timestamp" and p.resolve() not in current and not any(c in p.parents for c in current)
    )


@dataclasses.dataclass
class Kill:
    target: str  # the rule whose job was killed, or the output whose appearance triggered the kill
    delay_s: float  # from the trigger to the kill
    inside: bool  # the job had not finished: its log lacked its last line after the kill


def triggers(workdir: Path, pending: dict[str, float], since: float) -> dict[str, Path]:
    """The pending triggers met since ``since``: a new log of a pending rule (by rule), or the BETWEEN_JOBS output."""
    met = (
        {BETWEEN_JOBS: workdir / BETWEEN_JOBS}
        if BETWEEN_JOBS in pending and written_since(workdir / BETWEEN_JOBS, since)
        else {}
    )
    for log in sorted((workdir / "logs").rglob("*.log")):
        rule = log.relative_to(workdir / "logs").parts[0]
        if rule in pending and rule not in met and written_since(log, since):
            met[rule] = log
    return met


def finished(log: Path) -> bool:
    """Whether the job that writes ``log`` is done: its last line, the disk its outputs take, is there."""
    return DISK_USE_LINE.split(":")[0] in log.read_text()


def run_until_kill(workdir: Path, config: Path, pending: dict[str, float], rng: random.Random) -> Kill | None:
    """The README's plain run, SIGKILLed (whole process group) at the first pending trigger; None if it finished.

    ``pending`` maps a rule to the span of its work: its trigger is a new log of one of its jobs,
    then a seeded delay within that span, cut short when the job ends or another trigger is met (so
    that no pending stage runs to completion unkilled); the BETWEEN_JOBS trigger is that output's
    appearance, with no delay.
    """
    started = time.time()
    command = on_run(recovery_commands()[-1], workdir, config)
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (met := triggers(workdir, pending, started)):
        time.sleep(0.02)
    if proc.poll() is not None:
        assert proc.returncode == 0, f"the run failed: {command}"
        return None
    target, path = next(iter(met.items()))
    delay = 0.0 if target == BETWEEN_JOBS else rng.uniform(0, pending[target])
    triggered = time.time()
    while (
        time.time() < triggered + delay
        and not finished(path)
        and triggers(workdir, pending, started).keys() == met.keys()
    ):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not group_alive(proc.pid), "a process of the killed run is still running"
    return Kill(target, time.time() - triggered, inside=target == BETWEEN_JOBS or not finished(path))


def group_alive(pgid: int, wait_s: float = 10.0) -> bool:
    """Whether a process of the group ``pgid`` still runs ``wait_s`` seconds after it was killed (zombies aside)."""
    deadline = time.time() + wait_s
    while time.time() < deadline:
        running = []
        for process in psutil.process_iter():
            try:
                if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                    running.append(process)
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
        if not running:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow
def test_a_run_killed_inside_every_stage_resumes_to_the_artifacts_of_an_uninterrupted_run(smoke_run, tmp_path):
    config = reduced_config(tmp_path)
    workdir = tmp_path / "run"
    spans = work_spans(smoke_run)
    pending = {**{rule: spans[rule] for rule in STAGES}, BETWEEN_JOBS: 0.0}
    rng = random.Random(KILL_SEED)
    kills = []
    while kill := run_until_kill(workdir, config, pending, rng):
        kills.append(kill)
        del pending[kill.target]
        assert_nothing_half_written(workdir)
        assert list((workdir / ".snakemake/locks").iterdir())  # the dead run's lock stays
        unlock = subprocess.run(on_run(recovery_commands()[0], workdir, config), capture_output=True, text=True)
        assert unlock.returncode == 0, unlock.stderr[-4000:]
    assert not pending, f"never triggered: {sorted(pending)}"

    compared = [path for path in artifacts(workdir) if str(path.relative_to(workdir)) not in NOT_COMPARED]
    print(
        f"kills survived: {len(kills)} ({sum(k.inside for k in kills)} inside a running job), "
        f"stages killed: {len(STAGES)}, artifacts compared: {len(compared)}\n"
        + "\n".join(f"  {k.target}: +{k.delay_s:.2f}s {'inside' if k.inside else 'after'} its job" for k in kills)
    )
    for path in compared:
        assert_same_content(path, smoke_run / path.relative_to(workdir))
    assert not leftovers(workdir)
    assert "Nothing to be done" in snakemake(workdir, "--configfile", str(config), "-n").stdout
