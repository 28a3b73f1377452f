import numpy as np
import polars as pl
import pytest

from pipeline.config import EngineConfig, TeacherConfig
from pipeline.engines.hf import HFEngine
from pipeline.teacher import fit_to_window, score_rows, teacher_logprobs_schema
from tests.conftest import completion_logprobs


def test_fit_to_window_policies():
    assert fit_to_window([1, 2, 3], [4, 5], max_len=10, policy="skip") == ([1, 2, 3], 0)
    assert fit_to_window([1, 2, 3, 4], [5, 6], max_len=5, policy="truncate_left") == ([2, 3, 4], 1)
    assert fit_to_window([1, 2, 3, 4], [5, 6], max_len=5, policy="skip") == (None, 0)
    assert fit_to_window([1, 2], [3, 4, 5, 6], max_len=4, policy="truncate_left") == (None, 0)  # completion fills it


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return HFEngine(tiny_model_dir, seed=0)


def rows(prompts, completions, teacher_prompts, student=None):
    """Joined context/trace rows; ``student``: the student side (score_traces'), default a placeholder per token."""
    n = len(prompts)
    student = student if student is not None else [[-1.0] * len(c) for c in completions]
    return pl.DataFrame(
        {
            "trace_id": [f"t{i}" for i in range(n)],
            "problem_id": ["p"] * n,
            "condition": ["critique"] * n,
            "round": [0] * n,
            "context_kind": ["critique"] * n,
            "teacher_prompt_token_ids": teacher_prompts,
            "prompt_token_ids": prompts,
            "completion_token_ids": completions,
            "is_correct": [i % 2 == 0 for i in range(n)],
            "token_categories": [["pre_error"] * len(c) for c in completions],
            "student_token_logprobs": student,
        },
        schema_overrides={
            "round": pl.Int32,
            "completion_token_ids": pl.List(pl.Int32),
            "token_categories": pl.List(pl.String),
            "student_token_logprobs": pl.List(pl.Float32),
        },
    )


def test_scores_are_token_aligned_and_exact(engine, tiny_causal_lm):
    student = [[-0.5, -1.5, -2.5, -3.5], [], [-0.25, -0.75]]
    frame = rows(
        [[5, 6, 7], [8, 9], [3]], [[10, 11, 12, 13], [], [14, 15]], [[1, 2, 5, 6, 7], [1, 8, 9], [2, 3]], student
    )
    cfg = TeacherConfig(top_k=8, engine=EngineConfig(backend="transformers", max_model_len=64))
    out, counts = score_rows(engine, frame, cfg)
    assert out.schema == teacher_logprobs_schema(8)
    assert counts["empty_completion"] == 1 and out["trace_id"].to_list() == ["t0", "t2"]
    n = out["completion_token_ids"].list.len()
    columns = ("topk_ids", "topk_logprobs", "teacher_token_logprobs", "tail_logmass", "student_token_logprobs")
    for column in (*columns, "token_categories"):
        assert (out[column].list.len() == n).all(), column
    assert out["is_correct"].to_list() == [True, True]
    # the teacher side is the model's own distribution after the teacher prompt, at each completion
    # position (one unpadded forward of the tiny model with transformers, not the engine under test);
    # the student side is passed through
    for row, (prompt, completion) in enumerate([([1, 2, 5, 6, 7], [10, 11, 12, 13]), ([2, 3], [14, 15])]):
        reference = completion_logprobs(tiny_causal_lm, prompt, completion)
        top = np.sort(reference, axis=-1)[:, ::-1][:, :8]
        np.testing.assert_allclose(np.array(out["topk_logprobs"][row].to_list()), top, atol=1e-4)
        ids = np.array(out["topk_ids"][row].to_list())
        np.testing.assert_allclose(np.take_along_axis(reference, ids, -1), top, atol=1e-4)  # ids match values
        taken = reference[np.arange(len(completion)), completion]
        np.testing.assert_allclose(out["teacher_token_logprobs"][row].to_numpy(), taken, atol=1e-4)
        tail = np.log1p(-np.exp(top).sum(-1))
        np.testing.assert_allclose(out["tail_logmass"][row].to_numpy(), tail, atol=1e-3)
    assert out["student_token_logprobs"].to_list() == [student[0], student[2]]


@pytest.mark.parametrize("student", [None, [-1.0]], ids=["missing", "short"])
def test_student_scores_that_do_not_match_the_traces_are_named(engine, student):
    frame = rows([[5, 6]], [[10, 11]], [[1, 5, 6]]).with_columns(
        student_token_logprobs=pl.Series([student], dtype=pl.List(pl.Float32))
    )
    with pytest.raises(ValueError, match="trace t0: the student-side scores"):
        score_rows(engine, frame, TeacherConfig(top_k=4, engine=EngineConfig(backend="transformers")))


def test_overflow_policy_is_applied_and_counted(engine):
    frame = rows([[5, 6], [5, 6]], [[10, 11, 12], [10, 11, 12]], [list(range(1, 9)), [1, 2]])
    cfg = TeacherConfig(top_k=4, overflow="truncate_left", engine=EngineConfig(backend="transformers", max_model_len=8))
    out, counts = score_rows(engine, frame, cfg)
    assert counts["truncated"] == 1 and out["prompt_tokens_dropped"].to_list() == [3, 0]
    skip = TeacherConfig(top_k=4, overflow="skip", engine=EngineConfig(backend="transformers", max_model_len=8))
    out, counts = score_rows(engine, frame, skip)
    assert counts["overflow_skipped"] == 1 and out["trace_id"].to_list() == ["t1"]


def test_float16_storage_and_full_vocab(engine):
    frame = rows([[5, 6]], [[10, 11]], [[1, 5, 6]])
    half, _ = score_rows(
        engine, frame, TeacherConfig(top_k=4, logprob_dtype="float16", engine=EngineConfig(backend="transformers"))
    )
    assert half.schema["topk_logprobs"] == pl.List(pl.Array(pl.Float16, 4))
    full, _ = score_rows(engine, frame, TeacherConfig(top_k=10**6, engine=EngineConfig(backend="transformers")))
    probs = np.exp(np.array(full["topk_logprobs"][0].to_list(), dtype=np.float64)).sum(-1)
    np.testing.assert_allclose(probs, 1.0, atol=1e-5)  # k = vocab reproduces the full softmax


def test_a_round_of_only_empty_or_overlong_traces_stores_an_empty_frame_of_the_right_k(engine):
    frame = rows([[5, 6], [7]], [[], [10] * 9], [[1, 5, 6], [2, 7]])
    cfg = TeacherConfig(top_k=8, engine=EngineConfig(backend="transformers", max_model_len=8))
    out, counts = score_rows(engine, frame, cfg)
    assert out.height == 0 and out.schema == teacher_logprobs_schema(8)
    assert counts == {"empty_completion": 1, "overflow_skipped": 1, "truncated": 0}
