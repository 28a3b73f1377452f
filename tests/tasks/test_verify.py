import pytest

from pipeline.tasks.verify import is_parsable_answer, parse_number, verify_answer


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42.0),
        (" 1,234 ", 1234.0),
        ("-7", -7.0),
        ("3.50", 3.5),
        ("x = 12 apples", 12.0),
        ("none", None),
        (None, None),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    ("predicted", "truth", "ok"),
    [
        ("27", "27", True),
        ("27.0", "27", True),
        ("1,234", "1234", True),
        ("26", "27", False),
        ("", "27", False),
        (None, "27", False),
        ("twenty-seven", "27", False),  # a non-numeric answer is wrong, not an error
        ("27", "twenty-seven", False),  # so is any answer to a non-numeric truth (prepare_problems rejects those)
        ("\ufffd\x00 27" * 50_000, "27", True),  # huge or odd text: the last number counts
    ],
)
def test_exact(predicted, truth, ok):
    assert verify_answer(predicted, truth, method="exact") is ok


@pytest.mark.parametrize(
    ("predicted", "truth", "ok"),
    [("\\frac{1}{2}", "0.5", True), ("\\boxed{42}", "42", True), ("41", "42", False), ("(x+1)^2", "x^2+2x+1", True)],
)
def test_math_verify(predicted, truth, ok):
    assert verify_answer(predicted, truth, method="math") is ok


def test_math_verify_works_in_a_thread():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(verify_answer, "\\frac{1}{2}", "0.5", method="math").result()


def test_parsable_answers():
    assert is_parsable_answer("12", method="exact")
    assert not is_parsable_answer("twelve", method="exact")
    assert not is_parsable_answer("  ", method="math")
    with pytest.raises(ValueError, match="unknown verification method"):
        verify_answer("1", "1", method="fuzzy")
