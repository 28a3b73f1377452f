import dataclasses

import polars as pl
import pytest

from pipeline.artifacts import CRITIQUES_SCHEMA
from pipeline.config import CriticConfig, LLMCriticConfig
from pipeline.critic import (
    critique_stats,
    llm_review,
    oracle_agreement,
    oracle_review,
    parse_critic_output,
    review_traces,
)
from pipeline.tasks.solver_format import parse_response

# 33 - 19 = 14, 14 / 2 = 7, 7 + 49 = 56, 56 / 7 = 8
CHAIN = [
    {"a": 33, "op": "-", "b": 19, "result": 14},
    {"a": 14, "op": "/", "b": 2, "result": 7},
    {"a": 7, "op": "+", "b": 49, "result": 56},
    {"a": 56, "op": "/", "b": 7, "result": 8},
]
GOOD = (
    "<step_1> 33 - 19 = 14 books </step_1>\n<step_2> 14 / 2 = 7 </step_2>\n"
    "<step_3> 49 + 7 = 56 </step_3>\n<step_4> 56 / 7 = 8 </step_4>\n<answer> 8 </answer>"
)


def review(text, *, finish_reason="stop", is_correct):
    return oracle_review(text, finish_reason=finish_reason, is_correct=is_correct, truth_steps=CHAIN, answer="8")


def test_case_a_correct_trace_is_reproduced_exactly():
    r = review(GOOD, is_correct=True)
    assert r.verdict == "correct" and r.first_wrong_step is None
    assert r.critique_text == GOOD  # verbatim, including the solver's own wording and commuted step
    assert r.step_verdicts == [True] * 4


def test_case_b_missing_step_is_inserted():
    text = "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 7 + 49 = 56 </step_2>\n<step_3> 56 / 7 = 8 </step_3>\n<answer> 8 </answer>"
    r = review(text, is_correct=True)
    assert r.verdict == "missing_justification"
    assert r.critique_steps == ["33 - 19 = 14", "14 / 2 = 7", "7 + 49 = 56", "56 / 7 = 8"]
    assert "<step_3> 7 + 49 = 56 </step_3>" in r.critique_text  # the solver's step, renumbered
    assert r.step_verdicts == [True, True, True] and r.first_wrong_step is None  # no step is wrong, one is missing


def test_case_c_truncated_trace_is_finished():
    text = "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 / 2 = 7 </step_2>\n<step_3> 7 + 4"
    r = review(text, finish_reason="length", is_correct=False)
    assert r.verdict == "truncated" and r.first_wrong_step is None
    assert r.critique_text == (
        "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 / 2 = 7 </step_2>\n"
        "<step_3> 7 + 49 = 56 </step_3>\n<step_4> 56 / 7 = 8 </step_4>\n<answer> 8 </answer>"
    )


def test_case_d_wrong_step_is_corrected_fresh_after_a_verbatim_prefix():
    text = "<step_1>33 - 19 = 14</step_1>\n<step_2> 14 * 2 = 28 </step_2>\n<step_3> 28 + 49 = 77 </step_3>\n<answer> 77 </answer>"
    r = review(text, is_correct=False)
    assert r.verdict == "wrong" and r.first_wrong_step == 2
    assert r.critique_text.startswith("<step_1>33 - 19 = 14</step_1>\n<step_2> 14 / 2 = 7 </step_2>")
    assert "28" not in r.critique_text and r.critique_text.endswith("<answer> 8 </answer>")
    assert r.step_verdicts == [True, False, False]


def test_oracle_needs_a_chain():
    with pytest.raises(ValueError, match="ground-truth steps"):
        oracle_review(GOOD, finish_reason="stop", is_correct=True, truth_steps=[], answer="8")


RECORDED = {
    "valid": "<think>Step 2 divides, not multiplies.</think>\n<step_1> 33 - 19 = 14 </step_1>\n"
    "<step_2> 14 / 2 = 7 </step_2>\n<step_3> 7 + 49 = 56 </step_3>\n<step_4> 56 / 7 = 8 </step_4>\n<answer> 8 </answer>",
    "malformed": "The student multiplied instead of dividing. The answer should be 8.",
    "truncated": "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 / 2 = 7 </step_2>\n<step_3> 7 +",
    "think_only": "<think>Let me check each step. Step 1: 33 - 19 = 14, fine. Step 2:",
    "empty": "   ",
}
WRONG = "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 * 2 = 28 </step_2>\n<answer> 28 </answer>"


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("valid", None),
        ("malformed", "no_steps"),
        ("truncated", "no_answer"),
        ("think_only", "think_only"),
        ("empty", "empty"),
    ],
)
def test_llm_parser_on_recorded_outputs(name, error):
    steps, text, got = parse_critic_output(RECORDED[name])
    assert got == error
    if error is None:
        assert steps[1] == "14 / 2 = 7" and text.startswith("<step_1>") and "<think>" not in text


def test_llm_review_valid_and_fallbacks():
    ok = llm_review(
        RECORDED["valid"], completion=WRONG, finish_reason="stop", is_correct=False, fallback="skip", reference="ref"
    )
    assert ok.verdict == "wrong" and ok.first_wrong_step == 2 and ok.parse_error is None
    ref = llm_review(
        RECORDED["malformed"],
        completion=WRONG,
        finish_reason="stop",
        is_correct=False,
        fallback="reference",
        reference="prose",
    )
    assert ref.parse_error == "no_steps" and ref.fallback == "reference" and ref.critique_text == "prose"
    skip = llm_review(
        RECORDED["think_only"], completion=WRONG, finish_reason="stop", is_correct=False, fallback="skip", reference="x"
    )
    assert skip.critique_text is None and skip.fallback == "skip"


def joined_rows(texts, correct):
    return pl.DataFrame(
        {
            "trace_id": [f"t{i}" for i in range(len(texts))],
            "problem_id": ["p"] * len(texts),
            "condition": ["shared"] * len(texts),
            "round": [0] * len(texts),
            "completion_text": texts,
            "finish_reason": ["stop"] * len(texts),
            "is_correct": correct,
            "answer": ["8"] * len(texts),
            "reference": ["We start with 33."] * len(texts),
            "steps": [CHAIN] * len(texts),
        }
    )


def test_review_traces_oracle_frame_and_qa():
    frame = review_traces(joined_rows([GOOD, WRONG], [True, False]), cfg=CriticConfig(backend="oracle"))
    assert frame.schema == CRITIQUES_SCHEMA
    assert frame["verdict"].to_list() == ["correct", "wrong"]
    assert frame["reward"].to_list() == [1.0, 0.0]
    assert frame["alignment_score"].to_list() == [1.0, 1.0]
    assert frame["first_changed_step"].to_list() == [None, 2]
    assert frame["answer_leak"].to_list() == [False, False]


def test_review_traces_llm_never_crashes_on_bad_output():
    cfg = CriticConfig(
        backend="llm",
        model="critic",
        fallback="reference",
        llm=LLMCriticConfig(prompt_version="v1", prompt_template="{question}"),
    )
    outputs = [RECORDED["valid"], RECORDED["empty"]]
    frame = review_traces(
        joined_rows([WRONG, WRONG], [False, False]), cfg=cfg, critic_outputs=outputs, critic_model="m"
    )
    assert frame["parse_error"].to_list() == [None, "empty"]
    assert frame["fallback"].to_list() == [None, "reference"]
    assert frame["prompt_version"].to_list() == ["v1", "v1"]
    assert parse_response(frame["critique_text"][0]).format_ok


def test_query_critic_stage_with_a_real_llm_critic(tiny_model_dir, tmp_path):
    """The llm backend end to end on the tiny model: its noise is recorded, never a crash."""
    import yaml

    from pipeline.artifacts import PROBLEMS_SCHEMA, TRACES_SCHEMA, read_artifact, write_artifact
    from pipeline.config import EngineConfig, ProblemsConfig, from_params
    from pipeline.critic import query_critic
    from pipeline.engines import Completion
    from pipeline.problems import arith_frames
    from pipeline.traces import traces_frame
    from tests.conftest import SMOKE_CONFIG

    train = arith_frames(ProblemsConfig(n_train=3, n_eval=1))["train"]
    problems = write_artifact(train, tmp_path / "train.parquet", schema=PROBLEMS_SCHEMA, artifact="problems", stage="t")
    prompts = train.select("problem_id", "answer", "verifier").with_columns(
        user_message=pl.lit("u"), prompt=pl.lit("q"), prompt_token_ids=pl.lit([1], dtype=pl.List(pl.Int32))
    )
    completion = Completion("<step_1> 1 + 1 = 2 </step_1>\n<answer> 2 </answer>", [1, 2], [-0.5, -0.5], "stop")
    traces = write_artifact(
        traces_frame(prompts, [[completion]] * 3, condition="shared", round_index=0),
        tmp_path / "traces.parquet",
        schema=TRACES_SCHEMA,
        artifact="traces",
        stage="t",
    )
    section = yaml.safe_load(SMOKE_CONFIG.read_text())["critic"] | {"backend": "llm"}
    cfg = from_params(CriticConfig, section)
    assert cfg.llm.engine == EngineConfig(backend="transformers")
    stats = query_critic(
        traces=traces, problems=problems, out=tmp_path / "c.parquet", cfg=cfg, critic_model=tiny_model_dir
    )
    critiques = read_artifact(tmp_path / "c.parquet", schema=CRITIQUES_SCHEMA, artifact="critiques")
    assert critiques.height == 3 == stats["traces"]
    assert critiques["critic"].unique().to_list() == ["llm"]
    assert critiques["critic_model"].unique().to_list() == [tiny_model_dir.name]
    # random weights write no steps: every row records why and falls back to the reference
    assert critiques["parse_error"].is_not_null().all()
    assert critiques["critique_text"].to_list() == train["reference"].to_list()


def test_llm_review_of_thinking_critics():
    from tests.tasks.test_solver_format import QWEN3_THINKING, QWQ_THINKING

    qwen3 = llm_review(
        QWEN3_THINKING, completion=WRONG, finish_reason="stop", is_correct=False, fallback="skip", reference="r",
        answer="8",
    )  # fmt: skip
    assert qwen3.parse_error is None and qwen3.first_wrong_step == 2 and "redo" not in qwen3.critique_text
    # QwQ's output starts inside the thinking its template opened: without that flag the rewrite keeps the prose
    qwq = llm_review(
        QWQ_THINKING, completion=WRONG, finish_reason="stop", is_correct=False, fallback="skip", reference="r",
        think_opened=True,
    )  # fmt: skip
    assert qwq.parse_error is None and qwq.critique_text.startswith("<step_1>")
    cut = llm_review(
        "Okay, step 1 is right. Step 2", completion=WRONG, finish_reason="stop", is_correct=False, fallback="reference",
        reference="prose", think_opened=True,
    )  # fmt: skip
    assert cut.parse_error == "think_only" and cut.critique_text == "prose"


def test_rewrite_with_a_wrong_final_answer_is_unusable():
    wrong_rewrite = "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 / 2 = 7 </step_2>\n<answer> 7 </answer>"
    kwargs = {"completion": WRONG, "finish_reason": "stop", "is_correct": False, "fallback": "reference"}
    review = llm_review(wrong_rewrite, reference="prose", answer="8", **kwargs)
    assert review.parse_error == "wrong_answer" and review.critique_text == "prose"
    assert llm_review(wrong_rewrite, reference="prose", answer=None, **kwargs).parse_error is None


PROSE_QUESTION_ANSWER = "\\frac{3}{2}"
PROSE_TRACE = (
    "<step_1> The roots of $x^2 - 5x + 6$ are 2 and 3. </step_1>\n"
    "<step_2> The larger over the smaller is $\\frac{2}{3}$. </step_2>\n\\boxed{\\frac{2}{3}}"
)
PROSE_REWRITE = (
    "<think>\nStep 2 divides the wrong way round.\n</think>\n"
    "<step_1> The roots of $x^2 - 5x + 6$ are 2 and 3. </step_1>\n"
    "<step_2> The larger over the smaller is $\\frac{3}{2}$. </step_2>\n\\boxed{\\frac{3}{2}}"
)


def test_llm_review_of_a_prose_trace_with_math_verify():
    review = llm_review(
        PROSE_REWRITE, completion=PROSE_TRACE, finish_reason="stop", is_correct=False, fallback="skip", reference="r",
        answer="3/2", verifier="math",
    )  # fmt: skip
    assert review.parse_error is None and review.verdict == "wrong" and review.first_wrong_step == 2
    assert review.critique_steps[0] == "The roots of $x^2 - 5x + 6$ are 2 and 3."
    assert review.critique_text.endswith("\\boxed{\\frac{3}{2}}")


def llm_cfg(**overrides):
    return CriticConfig(
        backend="llm",
        model="critic",
        fallback="reference",
        llm=LLMCriticConfig(prompt_version="v1", prompt_template="{question}"),
        **overrides,
    )


def test_review_traces_prose_qa_columns():
    joined = joined_rows([PROSE_TRACE, PROSE_TRACE], [False, False]).with_columns(
        answer=pl.lit("3/2"), verifier=pl.lit("math")
    )
    outputs = [PROSE_REWRITE, PROSE_REWRITE.replace("\\frac{3}{2}}", "\\frac{2}{3}}")]
    frame = review_traces(joined, cfg=llm_cfg(), critic_outputs=outputs, critic_model="m")
    assert frame["parse_error"].to_list() == [None, "wrong_answer"]
    assert frame["alignment_score"].to_list() == [1.0, None]
    assert frame["rewrite_correct"].to_list() == [True, None]
    assert frame["answer_leak"].to_list() == [False, False]
    assert frame["first_changed_step"].to_list() == [2, None]


def test_reward_only_rows_call_no_critic():
    frame = review_traces(joined_rows([GOOD, WRONG], [True, False]), cfg=llm_cfg(), critic_outputs=None, rewrite=False)
    assert frame["critic"].to_list() == ["reward_only"] * 2
    assert frame["reward"].to_list() == [1.0, 0.0] and frame["verdict"].to_list() == ["correct", "wrong"]
    assert frame["critique_text"].to_list() == [None, None] and frame["parse_error"].null_count() == 2
    stats = critique_stats(frame)
    assert stats["reviewed"] == 0 and stats["parse_rate"] is None
    # the oracle is exact and free: it always rewrites
    oracle = review_traces(joined_rows([WRONG], [False]), cfg=CriticConfig(backend="oracle"), rewrite=False)
    assert oracle["critic"].to_list() == ["oracle"] and oracle["critique_text"][0] is not None


def test_critique_stats_rates():
    outputs = [RECORDED["valid"], RECORDED["empty"], RECORDED["malformed"], RECORDED["valid"]]
    frame = review_traces(joined_rows([WRONG] * 4, [False] * 4), cfg=llm_cfg(), critic_outputs=outputs)
    stats = critique_stats(frame)
    assert stats["parse_rate"] == 0.5 and stats["fallback_rate"] == 0.5
    assert stats["parse_error_kinds"] == {"empty": 1, "no_steps": 1}
    assert stats["rewrite_correct_rate"] == 1.0 and stats["mean_alignment"] == 1.0


def test_oracle_agreement_of_an_llm_critic():
    joined = joined_rows([WRONG, WRONG, GOOD], [False, False, True])
    oracle = review_traces(joined, cfg=CriticConfig(backend="oracle"))
    llm = review_traces(joined, cfg=llm_cfg(), critic_outputs=[RECORDED["valid"], RECORDED["empty"], GOOD])
    agreement = oracle_agreement(llm, oracle)
    assert agreement == {"compared": 2, "verdict": 1.0, "first_wrong_step": 1.0, "over_traces_with_error": 1.0}
    # rewriting the correct trace (dropping its unit word) reads as a changed step 1: both measures disagree there
    llm2 = review_traces(
        joined, cfg=llm_cfg(), critic_outputs=[RECORDED["valid"], RECORDED["valid"], RECORDED["valid"]]
    )
    assert oracle_agreement(llm2, oracle) == {
        "compared": 3,
        "verdict": round(2 / 3, 4),
        "first_wrong_step": round(2 / 3, 4),
        "over_traces_with_error": 1.0,
    }
    assert oracle_agreement(llm.clear(), oracle)["compared"] == 0


@pytest.mark.slow
def test_llm_critic_on_the_real_qwen_solver(qwen_model_dir, tmp_path):
    """The real 0.5B model as the LLM critic on arith traces: real output, recorded whatever its quality."""
    import yaml

    from pipeline.artifacts import PROBLEMS_SCHEMA, TRACES_SCHEMA, read_artifact, write_artifact
    from pipeline.config import ProblemsConfig, from_params
    from pipeline.critic import query_critic
    from pipeline.engines import Completion
    from pipeline.problems import arith_frames
    from pipeline.traces import traces_frame
    from tests.conftest import ROOT

    train = arith_frames(ProblemsConfig(n_train=4, n_eval=1))["train"]
    problems = write_artifact(train, tmp_path / "train.parquet", schema=PROBLEMS_SCHEMA, artifact="problems", stage="t")
    completions = []
    for i, chain in enumerate(train["steps"].to_list()):
        lines = [f"<step_{k}> {s['a']} {s['op']} {s['b']} = {s['result']} </step_{k}>" for k, s in enumerate(chain, 1)]
        if i % 2:  # every other trace miscalculates its first step and carries the error on
            lines[0] = lines[0].replace(f"= {chain[0]['result']} ", f"= {chain[0]['result'] + 1} ")
        answer = chain[-1]["result"] + (i % 2)
        completions.append([Completion("\n".join([*lines, f"<answer> {answer} </answer>"]), [1], [-0.1], "stop")])
    prompts = train.select("problem_id", "answer", "verifier").with_columns(
        user_message=pl.lit("u"), prompt=pl.lit("q"), prompt_token_ids=pl.lit([1], dtype=pl.List(pl.Int32))
    )
    traces = write_artifact(
        traces_frame(prompts, completions, condition="shared", round_index=0),
        tmp_path / "traces.parquet",
        schema=TRACES_SCHEMA,
        artifact="traces",
        stage="t",
    )
    section = yaml.safe_load((ROOT / "config/overlays/critic_llm.yaml").read_text())["critic"]
    section["llm"] |= {"engine": {"backend": "transformers"}, "max_tokens": 96}
    stats = query_critic(
        traces=traces,
        problems=problems,
        out=tmp_path / "c.parquet",
        cfg=from_params(CriticConfig, section),
        critic_model=qwen_model_dir,
    )
    critiques = read_artifact(tmp_path / "c.parquet", schema=CRITIQUES_SCHEMA, artifact="critiques")
    assert critiques.height == 4 == stats["traces"] == stats["reviewed"]
    usable = critiques.filter(pl.col("parse_error").is_null())
    assert stats["parse_rate"] == usable.height / 4
    assert usable["rewrite_correct"].all()  # require_correct_rewrite: a wrong-answer rewrite is a parse error
    assert (critiques.filter(pl.col("parse_error").is_not_null())["fallback"] == "reference").all()
    assert stats["generated_tokens"] > 0


def test_raw_critic_output_is_kept_for_every_reviewed_trace():
    outputs = [RECORDED["malformed"], RECORDED["valid"]]
    frame = review_traces(joined_rows([WRONG, WRONG], [False, False]), cfg=llm_cfg(), critic_outputs=outputs)
    assert frame["critic_output"].to_list() == outputs  # malformed output is recorded, not only its parse error
    oracle = review_traces(joined_rows([WRONG], [False]), cfg=CriticConfig(backend="oracle"))
    assert oracle["critic_output"].to_list() == [None]


def test_a_rewrite_that_keeps_every_step_of_a_wrong_trace_is_not_a_correct_verdict():
    # recorded from the 0.5B critic: the steps copied, only the answer replaced by the ground truth
    trace = "<step_1> 16 - 8 = 8 </step_1>\n<step_2> 8 * 4 = 32 </step_2>\n<answer> 32 </answer>"
    rewrite = "<step_1> 16 - 8 = 8 </step_1>\n<step_2> 8 * 4 = 32 </step_2>\n<answer> 2 </answer>"
    review = llm_review(
        rewrite, completion=trace, finish_reason="stop", is_correct=False, fallback="skip", reference="r", answer="2"
    )
    assert review.parse_error is None and review.verdict == "wrong" and review.first_wrong_step is None


class FakeCritic:
    """An engine that answers the i-th critic prompt with ``outputs[i]``."""

    name = "fake"
    startup_s = 0.0

    def __init__(self, outputs):
        self.outputs = outputs

    def generate(self, prompts, sampling):
        from pipeline.engines import Completion

        assert len(prompts) == len(self.outputs) and sampling.temperature == 0.0
        return [[Completion(text, [1] * max(1, len(text) // 4), [-1.0], "stop")] for text in self.outputs]

    def close(self):
        pass


# what a misbehaving critic model writes, and how each row must end (parse_error, usable rewrite?)
LEAK = (
    "<step_1> The answer will be 8. 33 - 19 = 14 </step_1>\n<step_2> 14 / 2 = 7 </step_2>\n"
    "<step_3> 49 + 7 = 56 </step_3>\n<step_4> 56 / 7 = 8 </step_4>\n<answer> 8 </answer>"
)
MISBEHAVIOUR = {
    "valid": (RECORDED["valid"], None),
    "garbage": ("\x00\ufffd}{<step_x>>>#### ??? \U0001f4a5" * 20, "no_steps"),
    "nothing": ("", "empty"),
    "whitespace": ("  \n\t ", "empty"),
    "prose, no tags": ("First 33 - 19 = 14, then 14 / 2 = 7, 7 + 49 = 56 and 56 / 7 = 8. The answer is 8.", "no_steps"),
    "steps, no answer tag": ("<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 / 2 = 7 </step_2>", "no_answer"),
    "thinking never closed": ("<think> let me see, 33 - 19 is", "think_only"),
    "wrong final answer": (GOOD.replace("<answer> 8 </answer>", "<answer> 9 </answer>"), "wrong_answer"),
    "huge garbage": ("blah " * 50_000, "no_steps"),
    "answer leaked": (LEAK, None),
}


@pytest.mark.parametrize("fallback", ["reference", "skip"])
def test_a_misbehaving_llm_critic_is_recorded_row_by_row_and_never_crashes_the_stage(
    tiny_model_dir, tmp_path, monkeypatch, fallback
):
    """garbage, nothing, a rewrite without tags, a wrong or leaking rewrite: through query_critic and contexts."""
    import yaml

    from pipeline import critic
    from pipeline.artifacts import CONTEXTS_SCHEMA, PROBLEMS_SCHEMA, TRACES_SCHEMA, read_artifact, write_artifact
    from pipeline.config import ContextsConfig, PromptConfig, from_params
    from pipeline.contexts import build_teacher_contexts
    from pipeline.engines import Completion
    from pipeline.traces import traces_frame
    from tests.conftest import DEFAULT_CONFIG

    cases = list(MISBEHAVIOUR)
    problem = {"question": "Q?", "answer": "8", "reference": "We start with 33.", "source": "arith"}
    problems = pl.DataFrame(
        [{"problem_id": "p", "split": "train", **problem, "verifier": "exact", "num_steps": 4, "steps": CHAIN}],
        schema=PROBLEMS_SCHEMA,
    )
    problems_path = write_artifact(
        problems, tmp_path / "p.parquet", schema=PROBLEMS_SCHEMA, artifact="problems", stage="t"
    )
    prompts = problems.select("problem_id", "answer", "verifier").with_columns(
        user_message=pl.lit("u"), prompt=pl.lit("q"), prompt_token_ids=pl.lit([1], dtype=pl.List(pl.Int32))
    )
    wrong = Completion(WRONG, [5] * 8, [-1.0] * 8, "stop")
    frame = traces_frame(prompts, [[wrong] * len(cases)], condition="shared", round_index=0)
    traces = write_artifact(frame, tmp_path / "t.parquet", schema=TRACES_SCHEMA, artifact="traces", stage="t")
    outputs = [MISBEHAVIOUR[case][0] for case in cases]
    monkeypatch.setattr(critic, "engine_from_config", lambda *args, **kwargs: FakeCritic(outputs))
    cfg = dataclasses.replace(llm_cfg(), fallback=fallback)
    stats = critic.query_critic(
        traces=traces, problems=problems_path, out=tmp_path / "c.parquet", cfg=cfg, critic_model=tiny_model_dir
    )
    critiques = read_artifact(tmp_path / "c.parquet", schema=CRITIQUES_SCHEMA, artifact="critiques")
    by_case = dict(zip(cases, critiques.iter_rows(named=True)))
    for case, (raw, error) in MISBEHAVIOUR.items():
        row = by_case[case]
        assert row["parse_error"] == error and row["critic_output"] == raw, case
        if error is None:
            assert row["fallback"] is None and parse_response(row["critique_text"]).format_ok, case
        else:
            assert row["fallback"] == fallback and row["verdict"] == "wrong", case
            assert row["critique_text"] == ("We start with 33." if fallback == "reference" else None), case
    assert by_case["answer leaked"]["answer_leak"] and not by_case["valid"]["answer_leak"]
    assert stats["parse_errors"] == 8 and stats["leak_rate"] == 0.5  # of the two usable rewrites, one leaks
    # the contexts stage takes what the critic stage recorded: the fallback (or no row), and the leak flag
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    context_stats = build_teacher_contexts(
        traces=traces, critiques=tmp_path / "c.parquet", problems=problems_path, model=tiny_model_dir,
        out=tmp_path / "x.parquet", condition="shared", kind="critique",
        cfg=from_params(ContextsConfig, config["contexts"]), prompt=from_params(PromptConfig, config["traces"]["prompt"]),
    )  # fmt: skip
    contexts = read_artifact(tmp_path / "x.parquet", schema=CONTEXTS_SCHEMA, artifact="contexts")
    assert context_stats["skipped_no_context"] == (8 if fallback == "skip" else 0)
    leaked = contexts.filter(pl.col("trace_id") == by_case["answer leaked"]["trace_id"])
    assert leaked["answer_leak"].to_list() == [True]
