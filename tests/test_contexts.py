import dataclasses

import polars as pl
import yaml
from transformers import AutoTokenizer

from pipeline.artifacts import CONTEXTS_SCHEMA
from pipeline.config import ContextsConfig, PromptConfig, from_params
from pipeline.contexts import build_contexts
from tests.conftest import SMOKE_CONFIG

SMOKE = yaml.safe_load(SMOKE_CONFIG.read_text())
CFG = from_params(ContextsConfig, SMOKE["contexts"] | {"layout": "inline"})
PROMPT = from_params(PromptConfig, SMOKE["traces"]["prompt"])
WRONG = "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 * 2 = 28 </step_2>\n<answer> 28 </answer>"
REWRITE = "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 / 2 = 7 </step_2>\n<answer> 7 </answer>"


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
    problems = pl.DataFrame(
        {"problem_id": ["p"], "question": ["q"], "reference": ["We start with 33."], "answer": ["7"]}
    )
    frame, skipped = build_contexts(
        traces, critiques, problems, condition="critique", kind="critique", cfg=CFG, prompt=PROMPT, tokenizer=tokenizer
    )
    assert frame.schema == CONTEXTS_SCHEMA and frame.height == 1 and skipped == 1
    assert frame["layout"].to_list() == ["inline"]
    prompt = frame["teacher_prompt"][0]
    assert prompt.startswith("<|im_start|>user\nSolve.") and prompt.endswith(
        "Solution:<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(frame["teacher_prompt_token_ids"][0].to_list()) == prompt
    assert frame["answer_leak"].to_list() == [False]
    reference, _ = build_contexts(
        traces,
        critiques,
        problems,
        condition="reference",
        kind="reference",
        cfg=CFG,
        prompt=PROMPT,
        tokenizer=tokenizer,
    )
    assert reference.height == 2 and reference["template_version"].unique().to_list() == ["contexts-v2"]
    # a variant arm's contexts (later rounds) carry the arm as condition and the kind it sees
    variant, _ = build_contexts(
        traces, critiques, problems, condition="critique_first_error", kind="critique",
        cfg=dataclasses.replace(CFG, layout="multi_turn"), prompt=PROMPT, tokenizer=tokenizer,
    )  # fmt: skip
    assert variant["condition"].to_list() == ["critique_first_error"] and variant["context_kind"].to_list() == [
        "critique"
    ]
    assert variant["teacher_prompt"][0].count("<|im_start|>user") == 2
