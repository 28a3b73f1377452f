"""Same commit, config and seed: the same content in every artifact (docs/reliability/determinism.md).

The smoke DAG runs twice in fresh folders (the session's ``smoke_run`` and one more) and every file
under ``results/`` and ``resources/models/`` is compared by a hash of its content: Parquet by its
table (the file metadata records start-up and generation times), checkpoints by their tensors, JSON
by its values, any other file by its bytes; Parquet columns and JSON keys named in ``TIMING_KEYS``
(wall-clock measurements, such as a training log's tokens/s) are left out. A
student is reached through its ``round_{r}`` link (the versioned folder's name is random).

The smoke DAG samples with transformers; the vLLM engine (the default config's sampler) gets its own
check on the tiny model, in two processes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from safetensors import safe_open

from tests.conftest import DEFAULT_CONFIG, ROOT, SMOKE_CONFIG, snakemake

pytestmark = pytest.mark.slow

ARTIFACT_DIRS = ("results", "resources/models")
# Measurements of the machine, not results: they differ on every run by design.
TIMING_KEYS = frozenset({"startup_s", "generate_s", "sample_s", "sample_startup_s", "score_s", "tokens_per_s"})
# Artifacts whose content may differ between two runs, with the reason. Keep it empty.
KNOWN_DIFFERENCES: dict[str, str] = {}


def without_timings(value: object) -> object:
    """A JSON value with every key in ``TIMING_KEYS`` dropped, at any depth."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def content_hash(path: Path) -> str:
    """sha256 of what a file holds, leaving out what records when and how fast it was written."""
    digest = hashlib.sha256()
    if path.suffix == ".parquet":
        table = pq.read_table(path).replace_schema_metadata(None).combine_chunks()
        table = table.drop_columns([c for c in table.column_names if c in TIMING_KEYS])
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(sink.getvalue())
    elif path.suffix == ".safetensors":
        with safe_open(path, framework="numpy") as weights:
            for name in sorted(weights.keys()):
                tensor = weights.get_tensor(name)
                digest.update(f"{name}:{tensor.dtype}:{tensor.shape}".encode())
                digest.update(tensor.tobytes())
    elif path.suffix == ".json":
        digest.update(json.dumps(without_timings(json.loads(path.read_text())), sort_keys=True).encode())
    else:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def artifact_hashes(workdir: Path) -> dict[str, str]:
    """Content hash of every artifact of a run, by its path under the run's folder."""
    hashes: dict[str, str] = {}
    for top in ARTIFACT_DIRS:
        for folder, dirs, files in os.walk(workdir / top, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # versioned folders: through their links
            for name in files:
                path = Path(folder) / name
                hashes[str(path.relative_to(workdir))] = content_hash(path)
    return hashes


def test_content_hash_sees_content_and_ignores_metadata_and_timings(tmp_path):
    import polars as pl

    from pipeline.artifacts import write_json

    pl.DataFrame({"x": [1.0, 2.0], "tokens_per_s": [3.0, 4.0]}).write_parquet(tmp_path / "a.parquet")
    frame = pl.DataFrame({"x": [1.0, 2.0], "tokens_per_s": [5.0, 6.0]})
    pq.write_table(frame.to_arrow().replace_schema_metadata({"written": "now"}), tmp_path / "b.parquet")
    pl.DataFrame({"x": [1.0, 2.5], "tokens_per_s": [3.0, 4.0]}).write_parquet(tmp_path / "c.parquet")
    write_json({"avg": 0.5, "startup_s": 1.0}, tmp_path / "a.json")
    write_json({"avg": 0.5, "startup_s": 9.0}, tmp_path / "b.json")
    write_json({"avg": 0.6, "startup_s": 1.0}, tmp_path / "c.json")
    for suffix in ("parquet", "json"):
        a, b, c = (content_hash(tmp_path / f"{name}.{suffix}") for name in "abc")
        assert a == b != c, suffix


def test_smoke_dag_rerun_gives_identical_artifacts(smoke_run, tmp_path):
    snakemake(tmp_path, "--configfile", str(SMOKE_CONFIG))
    first, second = artifact_hashes(smoke_run), artifact_hashes(tmp_path)
    assert sorted(first) == sorted(second)
    assert sum(p.endswith(".parquet") for p in first) > 50 and sum(p.endswith(".safetensors") for p in first) > 10
    differing = sorted(p for p in first if first[p] != second[p])
    assert differing == sorted(KNOWN_DIFFERENCES), differing


def test_vllm_samples_are_identical_in_two_processes(tiny_model_dir, tmp_path):
    """The default config's sampler (vLLM, bf16, engine-level seed) on the evaluation workload's shape
    (n_eval prompts x 12 samples): enough that the engine's first steps hold only part of the batch."""
    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.json"
        cmd = [sys.executable, str(ROOT / "tests/engines/vllm_sampler.py"), str(tiny_model_dir), str(out)]
        subprocess.run(cmd, check=True, cwd=ROOT, timeout=600)
        runs.append(json.loads(out.read_text()))
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    assert len(runs[0]) == config["problems"]["n_eval"] * config["evaluate"]["samples_per_problem"]
    assert runs[0] == runs[1]
