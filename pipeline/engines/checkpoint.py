"""Where a model folder's weights are: full weights, or a LoRA adapter on a recorded base."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def resolve_checkpoint(model_dir: str | Path) -> tuple[Path, Path | None]:
    """(base model folder, adapter folder or None) for a model folder.

    A student saved with LoRA holds ``adapter_config.json`` whose ``base_model_name_or_path`` is the
    base folder; any other folder is full weights.
    """
    model_dir = Path(model_dir)
    adapter_config = model_dir / "adapter_config.json"
    if not adapter_config.is_file():
        return model_dir, None
    base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    if not base or not (Path(base) / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is a LoRA adapter on {base!r}, which is not a model folder here")
    return Path(base), model_dir


def adapter_rank(adapter_dir: Path) -> int:
    return int(json.loads((adapter_dir / "adapter_config.json").read_text())["r"])


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Write base + adapter merged into full fp32 weights at ``out_dir`` (with the base's tokenizer files)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir)
    for path in base_dir.iterdir():  # tokenizer, chat template, provenance
        if path.is_file() and path.suffix not in (".safetensors", ".bin") and not (out_dir / path.name).exists():
            shutil.copy2(path, out_dir / path.name)
    return out_dir
