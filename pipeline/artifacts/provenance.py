"""Model provenance: the record every model folder carries (spec, sources, weights hash), read back
to name the model that made an artifact."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

PROVENANCE_FILE = "pipeline_model.json"  # in every model folder: spec, sources, weights hash


def hash_files(paths: Iterable[Path]) -> str:
    """sha256 over the given files' names and bytes, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def weights_hash(model_dir: Path) -> str:
    """A hash of a model folder's weight files (safetensors or bin)."""
    files = [p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin")]
    return hash_files(files)


def read_provenance(model_dir: Path) -> dict:
    """The provenance record ``prepare_model`` wrote, or a minimal one for foreign folders."""
    path = Path(model_dir) / PROVENANCE_FILE
    if path.is_file():
        return json.loads(path.read_text())
    return {"name": Path(model_dir).name, "weights_sha256": weights_hash(Path(model_dir))}


def model_label(model: Path) -> str:
    """``<folder>@<weights sha256 prefix>``: how artifacts name the model that made them."""
    return f"{Path(model).name}@{read_provenance(model)['weights_sha256'][:16]}"
