import polars as pl
import torch

from pipeline.config import GrpoConfig, LoraSettings, OptimConfig
from pipeline.engines.hf import HFEngine
from pipeline.grpo import grpo_rows, train_policy
from pipeline.training import load_student


def group_data(model_dir):
    """One problem, two sampled completions: the first rewarded, the second not; plus a no-signal group."""
    engine = HFEngine(model_dir, seed=0)
    prompts = [[5, 6, 7], [5, 6, 7], [9, 10], [9, 10]]
    completions = [[20, 21, 22], [30, 31, 32], [40, 41], [42, 43]]
    old = [s.token_logprobs.tolist() for s in engine.score(prompts, completions, top_k=1)]
    traces = pl.DataFrame(
        {
            "trace_id": ["a", "b", "c", "d"],
            "problem_id": ["p1", "p1", "p2", "p2"],
            "prompt_token_ids": prompts,
            "completion_token_ids": completions,
            "completion_logprobs": old,
        },
        schema_overrides={"completion_token_ids": pl.List(pl.Int32), "completion_logprobs": pl.List(pl.Float32)},
    )
    critiques = pl.DataFrame({"trace_id": ["a", "b", "c", "d"], "reward": [1.0, 0.0, 1.0, 1.0]})
    return traces, critiques


def test_rows_carry_group_normalised_advantages(tiny_model_dir):
    traces, critiques = group_data(tiny_model_dir)
    rows = grpo_rows(traces, critiques, GrpoConfig(advantage_eps=0.0))
    assert dict(zip(rows["trace_id"], rows["advantage"])) == {"a": 1.0, "b": -1.0, "c": 0.0, "d": 0.0}


def sequence_logprob(model, prompt, completion):
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
        return logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None]).sum().item()


def test_training_raises_the_rewarded_completion_and_lowers_the_other(tiny_model_dir):
    traces, critiques = group_data(tiny_model_dir)
    cfg = GrpoConfig(
        lora=LoraSettings(r=8, alpha=16),
        kl_coef=0.1,
        optim=OptimConfig(lr=5e-3, batch_size=4, micro_batch_size=2, epochs=6),
    )
    model, _, _ = load_student(tiny_model_dir, cfg.lora)
    before = [sequence_logprob(model, [5, 6, 7], c) for c in ([20, 21, 22], [30, 31, 32])]
    log = train_policy(model, grpo_rows(traces, critiques, cfg), cfg)
    after = [sequence_logprob(model, [5, 6, 7], c) for c in ([20, 21, 22], [30, 31, 32])]
    assert after[0] > before[0] and after[1] < before[1]
    assert log["mean_reward"][0] == 0.75 and log["kl"][0] == 0.0 and log["kl"][-1] > 0  # the k3 KL grows from 0


def one_row(schema: pl.Schema, **values) -> pl.DataFrame:
    """A one-row frame of ``schema``: ``values`` where given, null elsewhere."""
    return pl.DataFrame([{name: values.get(name) for name in schema}], schema=schema)


def test_empty_completions_and_a_round_with_no_usable_trace(tiny_model_dir, tmp_path):
    """An empty completion carries no loss; a round of only those saves the student unchanged with a 0-step log."""
    from pipeline.artifacts import (
        CRITIQUES_SCHEMA,
        TRACES_SCHEMA,
        TRAIN_LOG_SCHEMA,
        read_artifact,
        read_provenance,
        weights_hash,
        write_artifact,
    )
    from pipeline.grpo import train_grpo

    traces, critiques = group_data(tiny_model_dir)
    traces = traces.with_columns(
        completion_token_ids=pl.Series([[20, 21], [], [], []], dtype=pl.List(pl.Int32)),
        completion_logprobs=pl.Series([[-1.0, -1.0], [], [], []], dtype=pl.List(pl.Float32)),
    )
    assert grpo_rows(traces, critiques, GrpoConfig())["trace_id"].to_list() == ["a"]
    empty = one_row(TRACES_SCHEMA, trace_id="b", problem_id="p1", completion_token_ids=[])
    reward = one_row(CRITIQUES_SCHEMA, trace_id="b", reward=1.0)
    for name, (trace_frame, critique_frame) in {
        "none": (TRACES_SCHEMA.to_frame(), CRITIQUES_SCHEMA.to_frame()),
        "empty": (empty, reward),
    }.items():
        paths = {
            "traces": write_artifact(
                trace_frame, tmp_path / f"{name}-t.parquet", schema=TRACES_SCHEMA, artifact="t", stage="t"
            ),
            "critiques": write_artifact(
                critique_frame, tmp_path / f"{name}-c.parquet", schema=CRITIQUES_SCHEMA, artifact="c", stage="t"
            ),
        }
        out_model, out_log = tmp_path / name / "round_1", tmp_path / name / "log.parquet"
        stats = train_grpo(
            **paths, student=tiny_model_dir, initial=tiny_model_dir, out_model=out_model, out_log=out_log,
            cfg=GrpoConfig(lora=None),
        )  # fmt: skip
        assert stats["steps"] == 0 and stats["traces"] == 0 and stats["mean_reward"] == 0.0
        assert read_artifact(out_log, schema=TRAIN_LOG_SCHEMA, artifact="train_log").height == 0
        assert read_provenance(out_model)["weights_sha256"] == weights_hash(tiny_model_dir)
