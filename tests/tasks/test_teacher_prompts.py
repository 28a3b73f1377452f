"""Teacher prompts: every context kind in every layout, and what each shows."""

import pytest
import yaml

from pipeline.config import ContextsConfig, PromptConfig, from_params
from pipeline.tasks.teacher_prompts import CONTEXT_KINDS, LAYOUTS, context_body, insert_context, teacher_messages
from tests.conftest import DEFAULT_CONFIG

CONFIG = yaml.safe_load(DEFAULT_CONFIG.read_text())
TEMPLATES = from_params(ContextsConfig, CONFIG["contexts"], where="contexts").templates
PROMPT = from_params(PromptConfig, CONFIG["traces"]["prompt"], where="traces.prompt")
WRONG = "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 * 2 = 28 </step_2>\n<answer> 28 </answer>"
REWRITE = "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 / 2 = 7 </step_2>\n<answer> 7 </answer>"
QUESTION = "A library has 33 books. Then 19 are given away. The rest are put in rows of 2. How many rows?"
USER = f"Solve.\nQuestion: {QUESTION}\nSolution:"


def row(**overrides):
    base = {
        "question": QUESTION,
        "user_message": USER,
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
    assert context_body("reference", row(), TEMPLATES).startswith("Here is a reference solution:\nWe start")
    critique = context_body("critique", row(), TEMPLATES)
    assert REWRITE in critique and "28" not in critique
    quote = context_body("critique_full_quote", row(), TEMPLATES)
    assert WRONG in quote and "step 2 is wrong: it should be 14 / 2 = 7" in quote
    labels = context_body("critique_labels_only", row(), TEMPLATES)
    assert "step 2 is wrong" in labels and "33 - 19" not in labels and "28" not in labels
    assert "was correct" in context_body("critique_labels_only", row(first_wrong_step=None), TEMPLATES)


def test_missing_material_means_no_context():
    assert context_body("critique", row(critique_text=None, parse_error="empty"), TEMPLATES) is None
    assert context_body("critique_labels_only", row(critique_text=None, parse_error="empty"), TEMPLATES) is None
    assert context_body("reference", row(reference=""), TEMPLATES) is None
    with pytest.raises(ValueError, match="unknown context kind"):
        context_body("hint", row(), TEMPLATES)


@pytest.mark.parametrize("kind", CONTEXT_KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_kind_renders_in_every_layout(layout, kind):
    body = context_body(kind, row(), TEMPLATES)
    messages = teacher_messages(layout, context=body, row=row(), templates=TEMPLATES, prompt=PROMPT)
    text = "\n".join(m["content"] for m in messages)
    assert body in text and QUESTION in text and getattr(TEMPLATES.closing, layout) in text
    ending = "Solution:" if layout == "inline" else getattr(TEMPLATES.closing, layout)  # inline keeps the cue
    assert messages[-1]["role"] == "user" and messages[-1]["content"].endswith(ending)


def test_layouts_place_the_context_as_documented():
    body = context_body("critique", row(), TEMPLATES)
    inline = teacher_messages("inline", context=body, row=row(), templates=TEMPLATES, prompt=PROMPT)
    assert inline == [{"role": "user", "content": insert_context(USER, f"{body}\n\n{TEMPLATES.closing.inline}")}]
    anchor = teacher_messages("anchor", context=body, row=row(), templates=TEMPLATES, prompt=PROMPT)
    assert len(anchor) == 1
    content = anchor[0]["content"]
    assert content.startswith(PROMPT.instruction) and PROMPT.example_question not in content
    assert content.index(QUESTION) < content.index(body) < content.index(TEMPLATES.closing.anchor)
    assert "Solution:" not in content  # no bare cue: a fresh assistant turn follows
    with_example = teacher_messages("anchor_example", context=body, row=row(), templates=TEMPLATES, prompt=PROMPT)
    assert PROMPT.example_solution in with_example[0]["content"]
    multi = teacher_messages("multi_turn", context=body, row=row(), templates=TEMPLATES, prompt=PROMPT)
    assert [m["role"] for m in multi] == ["user", "assistant", "user"]
    assert multi[0]["content"] == USER and multi[1]["content"] == WRONG
    assert multi[2]["content"] == f"{body}\n\n{TEMPLATES.closing.multi_turn}"
    with pytest.raises(ValueError, match="unknown teacher layout"):
        teacher_messages("sideways", context=body, row=row(), templates=TEMPLATES, prompt=PROMPT)


# The end of Qwen3's chat template: thinking off closes an empty think block after the assistant turn.
QWEN3_STYLE_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def test_a_thinking_teacher_scores_the_non_thinking_student_inside_an_open_think_block(tiny_model_dir):
    from transformers import AutoTokenizer

    from pipeline.tasks.solver_format import render_chat
    from pipeline.tasks.teacher_prompts import render_teacher_chat

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = QWEN3_STYLE_TEMPLATE
    messages = teacher_messages("anchor", context="ctx", row=row(), templates=TEMPLATES, prompt=PROMPT)
    student = render_chat(tokenizer, [{"role": "user", "content": USER}], enable_thinking=False)
    assert student.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # the student answers at once
    teacher = render_teacher_chat(tokenizer, messages, enable_thinking=True)
    # not "assistant\n", where the teacher expects to write <think> before the student's <step_1>
    assert teacher.endswith("<|im_start|>assistant\n<think>\n")
    assert render_teacher_chat(tokenizer, messages, enable_thinking=False).endswith("<think>\n\n</think>\n\n")
    # a template without a thinking mode is left as it is
    tokenizer.chat_template = QWEN3_STYLE_TEMPLATE.replace("<think>\\n\\n</think>\\n\\n", "")
    assert render_teacher_chat(tokenizer, messages, enable_thinking=True).endswith("<|im_start|>assistant\n")
