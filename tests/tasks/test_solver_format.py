from pipeline.tasks.solver_format import EXAMPLE_SOLUTION, parse_response, render_solution, solver_user_message


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
