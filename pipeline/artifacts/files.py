"""Artifact I/O: atomic writes (files, JSON, versioned folders), the metadata written with every
Parquet artifact, and the checked reads that name a missing, truncated or foreign file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.artifacts.schemas import (
    ARTIFACT_KEYS,
    SCHEMA_VERSION,
    ArtifactReadError,
    check_schema,
    teacher_logprobs_schema,
    validate_frame,
)

META_PREFIX = "pipeline."


def shared_mode(mode: int) -> int:
    """``mode`` less the process umask: what ``open``/``mkdir`` would give a file or folder.

    ``mkstemp``/``mkdtemp`` create 0600/0700 whatever the umask; finished artifacts get this mode
    instead, so they are as readable as any file the user writes (0644/0755 under the usual 022).
    """
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def share_tree(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes of :func:`shared_mode` (links are left alone).

    For finished model folders: ``mkdtemp`` makes the folder 0700 and safetensors writes weights 0600.
    """
    file_mode, dir_mode = shared_mode(0o666), shared_mode(0o777)
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(dir_mode if path.is_dir() else file_mode)


def git_commit() -> str:
    """The current git commit of the working tree, or ``"unknown"`` outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def write_artifact(
    frame: pl.DataFrame,
    path: str | os.PathLike[str],
    *,
    schema: pl.Schema,
    artifact: str,
    stage: str,
    params: Mapping[str, Any] | None = None,
    model: str | None = None,
) -> Path:
    """Validate ``frame`` against ``schema`` and write it atomically as zstd Parquet with metadata.

    The file appears under ``path`` only once it is complete: it is written to a temporary file in
    the same directory and renamed.
    """
    validate_frame(frame, schema, artifact=artifact)
    metadata = {
        "schema_version": str(SCHEMA_VERSION),
        "artifact": artifact,
        "stage": stage,
        "params": json.dumps(params or {}, sort_keys=True, default=str),
        "model": model or "",
        "git_commit": git_commit(),
    }
    with atomic_path(path) as tmp:
        frame.select(schema.names()).write_parquet(
            tmp,
            compression="zstd",
            metadata={META_PREFIX + key: value for key, value in metadata.items()},
        )
    return Path(path)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; it becomes ``path`` (a rename) when the block ends.

    An error in the block removes it and leaves ``path`` as it was. After the rename, what killed
    writes of ``path`` left beside it is removed (:func:`remove_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, shared_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    remove_temporaries(path)


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    return write_bytes_atomic(text.encode(), path)


def staging_prefix(path: str | os.PathLike[str]) -> str:
    """The name prefix of the folders a model folder ``path`` is built in before it is renamed into place."""
    return f".{Path(path).name}.staging-"


def remove_temporaries(path: Path) -> None:
    """Delete what killed writes of ``path`` left beside it: ``.<name>.<random>.tmp`` files and staging folders.

    Called once ``path`` is complete; only its own writes make such names, and never two at once.
    """
    temporary = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
    for sibling in path.parent.iterdir():
        if sibling.name.startswith(staging_prefix(path)) and sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling)
        elif temporary.fullmatch(sibling.name) and not sibling.is_dir():
            sibling.unlink()


# Versions of a folder written by versioned_dir are its hidden siblings with this prefix.
VERSION_PREFIX = ".{name}.version-"


@contextmanager
def versioned_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh folder to write the next version of the folder ``path`` into.

    The folder is a hidden sibling, ``.<name>.version-<random>``. When the ``with`` block completes,
    ``path`` becomes a symbolic link to it, swapped in with one atomic rename, and only then are
    the earlier versions deleted. So a reader sees either the previous complete version or the new
    one, and a job killed before the swap leaves the previous version on disk (Snakemake's removal
    of a job's outputs unlinks a link, not its target). A failed block deletes its unfinished folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=VERSION_PREFIX.format(name=path.name)))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    share_tree(staging)
    link = staging.with_name(f"{staging.name}.link")
    link.symlink_to(staging.name)
    os.replace(link, path)
    remove_other_versions(path)


def remove_other_versions(path: Path) -> None:
    """Delete the versions of the folder ``path`` (its siblings ``.<name>.version-*``) but the one it links to."""
    prefix, current = VERSION_PREFIX.format(name=path.name), os.readlink(path)
    for version in path.parent.iterdir():
        if not version.name.startswith(prefix) or version.name == current:
            continue
        if version.is_symlink() or not version.is_dir():
            version.unlink()
        else:
            shutil.rmtree(version)


def write_json(payload: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` as indented, key-sorted JSON, atomically (summaries beside the Parquet)."""
    return write_text_atomic(json.dumps(payload, indent=2, sort_keys=True), path)


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON summary written by :func:`write_json`; a missing or malformed file is named in the error."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactReadError(f"{path}: not a readable JSON summary: {exc}") from exc


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The pipeline metadata of an artifact, with ``params`` decoded from JSON."""
    raw = pl.read_parquet_metadata(path)
    meta: dict[str, Any] = {
        key.removeprefix(META_PREFIX): value for key, value in raw.items() if key.startswith(META_PREFIX)
    }
    if "params" in meta:
        meta["params"] = json.loads(meta["params"])
    return meta


def read_artifact(path: str | os.PathLike[str], *, schema: pl.Schema, artifact: str) -> pl.DataFrame:
    """Read an artifact, checked against its declared schema and its row key (:data:`ARTIFACT_KEYS`).

    A missing, truncated or non-Parquet file raises :class:`ArtifactReadError`, a missing or mistyped
    column :class:`SchemaError`; both name the file. The schema is checked from the file's footer
    before any data is read.
    """
    path = Path(path)
    where = f"{path} ({artifact})"
    if not path.is_file():
        raise ArtifactReadError(f"{where}: no such file")
    try:
        check_schema(pl.read_parquet_schema(path), schema, artifact=where)
        frame = pl.read_parquet(path)
    except pl.exceptions.PolarsError as exc:
        raise ArtifactReadError(f"{where}: not a readable Parquet file (truncated or corrupt?): {exc}") from exc
    key = ARTIFACT_KEYS.get(artifact)
    if key and frame.height:
        repeated = frame.filter(pl.struct(key).is_duplicated()).select(key).unique(maintain_order=True)
        if repeated.height:
            shown = ", ".join(str(row) for row in repeated.head(3).iter_rows())
            raise ArtifactReadError(f"{where}: {repeated.height} repeated {'/'.join(key)} value(s), e.g. {shown}")
    return frame


def read_teacher_logprobs(path: str | os.PathLike[str]) -> pl.DataFrame:
    """Read a ``precompute_teacher_logprobs`` artifact: its k and storage dtype come from the file."""
    path = Path(path)
    try:
        actual = pl.read_parquet_schema(path) if path.is_file() else pl.Schema()
    except pl.exceptions.PolarsError:
        actual = pl.Schema()  # read_artifact names the unreadable file
    k, dtype = 1, "float32"
    topk_ids, topk_logprobs = actual.get("topk_ids"), actual.get("topk_logprobs")
    if isinstance(topk_ids, pl.List) and isinstance(topk_ids.inner, pl.Array):
        k = topk_ids.inner.size
    if isinstance(topk_logprobs, pl.List) and isinstance(topk_logprobs.inner, pl.Array):
        dtype = "float16" if topk_logprobs.inner.inner == pl.Float16 else "float32"
    return read_artifact(path, schema=teacher_logprobs_schema(k, dtype), artifact="teacher_logprobs")
