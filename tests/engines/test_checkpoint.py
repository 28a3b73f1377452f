"""Missing, partial or truncated model folders, and LoRA adapters that do not fit, fail naming the folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.config import LoraSettings, ModelSpec
from pipeline.engines.checkpoint import ModelFolderError, check_model_dir, load_tokenizer, resolve_checkpoint
from pipeline.engines.hf import HFEngine
from pipeline.models import prepare_model
from pipeline.training import load_student, save_student


def copy_model(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def drop(name: str):
    return lambda folder: (folder / name).unlink()


def truncate(fraction: float):
    def cut(folder: Path) -> None:
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: int(weights.stat().st_size * fraction)])

    return cut


def pickle_only(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def shard_missing(folder: Path) -> None:
    weight_map = {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "lm_head": "model-00002-of-00002.safetensors",
    }
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def header_garbage(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + bytes(64))


DEFECTS = {
    "no config.json": (drop("config.json"), "not a model folder (no config.json)"),
    "no tokenizer": (lambda f: [drop(n)(f) for n in ("tokenizer.json", "tokenizer_config.json")], "no tokenizer"),
    "no weights": (drop("model.safetensors"), "no safetensors weights"),
    "weights cut in half": (truncate(0.5), "model.safetensors: truncated or padded"),
    "weights less 1 byte": (truncate(1 - 1e-7), "model.safetensors: truncated or padded"),
    "weights cut in the header": (truncate(1e-6), "model.safetensors: not a safetensors file"),
    "weights header not JSON": (header_garbage, "model.safetensors: not a safetensors file (unreadable header"),
    "pickle weights only": (pickle_only, "only pytorch_model.bin: pickle files are not loaded"),
    "a shard missing": (shard_missing, "weights file model-00002-of-00002.safetensors is missing"),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_a_partial_model_folder_fails_every_loader_naming_the_folder_and_file(tiny_model_dir, tmp_path, defect):
    damage, message = DEFECTS[defect]
    folder = copy_model(tiny_model_dir, tmp_path / "model")
    damage(folder)
    for load in (check_model_dir, load_tokenizer, resolve_checkpoint, HFEngine, lambda f: load_student(f, None)):
        with pytest.raises(ModelFolderError) as err:
            load(folder)
        assert str(folder) in str(err.value) and message in str(err.value), str(err.value)


def test_a_missing_model_folder_is_named_and_never_looked_up_on_a_hub(tmp_path):
    # a path shaped like a hub id: transformers alone would try to fetch it
    for missing in (tmp_path / "Qwen" / "Qwen3-1.7B", Path("Qwen/Qwen3-1.7B")):
        for load in (load_tokenizer, HFEngine):
            with pytest.raises(ModelFolderError, match=f"model folder {missing} does not exist"):
                load(missing)


@pytest.fixture()
def student(tiny_model_dir, tmp_path) -> Path:
    """A LoRA student of rank 4 on the tiny model, saved as the training stages save it."""
    model, tokenizer, base = load_student(tiny_model_dir, LoraSettings(r=4, alpha=8))
    out = tmp_path / "round_1"
    save_student(model, tokenizer, out, base_dir=base, details={})
    return out


def edit_adapter_config(student: Path, **changes) -> None:
    path = student / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_an_adapter_of_another_rank_than_the_config_is_not_continued(student):
    with pytest.raises(ModelFolderError, match="has rank 4, but the config trains rank 8"):
        load_student(student, LoraSettings(r=8, alpha=16))
    load_student(student, LoraSettings(r=4, alpha=8))  # the configured rank continues


def test_an_adapter_whose_weights_do_not_match_its_rank_is_named(student):
    edit_adapter_config(student, r=8)  # the weights are rank 4
    for load in (HFEngine, lambda f: load_student(f, LoraSettings(r=8))):
        with pytest.raises(ModelFolderError, match=f"{student}: the LoRA adapter \\(rank 8\\) does not fit"):
            load(student)


def test_an_adapter_on_a_rebuilt_or_other_base_is_rejected(student, tmp_path):
    other = tmp_path / "other"
    prepare_model(out_dir=other, name="other", spec=ModelSpec(source="tiny", seed=1))  # same shapes, other weights
    edit_adapter_config(student, base_model_name_or_path=str(other))
    with pytest.raises(ModelFolderError, match=f"{other} now holds .*: the wrong base"):
        resolve_checkpoint(student)
    # a base of other shapes fails to load the adapter even where no base hash was recorded
    wide = tmp_path / "wide"
    prepare_model(
        out_dir=wide, name="wide", spec=ModelSpec(source="tiny", hidden_size=128, num_heads=2, num_kv_heads=1)
    )
    edit_adapter_config(student, base_model_name_or_path=str(wide))
    provenance = student / "pipeline_model.json"
    provenance.write_text(
        json.dumps({k: v for k, v in json.loads(provenance.read_text()).items() if k != "base_weights_sha256"})
    )
    with pytest.raises(ModelFolderError, match=f"the LoRA adapter \\(rank 4\\) does not fit {wide}"):
        HFEngine(student)


def test_an_adapter_whose_base_is_gone_is_named(student, tmp_path):
    edit_adapter_config(student, base_model_name_or_path=str(tmp_path / "gone"))
    with pytest.raises(ModelFolderError, match=f"{student} is a LoRA adapter on '{tmp_path / 'gone'}'"):
        resolve_checkpoint(student)
