from pipeline.tasks.critique_qa import alignment_score, answer_leak, first_changed_step


def test_first_changed_step():
    assert first_changed_step(["a", "b"], ["a", "b"]) is None
    assert first_changed_step(["a", "b"], ["a", "c"]) == 2
    assert first_changed_step(["a"], ["a", "b"]) == 2
    assert first_changed_step([" a "], ["a"]) is None


def test_alignment_score():
    assert alignment_score(["a", "b", "c"], ["a", "b", "x"], first_wrong=3) == 1.0
    assert alignment_score(["a", "b", "c"], ["a", "y", "x"], first_wrong=3) == 0.5
    assert alignment_score(["a", "b"], ["a", "b"], first_wrong=None) == 1.0
    assert alignment_score(["a", "b"], ["x"], first_wrong=1) is None  # nothing before the error


def test_answer_leak():
    assert not answer_leak("<step_1> 3 + 5 = 8 </step_1>\n<answer> 8 </answer>", "8")
    assert answer_leak("The answer is 8.\n<step_1> 3 + 5 = 8 </step_1>", "8")
    assert answer_leak("Think about it; the result is 18.", "18")  # stated, never derived
    assert not answer_leak("Adding 4 gives 27 tickets. So the final answer is 27.", "27")
    assert not answer_leak("<step_1> 18 + 1 = 19 </step_1>", "8")  # 18 is not 8
    assert not answer_leak("no numbers here", "8")


def test_answer_leak_ignores_tag_numbers_and_operands():
    rewrite = "<step_1> 25 / 5 = 5 </step_1>\n<step_2> 5 - 2 = 3 </step_2>\n<step_3> 3 - 2 = 1 </step_3>\n<answer> 1 </answer>"
    assert not answer_leak(rewrite, "1")  # 'step_1' and the operand 2 are not statements of 1
    assert not answer_leak("<step_1> 3 + 3 = 6 </step_1>\n<step_2> 6 - 3 = 3 </step_2>\n<answer> 3 </answer>", "3")
    assert answer_leak("The answer is 1.\n" + rewrite, "1")
