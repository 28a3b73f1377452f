import polars as pl
import pytest
import yaml
from transformers import AutoTokenizer

from pipeline.artifacts import CONTEXTS_SCHEMA
from pipeline.config import ContextsConfig, from_params
from pipeline.contexts import build_contexts, context_text, insert_context
from tests.conftest import SMOKE_CONFIG

CFG = from_params(ContextsConfig, yaml.safe_load(SMOKE_CONFIG.read_text())["contexts"])
WRONG = "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 * 2 = 28 </step_2>\n<answer> 28 </answer>"
REWRITE = "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 / 2 = 7 </step_2>\n<answer> 7 </answer>"


def row(**overrides):
    base = {
        "completion_text": WRONG,
        "critique_text": REWRITE,
        "critique_steps": ["33 - 19 = 14", "14 / 2 = 7"],
        "first_wrong_step": 2,
        "parse_error": None,
        "reference": "We start with 33. Taking away 19 leaves 14. Halving gives 7.",
    }
    return base | overrides


def test_insert_context_goes_before_the_solution_cue():
    assert insert_context("Solve.\nQuestion: q\nSolution:", "CTX") == "Solve.\nQuestion: q\n\nCTX\nSolution:"
    assert insert_context("Just a question", "CTX") == "Just a question\n\nCTX"


def test_each_kind_shows_what_the_paper_describes():
    assert context_text("reference", row(), CFG.templates).startswith("Here is a reference solution:\nWe start")
    critique = context_text("critique", row(), CFG.templates)
    assert REWRITE in critique and "28" not in critique
    quote = context_text("critique_full_quote", row(), CFG.templates)
    assert WRONG in quote and "step 2 is wrong: it should be 14 / 2 = 7" in quote
    labels = context_text("critique_labels_only", row(), CFG.templates)
    assert "step 2 is wrong" in labels and "33 - 19" not in labels and "28" not in labels
    assert "was correct" in context_text("critique_labels_only", row(first_wrong_step=None), CFG.templates)


def test_missing_material_means_no_context():
    assert context_text("critique", row(critique_text=None, parse_error="empty"), CFG.templates) is None
    assert context_text("critique_labels_only", row(critique_text=None, parse_error="empty"), CFG.templates) is None
    assert context_text("reference", row(reference=""), CFG.templates) is None
    with pytest.raises(ValueError, match="unknown context kind"):
        context_text("hint", row(), CFG.templates)


def test_build_contexts_frame(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    traces = pl.DataFrame(
        {
            "trace_id": ["t0", "t1"],
            "problem_id": ["p", "p"],
            "round": [0, 0],
            "completion_text": [WRONG, WRONG],
            "user_message": ["Solve.\nQuestion: q\nSolution:"] * 2,
        },
        schema_overrides={"round": pl.Int32},
    )
    critiques = pl.DataFrame(
        {
            "trace_id": ["t0", "t1"],
            "critique_text": [REWRITE, None],
            "critique_steps": [["33 - 19 = 14", "14 / 2 = 7"], []],
            "first_wrong_step": [2, None],
            "parse_error": [None, "empty"],
        },
        schema_overrides={"first_wrong_step": pl.Int32},
    )
    problems = pl.DataFrame({"problem_id": ["p"], "reference": ["We start with 33."], "answer": ["7"]})
    frame, skipped = build_contexts(traces, critiques, problems, kind="critique", cfg=CFG, tokenizer=tokenizer)
    assert frame.schema == CONTEXTS_SCHEMA and frame.height == 1 and skipped == 1
    prompt = frame["teacher_prompt"][0]
    assert prompt.startswith("<|im_start|>user\nSolve.") and prompt.endswith(
        "Solution:<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(frame["teacher_prompt_token_ids"][0].to_list()) == prompt
    assert frame["answer_leak"].to_list() == [False]
    reference, _ = build_contexts(traces, critiques, problems, kind="reference", cfg=CFG, tokenizer=tokenizer)
    assert reference.height == 2 and reference["template_version"].unique().to_list() == ["contexts-v1"]
