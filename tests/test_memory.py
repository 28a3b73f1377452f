"""Memory estimates: calibrated on the default run's measured peaks, and a config that cannot fit fails before loading."""

from __future__ import annotations

import pytest
import yaml

from pipeline.config import (
    DistillConfig,
    EngineConfig,
    EvaluateConfig,
    GrpoConfig,
    LoraSettings,
    OptimConfig,
    PremiseConfig,
    TeacherConfig,
    TracesConfig,
    from_params,
)
from pipeline.engines import engine_from_config
from pipeline.memory import (
    GIB,
    SKIP_ENV,
    MemoryEstimateError,
    ModelSize,
    check_memory,
    engine_estimate,
    training_estimate,
)
from tests.conftest import DEFAULT_CONFIG, SMOKE_CONFIG, snakemake

# The default solver's folder as ModelSize.of reads it (the dequantized GGUF stores the tied embedding twice).
QWEN = ModelSize(
    params=630_167_424,
    file_bytes=2_520_702_368,
    vocab_size=151_936,
    hidden_size=896,
    intermediate_size=4864,
    num_layers=24,
    kv_size=128,
)
# Peak RSS (MiB, Snakemake's benchmark max_rss) of every job of a finished default run on the 2-core, 24 GiB
# machine, and each job's longest prompt + completion and longest completion (its round-0 traces).
MEASURED_MIB = {
    "traces.engine": [6368, 6378],
    "evaluate.engine": [6778, 6566, 6383, 6654, 6644, 6764, 6569],
    "teacher.engine": [3908, 4715, 3898, 5013],
    "premise.engine": [6747],
    "distill_student": [8082, 8440, 8350, 8938, 8636],
    "train_grpo": [15343],
}
LENGTHS = {"distill_student": (373, 128), "train_grpo": (357, 128)}
MACHINE_GIB = 24


def default_estimates() -> dict[str, int]:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    engines = {
        "traces.engine": from_params(TracesConfig, config["traces"]).engine,
        "evaluate.engine": from_params(EvaluateConfig, config["evaluate"]).engine,
        "teacher.engine": from_params(TeacherConfig, config["teacher"]).engine,
        "premise.engine": from_params(PremiseConfig, config["premise"]).engine,
        "premise.score_engine": from_params(PremiseConfig, config["premise"]).score_engine,
    }
    estimates = {where: engine_estimate(cfg, QWEN, where=where).total for where, cfg in engines.items()}
    for stage, section, cls in (("distill_student", "distill", DistillConfig), ("train_grpo", "grpo", GrpoConfig)):
        cfg = from_params(cls, config[section])
        longest, completion = LENGTHS[stage]
        estimates[stage] = training_estimate(
            stage, cfg.optim, cfg.lora, QWEN, longest=longest, completion=completion
        ).total
    return estimates


def test_default_estimates_cover_the_measured_peaks_within_a_third_and_fit_the_machine():
    estimates = default_estimates()
    for name, peaks in MEASURED_MIB.items():
        ratio = estimates[name] / (max(peaks) * 2**20)
        assert 1.0 <= ratio <= 1.35, (name, ratio)
    assert max(estimates.values()) < (MACHINE_GIB - 6) * GIB  # room for the OS and Snakemake


def test_estimates_grow_with_the_key_they_name():
    vllm = EngineConfig(backend="vllm", kv_cache_gib=2)
    more = EngineConfig(backend="vllm", kv_cache_gib=40)
    assert engine_estimate(more, QWEN, where="e").total - engine_estimate(vllm, QWEN, where="e").total == 38 * GIB
    assert engine_estimate(more, QWEN, where="evaluate.engine").key == "evaluate.engine.kv_cache_gib"
    rows = EngineConfig(backend="transformers", max_batch_rows=64)
    assert (
        engine_estimate(rows, QWEN, where="teacher.engine").key == "teacher.engine.dtype"
    )  # weights > 1 GiB of logits
    small, large = (
        training_estimate(
            "train_grpo",
            OptimConfig(batch_size=8, micro_batch_size=m),
            LoraSettings(),
            QWEN,
            longest=400,
            completion=128,
        )
        for m in (1, 8)
    )
    assert large.total > small.total and large.key == "grpo.optim.micro_batch_size"


def test_model_size_and_lora_count_match_the_loaded_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    size = ModelSize.of(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert size.params == sum(p.numel() for p in model.parameters())  # one copy of the tied embedding
    lora = LoraSettings(r=8)
    peft = get_peft_model(model, LoraConfig(r=lora.r, target_modules=list(lora.target_modules)))
    assert size.lora_params(lora) == sum(p.numel() for p in peft.parameters() if p.requires_grad)


def test_check_names_the_estimate_and_the_key_or_passes(monkeypatch):
    estimate = engine_estimate(EngineConfig(backend="vllm", kv_cache_gib=40), QWEN, where="evaluate.engine")
    with pytest.raises(
        MemoryEstimateError,
        match=r"evaluate\.engine \(vllm\) needs an estimated 4\d\.\d GiB .*KV cache 40\.00.* more than the 8\.0 GiB of memory available: lower evaluate\.engine\.kv_cache_gib",
    ):
        check_memory(estimate, available=8 * GIB)
    check_memory(estimate, available=64 * GIB)
    monkeypatch.setenv(SKIP_ENV, "1")
    check_memory(estimate, available=8 * GIB)


def test_an_engine_that_cannot_fit_fails_before_loading(tiny_model_dir, monkeypatch):
    import pipeline.engines

    monkeypatch.setattr(pipeline.engines, "load_engine", lambda *a, **k: pytest.fail("the engine was loaded"))
    with pytest.raises(MemoryEstimateError, match=r"lower evaluate\.engine\.kv_cache_gib"):
        engine_from_config(
            EngineConfig(backend="vllm", kv_cache_gib=1 << 20), tiny_model_dir, seed=0, where="evaluate.engine"
        )


@pytest.mark.slow
def test_a_smoke_run_asking_for_far_too_much_fails_at_the_job_start_naming_the_estimate(tmp_path):
    config = yaml.safe_load(SMOKE_CONFIG.read_text())
    config["select_problems"]["solver"]["engine"] = {"backend": "vllm", "kv_cache_gib": 1 << 20}  # a PiB of KV cache
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(config))
    out = snakemake(tmp_path / "run", "--configfile", str(path), check=False)
    assert out.returncode != 0
    log = (tmp_path / "run/logs/select_problems_solver/select_problems_solver.log").read_text()
    assert "select_problems.solver.engine (vllm) needs an estimated 1048" in log
    assert "lower select_problems.solver.engine.kv_cache_gib" in log
    assert "vllm engine:" not in log  # failed before loading
    assert (tmp_path / "run/results/problems/train.parquet").is_file()  # what ran before is kept
