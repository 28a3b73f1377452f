from pipeline.tasks.solver_format import (
    EXAMPLE_SOLUTION,
    fill_template,
    last_boxed,
    parse_response,
    prompt_opens_thinking,
    render_solution,
    solver_user_message,
    strip_thinking,
)


def test_parses_steps_with_spans_and_answer():
    text = "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 / 2 = 7 </step_2>\n<answer> 7 </answer>"
    parsed = parse_response(text)
    assert [s.text for s in parsed.steps] == ["33 - 19 = 14", "14 / 2 = 7"]
    assert [s.number for s in parsed.steps] == [1, 2]
    assert text[parsed.steps[1].start : parsed.steps[1].end] == "<step_2> 14 / 2 = 7 </step_2>"
    assert parsed.answer == "7"
    assert text[slice(*parsed.answer_span)] == "<answer> 7 </answer>"
    assert parsed.format_ok


def test_render_round_trips():
    text = render_solution(["64 - 15 = 49", "49 * 3 = 147"], "147")
    assert text == EXAMPLE_SOLUTION
    parsed = parse_response(text)
    assert parsed.format_ok and parsed.answer == "147"


def test_truncated_and_malformed_responses():
    truncated = parse_response("<step_1> 3 + 4 = 7 </step_1>\n<step_2> 7 * ")
    assert [s.text for s in truncated.steps] == ["3 + 4 = 7"]
    assert truncated.answer is None and not truncated.format_ok
    assert not parse_response("<answer> 5 </answer>").format_ok  # no steps
    assert not parse_response("<step_2> 1 + 1 = 2 </step_2><answer> 2 </answer>").format_ok  # misnumbered
    assert not parse_response("<step_1> 1 + 1 = 2 </step_2><answer>2</answer>").steps  # mismatched tags
    assert not parse_response("<answer> 2 </answer><step_1> 1 + 1 = 2 </step_1>").format_ok  # answer first
    assert parse_response("").answer is None


def test_prompt_has_one_shot_example_and_question():
    msg = solver_user_message("How many?")
    assert "Example:" in msg and EXAMPLE_SOLUTION in msg
    assert msg.endswith("Question: How many?\nSolution:")


def test_boxed_final_answer_after_prose_steps():
    text = (
        "<step_1> The roots of $x^2 - 5x + 6$ are 2 and 3. </step_1>\n"
        "<step_2> Their ratio is $\\frac{3}{2}$. </step_2>\n"
        "So the answer is \\boxed{\\frac{3}{2}}."
    )
    parsed = parse_response(text)
    assert [s.number for s in parsed.steps] == [1, 2] and parsed.format_ok
    assert parsed.answer == "\\frac{3}{2}"  # nested braces kept
    assert text[slice(*parsed.answer_span)] == "\\boxed{\\frac{3}{2}}"
    # an answer tag wins over a boxed expression; inside the last step the boxed answer is read but the format fails
    assert parse_response("<step_1> a </step_1><answer> 7 </answer> \\boxed{8}").answer == "7"
    inside = parse_response("<step_1> so it is \\boxed{7} </step_1>")
    assert inside.answer == "7" and not inside.format_ok
    assert parse_response("<step_1> x </step_1> \\boxed{7").answer is None  # unclosed
    assert last_boxed("\\boxed{1} then \\boxed{2}") == ("2", 15, 24)


QWEN3_THINKING = (  # Qwen3 with enable_thinking=True writes its own <think> block (format of Qwen3's docs)
    "<think>\nOkay, the student multiplied in step 2 where the story divides. Let me redo it: "
    "14 / 2 = 7, then 7 + 49 = 56, 56 / 7 = 8. So I keep step 1 and rewrite from step 2.\n</think>\n\n"
    "<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 / 2 = 7 </step_2>\n<step_3> 7 + 49 = 56 </step_3>\n"
    "<step_4> 56 / 7 = 8 </step_4>\n<answer> 8 </answer>"
)
QWQ_THINKING = (  # QwQ-32B's template opens <think> in the prompt: the output starts inside it
    "Okay, so I need to check each step. Step 1: 33 - 19 = 14, correct. Step 2 should divide.\n"
    "</think>\n\n<step_1> 33 - 19 = 14 </step_1>\n<step_2> 14 / 2 = 7 </step_2>\n<answer> 7 </answer>"
)


def test_strip_thinking_of_qwen3_and_qwq_outputs():
    visible, error = strip_thinking(QWEN3_THINKING)
    assert error is None and visible.startswith("<step_1>") and "redo it" not in visible
    visible, error = strip_thinking(QWQ_THINKING, opened=True)
    assert error is None and visible.startswith("<step_1>") and "Okay" not in visible
    assert strip_thinking("Okay, step 1 is fine, step 2", opened=True) == (None, "think_only")
    assert strip_thinking("<think>still thinking") == (None, "think_only")
    assert strip_thinking("<think>a</think> x <think>b") == (None, "think_only")
    assert strip_thinking("  <step_1> 1 + 1 = 2 </step_1>  ") == ("<step_1> 1 + 1 = 2 </step_1>", None)


def test_prompt_opens_thinking():
    assert prompt_opens_thinking("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not prompt_opens_thinking("<|im_start|>assistant\n")


def test_fill_template_leaves_latex_braces_alone():
    template = "Problem: {question}\nEnd with \\boxed{answer} or \\boxed{...}; the truth is {ground_truth}."
    filled = fill_template(template, question="1 + 1?", ground_truth="2")
    assert filled == "Problem: 1 + 1?\nEnd with \\boxed{answer} or \\boxed{...}; the truth is 2."
    assert fill_template("{a}{b}", a="{b}", b="x") == "{b}x"  # a filled value is not filled again
