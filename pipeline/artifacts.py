"""Parquet artifacts: declared schemas, atomic writes, file metadata.

Every artifact is one row per sample or trace, written with a declared ``pl.Schema`` and file-level
key/value metadata (schema version, stage, params, model). Read any of them lazily with
``pl.scan_parquet(path)``; read the metadata back with :func:`read_metadata`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

SCHEMA_VERSION = 1
META_PREFIX = "pipeline."
PROVENANCE_FILE = "pipeline_model.json"  # in every model folder: spec, sources, weights hash

STEP_STRUCT = pl.Struct({"a": pl.Int64, "op": pl.String, "b": pl.Int64, "result": pl.Int64})

PROBLEMS_SCHEMA = pl.Schema(
    {
        "problem_id": pl.String,
        "split": pl.String,
        "question": pl.String,
        "answer": pl.String,
        "reference": pl.String,
        "source": pl.String,
        # How answers are checked: "exact" (numeric) or "math" (math-verify).
        "verifier": pl.String,
        "num_steps": pl.Int32,
        # Ground-truth chain for synthetic tasks; empty for loaded datasets.
        "steps": pl.List(STEP_STRUCT),
    }
)

SPAN_STRUCT = pl.Struct({"number": pl.Int32, "start": pl.Int32, "end": pl.Int32})

# One row per sampled completion. Token-aligned lists have the completion's length.
TRACES_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,  # "{condition}:{round}:{problem_id}:{sample_idx}"
        "problem_id": pl.String,
        "condition": pl.String,
        "round": pl.Int32,
        "sample_idx": pl.Int32,
        "user_message": pl.String,  # the solver's user turn, before the chat template
        "prompt": pl.String,
        "prompt_token_ids": pl.List(pl.Int32),
        "completion_text": pl.String,
        "completion_token_ids": pl.List(pl.Int32),
        "completion_logprobs": pl.List(pl.Float32),  # sampled tokens, temperature-1 log-probs
        "finish_reason": pl.String,  # "stop" or "length"
        "step_spans": pl.List(SPAN_STRUCT),  # character spans of <step_k> tags in completion_text
        "extracted_answer": pl.String,
        "format_ok": pl.Boolean,
        "is_correct": pl.Boolean,
    }
)

# One row per trace: the critic's verdict and its step-aligned rewrite, plus QA.
CRITIQUES_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,
        "problem_id": pl.String,
        "condition": pl.String,
        "round": pl.Int32,
        "verdict": pl.String,  # correct | missing_justification | truncated | wrong
        "reward": pl.Float32,  # 1.0 if the final answer is right, else 0.0
        "first_wrong_step": pl.Int32,  # 1-based; null when no step is wrong
        "step_verdicts": pl.List(pl.Boolean),  # per solver step: before the first error?
        "critique_text": pl.String,  # the rewrite in the solver's format (null if skipped)
        "critique_steps": pl.List(pl.String),
        "parse_error": pl.String,  # null, or why the critic's output was unusable
        "fallback": pl.String,  # null, or the policy used instead (reference | skip)
        "critic": pl.String,  # oracle | llm
        "critic_model": pl.String,
        "prompt_version": pl.String,
        "alignment_score": pl.Float32,  # share of pre-error steps reproduced verbatim (null if none)
        "first_changed_step": pl.Int32,  # 1-based first step the rewrite changes (null if none)
        "answer_leak": pl.Boolean,  # does the context state the final answer before deriving it?
        "rewrite_correct": pl.Boolean,  # does the rewrite end in the ground-truth answer? (null: no rewrite)
        "critic_output": pl.String,  # llm: the critic's raw output, thinking included (null: oracle, reward only)
    }
)

# One row per trace and context kind: the self-teacher's prompt.
CONTEXTS_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,
        "problem_id": pl.String,
        "condition": pl.String,
        "round": pl.Int32,
        "context_kind": pl.String,  # reference | critique | critique_full_quote | critique_labels_only
        "layout": pl.String,  # inline | anchor | anchor_example | multi_turn (pipeline.tasks.teacher_prompts)
        "context_text": pl.String,  # the context's body, as placed by the layout
        "teacher_prompt": pl.String,
        "teacher_prompt_token_ids": pl.List(pl.Int32),
        "template_version": pl.String,
        "answer_leak": pl.Boolean,
    }
)

# One row per optimizer step of distill_student or train_grpo.
TRAIN_LOG_SCHEMA = pl.Schema(
    {
        "step": pl.Int32,
        "epoch": pl.Int32,
        "loss": pl.Float32,
        "kl": pl.Float32,  # distillation: forward KL to the teacher; GRPO: k3 KL to the initial policy
        "grad_norm": pl.Float32,
        "lr": pl.Float32,
        "teacher_topk_mass": pl.Float32,  # distillation: mean teacher mass inside the stored top-k
        "is_ratio_mean": pl.Float32,  # importance ratio current / generation-time, over tokens
        "is_ratio_max": pl.Float32,
        "is_clipped_frac": pl.Float32,
        "mean_reward": pl.Float32,  # GRPO only
        "student_entropy": pl.Float32,  # mean over the batch's completion tokens, full vocabulary (nats)
        "teacher_entropy": pl.Float32,  # distillation: the target's, on its top-k + tail support (a lower bound)
        "student_support_entropy": pl.Float32,  # distillation: the student's on that same support
        "tokens": pl.Int32,  # completion tokens processed
        "loss_tokens": pl.Int32,  # of which carried loss (distill.token_mask and friends)
        "tokens_per_s": pl.Float32,
    }
)

# One row per evaluation sample of one checkpoint (evaluate).
EVAL_SAMPLES_SCHEMA = pl.Schema(
    {
        "problem_id": pl.String,
        "condition": pl.String,  # base, or the arm whose student this is
        "round": pl.Int32,
        "seed": pl.Int32,  # the run seed
        "sample_idx": pl.Int32,
        "completion_text": pl.String,
        "num_tokens": pl.Int32,
        "sum_logprob": pl.Float64,  # sum of the sampled tokens' temperature-1 log-probs (entropy estimate)
        "finish_reason": pl.String,
        "extracted_answer": pl.String,
        "answer_key": pl.String,  # the answer normalised by the problem's verifier (Maj@n votes on it)
        "format_ok": pl.Boolean,
        "is_correct": pl.Boolean,
    }
)

# One row per re-solve sample of check_premise: a round-0 trace's problem, with one context kind.
PREMISE_SAMPLES_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,
        "problem_id": pl.String,
        "layout": pl.String,  # the teacher prompt's layout; none for the plain solver prompt
        "context_kind": pl.String,  # none (the plain solver prompt), reference, critique, ...
        "original_correct": pl.Boolean,  # was the round-0 trace itself correct?
        "sample_idx": pl.Int32,
        "completion_text": pl.String,
        "num_tokens": pl.Int32,
        "extracted_answer": pl.String,
        "format_ok": pl.Boolean,
        "is_correct": pl.Boolean,
    }
)
PREMISE_ADVANTAGES_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,
        "problem_id": pl.String,
        "layout": pl.String,
        "context_kind": pl.String,
        "original_correct": pl.Boolean,
        "categories": pl.List(pl.String),  # per completion token (pipeline.tasks.token_spans.CATEGORIES)
        "advantages": pl.List(pl.Float32),  # per completion token: A_t = teacher - student log-prob
    }
)

REJECTS_SCHEMA = pl.Schema(
    {
        "source": pl.String,
        "row_index": pl.Int64,
        "reason": pl.String,
        "question": pl.String,
        "answer": pl.String,
    }
)


# One row per (trace, context kind); the three lists have the completion's length.
ADVANTAGE_TOKENS_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,
        "problem_id": pl.String,
        "context_kind": pl.String,
        "is_correct": pl.Boolean,
        "first_wrong_step": pl.Int32,  # the critic's, 1-based among the solver's steps; null if none
        "tokens": pl.List(pl.String),  # decoded pieces; they concatenate to completion_text
        "categories": pl.List(pl.String),  # one of CATEGORIES per token
        "advantages": pl.List(pl.Float32),  # A_t = teacher - student log-prob of the sampled token
    }
)

# One row per (context kind, correctness, category), category "all" included; token-weighted.
ADVANTAGE_AGGREGATES_SCHEMA = pl.Schema(
    {
        "context_kind": pl.String,
        "correctness": pl.String,  # correct | incorrect
        "category": pl.String,  # one of CATEGORIES, or all
        "n_traces": pl.Int32,  # traces with at least one token in the category
        "n_tokens": pl.Int64,
        "mean_advantage": pl.Float64,  # null when n_tokens is 0
        "share_negative": pl.Float64,  # share of tokens with A_t < 0
        "mean_abs_advantage": pl.Float64,
    }
)


# One row per scored trace (score_traces): the student side of A_t, shared by every context kind.
TRACE_SCORES_SCHEMA = pl.Schema(
    {
        "trace_id": pl.String,
        # per completion token: its log-prob under the trace's own no-context prompt, by the teacher's weights
        "student_token_logprobs": pl.List(pl.Float32),
    }
)


def teacher_logprobs_schema(k: int, dtype: str = "float32") -> pl.Schema:
    """One row per trace; every list column has the completion's length."""
    float_type = pl.Float16 if dtype == "float16" else pl.Float32
    return pl.Schema(
        {
            "trace_id": pl.String,
            "problem_id": pl.String,
            "condition": pl.String,
            "round": pl.Int32,
            "context_kind": pl.String,
            "is_correct": pl.Boolean,  # the trace's answer is right (distill.skip_correct reads it)
            "completion_token_ids": pl.List(pl.Int32),
            # per token: pre_error | first_wrong | after_error | answer, from the critic's first wrong
            # step (pipeline.tasks.token_spans); distill.token_mask reads it
            "token_categories": pl.List(pl.String),
            "topk_ids": pl.List(pl.Array(pl.Int32, k)),
            "topk_logprobs": pl.List(pl.Array(float_type, k)),
            "teacher_token_logprobs": pl.List(pl.Float32),
            "tail_logmass": pl.List(pl.Float32),
            "student_token_logprobs": pl.List(pl.Float32),
            "prompt_tokens_dropped": pl.Int32,  # teacher prompt tokens cut by the overflow policy
        }
    )


# select_problems: one row per base-solver sample of a candidate problem (Avg@n is computed from these).
SELECTION_SAMPLES_SCHEMA = pl.Schema(
    {
        "problem_id": pl.String,
        "split": pl.String,  # the candidate's split (train or eval)
        "sample_idx": pl.Int32,
        "completion_text": pl.String,
        "num_tokens": pl.Int32,
        "finish_reason": pl.String,
        "extracted_answer": pl.String,
        "format_ok": pl.Boolean,
        "is_correct": pl.Boolean,
    }
)

# select_problems: one row per candidate, the critic's own attempt at the problem (LLM critic only).
CRITIC_ANSWERS_SCHEMA = pl.Schema(
    {
        "problem_id": pl.String,
        "split": pl.String,
        "critic_output": pl.String,  # raw, thinking included
        "num_tokens": pl.Int32,
        "finish_reason": pl.String,
        "parse_error": pl.String,  # null, think_only or no_answer
        "extracted_answer": pl.String,
        "is_correct": pl.Boolean,
    }
)

# select_problems: every candidate that was not kept, with its per-problem statistics and why.
DROPPED_SCHEMA = pl.Schema(
    {
        **PROBLEMS_SCHEMA,
        "samples": pl.Int32,  # n of Avg@n
        "correct": pl.Int32,
        "avg": pl.Float64,
        "format_rate": pl.Float64,
        "critic_correct": pl.Boolean,
        "reasons": pl.List(pl.String),  # every filter it fails: too_easy, too_hard, critic_fails, format, over_cap
        "reason": pl.String,  # the first of them
    }
)


class SchemaError(ValueError):
    """A frame does not match the schema declared for its artifact."""


class ArtifactReadError(ValueError):
    """An artifact file is missing, truncated, not Parquet, or repeats a row's key."""


# Columns that identify a row of an artifact: a file that repeats a key is rejected when read.
ARTIFACT_KEYS: dict[str, tuple[str, ...]] = {
    "problems": ("problem_id",),
    "traces": ("trace_id",),
    "critiques": ("trace_id",),
    "contexts": ("trace_id", "context_kind"),
    "teacher_logprobs": ("trace_id", "context_kind"),
    "trace_scores": ("trace_id",),
    "eval_samples": ("problem_id", "sample_idx"),
    "selection_samples": ("problem_id", "sample_idx"),
    "critic_answers": ("problem_id",),
}


def check_schema(actual: pl.Schema, schema: pl.Schema, *, artifact: str) -> None:
    """Raise :class:`SchemaError` naming every missing, extra or mistyped column of ``actual``."""
    problems = []
    for name, dtype in schema.items():
        if name not in actual:
            problems.append(f"missing column {name!r} ({dtype})")
        elif actual[name] != dtype:
            problems.append(f"column {name!r} is {actual[name]}, expected {dtype}")
    problems += [f"unexpected column {name!r}" for name in actual if name not in schema]
    if problems:
        raise SchemaError(f"{artifact}: " + "; ".join(problems))


def validate_frame(frame: pl.DataFrame, schema: pl.Schema, *, artifact: str) -> None:
    """Raise :class:`SchemaError` naming every missing, extra or mistyped column."""
    check_schema(frame.schema, schema, artifact=artifact)


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


# ---------------------------------------------------------------------------------------------
# Model folders: the provenance record every stage cites.


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
