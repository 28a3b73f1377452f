import pytest

from pipeline.tasks.arith import ArithSettings, Step, generate_problems, parse_arith_step, reference_solution

SETTINGS = ArithSettings(min_steps=2, max_steps=5, max_start=60, max_operand=12, max_value=500)


def apply(step: Step) -> int:
    return {"+": step.a + step.b, "-": step.a - step.b, "*": step.a * step.b, "/": step.a // step.b}[step.op]


def test_same_seed_same_problems_other_seed_other_problems():
    a = generate_problems(30, seed=5, settings=SETTINGS)
    b = generate_problems(30, seed=5, settings=SETTINGS)
    c = generate_problems(30, seed=6, settings=SETTINGS)
    assert a == b
    assert [p.question for p in a] != [p.question for p in c]


def test_chains_are_consistent_and_respect_the_knobs():
    problems = generate_problems(200, seed=1, settings=SETTINGS)
    assert len({p.question for p in problems}) == 200
    for p in problems:
        assert 2 <= len(p.steps) <= 5
        assert p.steps[0].a <= SETTINGS.max_start
        for prev, step in zip(p.steps, p.steps[1:]):
            assert step.a == prev.result
        for step in p.steps:
            assert step.result == apply(step)
            assert 0 < step.result <= SETTINGS.max_value
            assert step.b <= SETTINGS.max_operand
            if step.op == "/":
                assert step.a % step.b == 0
        assert p.answer == p.steps[-1].result
        assert p.reference.endswith(f"So the final answer is {p.answer}.")


def test_ops_knob_limits_operations():
    problems = generate_problems(50, seed=2, settings=ArithSettings(ops=("+", "-")))
    assert {s.op for p in problems for s in p.steps} <= {"+", "-"}


def test_reference_merges_runs_into_a_different_route():
    steps = (
        Step(31, "+", 4, 35),
        Step(35, "+", 3, 38),
        Step(38, "-", 11, 27),
        Step(27, "*", 2, 54),
        Step(54, "*", 3, 162),
    )
    text = reference_solution(steps, "tickets")
    assert "adding 4 and adding 3 and taking away 11 is a net loss of 4, which leaves 27 tickets" in text
    assert "Scaling by 2 and 3 is a factor of 6 in all, which makes 162 tickets" in text
    assert "<step_" not in text


def test_exclude_and_bad_knobs():
    first = generate_problems(5, seed=3, settings=SETTINGS)
    again = generate_problems(5, seed=3, settings=SETTINGS, exclude=frozenset(p.question for p in first))
    assert not {p.question for p in first} & {p.question for p in again}
    with pytest.raises(ValueError, match="min_steps"):
        ArithSettings(min_steps=4, max_steps=2)
    with pytest.raises(ValueError, match="ops"):
        ArithSettings(ops=("^",))


def test_parse_arith_step_forms():
    assert parse_arith_step("33 - 19 = 14") == (33, "-", 19, 14)
    assert parse_arith_step("4 x 3 = 12 apples") == (4, "*", 3, 12)
    assert parse_arith_step("12 ÷ 4 = 3.") == (12, "/", 4, 3)
    assert parse_arith_step("so we have 14") is None
