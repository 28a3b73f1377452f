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


PROSE_SOLVER = [
    "The circle has radius $r = 3$, so its area is $\\pi r^2 = 9\\pi$.",
    "The square has side 6, so its area is $36$.",
    "The shaded region is the square minus the circle: $36 + 9\\pi$.",
]
PROSE_REWRITE = [
    "The circle has radius $r = 3$, so its area is\n$\\pi r^2 = 9\\pi$.",  # re-wrapped: the same step
    "The square has side 6, so its area is $36$.",
    "The shaded region is the square minus the circle: $36 - 9\\pi$.",  # the corrected step
]


def test_alignment_on_prose_steps():
    assert first_changed_step(PROSE_SOLVER, PROSE_REWRITE) == 3
    assert alignment_score(PROSE_SOLVER, PROSE_REWRITE, first_wrong=3) == 1.0
    edited = [PROSE_REWRITE[0].replace("so its", "hence its"), *PROSE_REWRITE[1:]]
    assert first_changed_step(PROSE_SOLVER, edited) == 1  # any word changed is a change
    assert alignment_score(PROSE_SOLVER, edited, first_wrong=3) == 0.5


def render(steps, final):
    return "\n".join(f"<step_{i}> {s} </step_{i}>" for i, s in enumerate(steps, 1)) + f"\n{final}"


def test_answer_leak_on_prose_rewrites():
    answer = "36 - 9\\pi"
    clean = render(PROSE_REWRITE, "\\boxed{36 - 9\\pi}")
    assert not answer_leak(clean, answer)  # stated only in the last step and the boxed answer
    assert answer_leak("The answer is $36-9\\pi$.\n" + clean, answer)  # a preamble states it (any spacing)
    told = render(["We must reach $36 - 9\\pi$.", *PROSE_REWRITE], "\\boxed{36 - 9\\pi}")
    assert answer_leak(told, answer)  # stated in the first step, derived only at the end
    numeric = render(["We know the answer is 42, so check: 6 * 7 = 42.", "Done, 42."], "<answer> 42 </answer>")
    assert answer_leak(numeric, "42")  # only the operands left of '=' are masked, not the whole line
    derived = render(["$\\frac{84}{2} = 42$ apples.", "So there are 42 apples."], "\\boxed{42}")
    assert not answer_leak(derived, "42")  # 84 / 2 are operands; '= 42' derives it first


def test_a_final_answer_no_step_derives_is_a_leak():
    # recorded from the 0.5B critic: it kept the wrong steps and wrote the true answer under them
    kept_wrong_steps = "<step_1> 16 - 8 = 8 </step_1>\n<step_2> 8 * 4 = 32 </step_2>\n<answer> 2 </answer>"
    assert answer_leak(kept_wrong_steps, "2")
    extended = (
        "<step_1> 2 * 2 = 4 </step_1>\n<step_2> 4 * 1 = 4 </step_2>\n<step_3> 4 * 2 = 8 </step_3>\n<answer> 8 </answer>"
    )
    assert not answer_leak(extended, "8")  # derived by the last step


def test_an_answer_stated_in_the_sentence_before_an_equation_is_a_leak():
    rest = "<step_2> 14 / 2 = 7 </step_2>\n<step_3> 7 + 1 = 8 </step_3>\n<answer> 8 </answer>"
    assert answer_leak("<step_1> The answer will be 8. 33 - 19 = 14 </step_1>\n" + rest, "8")
    assert not answer_leak("<step_1> 33 - 19 = 14 </step_1>\n" + rest, "8")
    assert not answer_leak("<step_1> 1,200 - 1,192 = 8 </step_1>\n<answer> 8 </answer>", "8")  # operands stay operands
    assert not answer_leak("<step_1> 8.5 - 0.5 = 8 </step_1>\n<answer> 8 </answer>", "8")
