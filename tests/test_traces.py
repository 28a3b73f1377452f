import polars as pl
import pytest
from transformers import AutoTokenizer

from pipeline.artifacts import PROBLEMS_SCHEMA, TRACES_SCHEMA, read_artifact, read_metadata, write_artifact
from pipeline.config import EngineConfig, ProblemsConfig, PromptConfig, TracesConfig
from pipeline.engines import Completion
from pipeline.problems import arith_frames
from pipeline.tasks import solver_format
from pipeline.traces import build_prompts, generate_traces, schedule, traces_frame

PROMPT = PromptConfig(
    version="v",
    instruction=solver_format.INSTRUCTION,
    example_question=solver_format.EXAMPLE_QUESTION,
    example_solution=solver_format.EXAMPLE_SOLUTION,
)


def test_schedule_walks_epochs_deterministically():
    ids = [f"p{i}" for i in range(5)]
    rounds = [schedule(ids, round_index=r, per_round=2, seed=1) for r in range(5)]
    assert rounds == [schedule(ids, round_index=r, per_round=2, seed=1) for r in range(5)]
    flat = [p for r in rounds for p in r]
    assert sorted(flat[:5]) == ids and sorted(flat[5:10]) == ids  # each epoch covers every problem once
    assert flat[:5] != flat[5:10]  # and is reshuffled
    assert (
        schedule(ids, round_index=0, per_round=2, seed=2) != rounds[0]
        or schedule(ids, round_index=1, per_round=2, seed=2) != rounds[1]
    )
    with pytest.raises(ValueError, match="empty"):
        schedule([], round_index=0, per_round=1, seed=0)


def test_traces_frame_parses_and_verifies():
    prompts = pl.DataFrame(
        {
            "problem_id": ["p1"],
            "answer": ["8"],
            "verifier": ["exact"],
            "user_message": ["u"],
            "prompt": ["q"],
            "prompt_token_ids": [[1, 2]],
        },
        schema_overrides={"prompt_token_ids": pl.List(pl.Int32)},
    )
    good = Completion("<step_1> 3 + 5 = 8 </step_1>\n<answer> 8 </answer>", [10, 11, 12], [-0.1, -0.2, -0.3], "stop")
    bad = Completion("<step_1> 3 + 5 = 9", [13, 14], [-1.0, -2.0], "length")
    frame = traces_frame(prompts, [[good, bad]], condition="grpo", round_index=2)
    assert frame.schema == TRACES_SCHEMA
    assert frame["trace_id"].to_list() == ["grpo:2:p1:0", "grpo:2:p1:1"]
    assert frame["is_correct"].to_list() == [True, False]
    assert frame["format_ok"].to_list() == [True, False]
    assert frame["step_spans"][0].to_list() == [{"number": 1, "start": 0, "end": 28}]
    assert (frame["completion_logprobs"].list.len() == frame["completion_token_ids"].list.len()).all()


def test_prompts_use_the_chat_template(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    train = arith_frames(ProblemsConfig(n_train=2, n_eval=1))["train"]
    prompts = build_prompts(train, tokenizer, PROMPT)
    text = prompts["prompt"][0]
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    assert train["question"][0] in text
    assert tokenizer.decode(prompts["prompt_token_ids"][0].to_list()) == text


def test_generate_traces_stage_with_transformers(tiny_model_dir, tmp_path):
    train = arith_frames(ProblemsConfig(n_train=6, n_eval=1))["train"]
    problems = write_artifact(train, tmp_path / "train.parquet", schema=PROBLEMS_SCHEMA, artifact="problems", stage="t")
    cfg = TracesConfig(
        prompt=PROMPT,
        engine=EngineConfig(backend="transformers"),
        problems_per_round=4,
        grpo_group_size=3,
        max_tokens=8,
    )
    out = tmp_path / "traces.parquet"
    stats = generate_traces(problems=problems, model=tiny_model_dir, out=out, condition="grpo", round_index=1, cfg=cfg)
    traces = read_artifact(out, schema=TRACES_SCHEMA, artifact="traces")
    assert traces.height == 12 == stats["traces"]
    assert traces.group_by("problem_id").len()["len"].to_list() == [3] * 4
    assert set(traces["round"]) == {1}
    meta = read_metadata(out)
    assert meta["stage"] == "generate_traces" and meta["model"].startswith(tiny_model_dir.name)
    assert meta["params"]["stats"] == stats  # the file records what the stage returned
    assert stats["problems"] == 4 and stats["truncated"] == int((traces["finish_reason"] == "length").sum())
    assert stats["accuracy"] == round(float(traces["is_correct"].mean()), 4)
    assert stats["format_rate"] == round(float(traces["format_ok"].mean()), 4)
    # the engine was really loaded and sampled, and the rate is the traces' tokens over the sampling time
    assert stats["startup_s"] > 0 and stats["generate_s"] > 0
    tokens = int(traces["completion_token_ids"].list.len().sum())
    low, high = tokens / (stats["generate_s"] + 0.005), tokens / max(stats["generate_s"] - 0.005, 1e-9)
    assert low - 0.05 <= stats["tokens_per_s"] <= high + 0.05  # generate_s is rounded to 0.01 s
