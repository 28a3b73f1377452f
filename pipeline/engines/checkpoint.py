"""Where a model folder's weights are: full weights, or a LoRA adapter on a recorded base.

Every model folder is checked before anything loads it (:func:`check_model_dir`): a missing,
partial or truncated folder fails naming the folder and the file, instead of a loader's error
(or a loader's attempt to fetch the path from a model hub). Weights are safetensors only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.artifacts import PROVENANCE_FILE, read_provenance

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class ModelFolderError(FileNotFoundError):
    """A model folder is missing, partial, truncated, or an adapter that does not fit its base."""


def safetensors_header(path: Path) -> tuple[int, dict[str, Any]]:
    """The header length and header (tensor name -> dtype, shape, byte range) of a safetensors file.

    Raises :class:`ModelFolderError` when ``path`` has no readable header.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= size - 8:
            raise ModelFolderError(f"{path}: not a safetensors file ({size} bytes, no valid header)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFolderError(f"{path}: not a safetensors file (unreadable header: {exc})") from exc
    return length, {name: entry for name, entry in header.items() if name != "__metadata__"}


def check_safetensors(path: Path) -> None:
    """Raise :class:`ModelFolderError` unless ``path`` is a complete safetensors file.

    Reads only the header: its tensors' byte ranges must end exactly at the end of the file, so a
    truncated copy is caught without hashing the weights.
    """
    size = path.stat().st_size
    length, header = safetensors_header(path)
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if 8 + length + end != size:
        raise ModelFolderError(f"{path}: truncated or padded: {size} bytes, its header describes {8 + length + end}")


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model folder (from its shard index when it has one)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return [model_dir / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return sorted(model_dir.glob("*.safetensors"))


def check_model_dir(model_dir: str | Path) -> None:
    """Raise :class:`ModelFolderError` naming what is missing from a model (or adapter) folder.

    A full model needs ``config.json``, a tokenizer and complete safetensors weights (every shard
    its index lists); a LoRA adapter needs its config, ``adapter_model.safetensors`` and a tokenizer.
    """
    model_dir = Path(model_dir)
    hint = "prepare it with the pipeline (snakemake builds resources/models/<name> and the students)"
    if not model_dir.is_dir():
        raise ModelFolderError(f"model folder {model_dir} does not exist; {hint}")
    adapter = (model_dir / ADAPTER_CONFIG).is_file()
    if not adapter and not (model_dir / "config.json").is_file():
        raise ModelFolderError(f"{model_dir}: not a model folder (no config.json); {hint}")
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFolderError(f"{model_dir}: no tokenizer ({' or '.join(TOKENIZER_FILES)}); {hint}")
    weights = [model_dir / ADAPTER_WEIGHTS] if adapter else weight_files(model_dir)
    if not weights:
        pickled = sorted(p.name for p in model_dir.glob("*.bin"))
        extra = f" (only {', '.join(pickled)}: pickle files are not loaded)" if pickled else ""
        raise ModelFolderError(f"{model_dir}: no safetensors weights{extra}; {hint}")
    for path in weights:
        if not path.is_file():
            raise ModelFolderError(f"{model_dir}: weights file {path.name} is missing; {hint}")
        check_safetensors(path)


def resolve_checkpoint(model_dir: str | Path) -> tuple[Path, Path | None]:
    """(base model folder, adapter folder or None) for a checked model folder.

    A student saved with LoRA holds ``adapter_config.json`` whose ``base_model_name_or_path`` is the
    base folder; any other folder is full weights. An adapter whose provenance records its base's
    weights hash must find that base: one rebuilt with other weights is the wrong base.
    """
    model_dir = Path(model_dir)
    check_model_dir(model_dir)
    adapter_config = model_dir / ADAPTER_CONFIG
    if not adapter_config.is_file():
        return model_dir, None
    base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    if not base or not (Path(base) / "config.json").is_file():
        raise ModelFolderError(f"{model_dir} is a LoRA adapter on {base!r}, which is not a model folder here")
    check_model_dir(base)
    provenance = model_dir / PROVENANCE_FILE
    expected = json.loads(provenance.read_text()).get("base_weights_sha256") if provenance.is_file() else None
    found = read_provenance(Path(base))["weights_sha256"] if expected is not None else None
    if expected != found:
        assert expected is not None and found is not None
        raise ModelFolderError(
            f"{model_dir} is a LoRA adapter trained on a base with weights sha256 {expected[:16]}, but its base "
            f"{base} now holds {found[:16]}: the wrong base (rebuilt or replaced); retrain the student"
        )
    return Path(base), model_dir


def adapter_rank(adapter_dir: Path) -> int:
    return int(json.loads((adapter_dir / ADAPTER_CONFIG).read_text())["r"])


def load_adapter(model: Any, adapter_dir: Path, *, is_trainable: bool = False) -> Any:
    """``model`` with the LoRA adapter at ``adapter_dir``; an adapter that does not fit is named."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError) as exc:
        base = getattr(model, "name_or_path", "its base")
        raise ModelFolderError(
            f"{adapter_dir}: the LoRA adapter (rank {adapter_rank(adapter_dir)}) does not fit {base}: "
            f"{str(exc).strip()[:500]}"
        ) from exc


def load_tokenizer(model_dir: str | Path) -> Any:
    """The tokenizer of a checked model folder, from local files only."""
    from transformers import AutoTokenizer

    check_model_dir(model_dir)
    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Write base + adapter merged into full fp32 weights at ``out_dir`` (with the base's tokenizer files)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, use_safetensors=True)
    merged = load_adapter(model, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir)
    for path in base_dir.iterdir():  # tokenizer, chat template, provenance
        if path.is_file() and path.suffix not in (".safetensors", ".bin") and not (out_dir / path.name).exists():
            shutil.copy2(path, out_dir / path.name)
    return out_dir
