import numpy as np
import polars as pl

from pipeline.artifacts import TRACE_SCORES_SCHEMA, TRACES_SCHEMA, read_artifact, read_metadata, write_artifact
from pipeline.config import EngineConfig
from pipeline.engines.hf import HFEngine
from pipeline.score_traces import score_traces, scoreable


def traces(prompts, completions):
    """A traces artifact frame with the given token ids; every other column is a placeholder."""
    n = len(prompts)
    nulls = pl.DataFrame({name: pl.Series([None] * n, dtype=dtype) for name, dtype in TRACES_SCHEMA.items()})
    return nulls.with_columns(
        trace_id=pl.Series([f"shared:0:p{i}:0" for i in range(n)]),
        prompt_token_ids=pl.Series(prompts, dtype=pl.List(pl.Int32)),
        completion_token_ids=pl.Series(completions, dtype=pl.List(pl.Int32)),
    )


def test_scoreable_drops_empty_and_overlong_completions():
    frame = traces([[1, 2], [1, 2], [1, 2, 3]], [[4, 5], [], [4, 5, 6]])
    assert scoreable(frame, max_len=5)["trace_id"].to_list() == ["shared:0:p0:0"]
    assert scoreable(frame, max_len=6)["trace_id"].to_list() == ["shared:0:p0:0", "shared:0:p2:0"]


def test_the_stage_stores_each_traces_own_prompt_scores(tmp_path, tiny_model_dir):
    prompts, completions = [[5, 6, 7], [8, 9], [3]], [[10, 11, 12, 13], [], [14, 15]]
    path = write_artifact(
        traces(prompts, completions), tmp_path / "t.parquet", schema=TRACES_SCHEMA, artifact="traces", stage="t"
    )
    out = tmp_path / "scores.parquet"
    cfg = EngineConfig(backend="transformers", max_model_len=64)
    stats = score_traces(traces=path, model=tiny_model_dir, out=out, cfg=cfg)
    scores = read_artifact(out, schema=TRACE_SCORES_SCHEMA, artifact="trace_scores")
    assert scores["trace_id"].to_list() == ["shared:0:p0:0", "shared:0:p2:0"]
    assert stats["traces"] == 2 and stats["not_scored"] == 1 and stats["completion_tokens"] == 6
    assert read_metadata(out)["stage"] == "score_traces"
    engine = HFEngine(tiny_model_dir, seed=0)
    for stored, prompt, completion in zip(
        scores["student_token_logprobs"], [prompts[0], prompts[2]], [[10, 11, 12, 13], [14, 15]]
    ):
        (expected,) = engine.score([prompt], [completion], top_k=1)  # the same rows scored one at a time
        np.testing.assert_allclose(stored.to_numpy(), expected.token_logprobs, atol=1e-5)
