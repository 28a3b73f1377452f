"""Parquet artifacts: declared schemas, atomic writes, file metadata, model provenance.

Every artifact is one row per sample or trace, written with a declared ``pl.Schema`` and file-level
key/value metadata (schema version, stage, params, model). Read any of them lazily with
``pl.scan_parquet(path)``; read the metadata back with :func:`read_metadata`.

The package, by concept: ``schemas`` (the declared schemas and row keys), ``files`` (atomic writes
and checked reads) and ``provenance`` (model folders' records). Every name is importable from
``pipeline.artifacts`` as before; every schema declared in ``schemas`` is re-exported here.
"""

# ruff: noqa: F401  (this module re-exports the package's names)
from __future__ import annotations

from pipeline.artifacts.files import (
    META_PREFIX,
    VERSION_PREFIX,
    atomic_path,
    git_commit,
    read_artifact,
    read_json,
    read_metadata,
    read_teacher_logprobs,
    remove_other_versions,
    remove_temporaries,
    share_tree,
    shared_mode,
    staging_prefix,
    versioned_dir,
    write_artifact,
    write_bytes_atomic,
    write_json,
    write_text_atomic,
)
from pipeline.artifacts.provenance import PROVENANCE_FILE, hash_files, model_label, read_provenance, weights_hash
from pipeline.artifacts.schemas import *  # noqa: F403  (every schema, so docs_schemas sees a new one)
