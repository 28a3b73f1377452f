"""metrics: Pass@k, Maj@n, per-problem metrics, the bootstrap and the step check, on hand-made cases."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from pipeline.metrics import (
    answer_only_rate,
    bootstrap_ci,
    majority_correct,
    miscalculated_step_rate,
    pass_at_k,
    problem_metrics,
)
from pipeline.tasks.verify import normalize_answer
from tests.test_evaluate import HAND


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(12, 0, 12) == 0.0
    assert pass_at_k(12, 12, 1) == 1.0


@pytest.mark.parametrize("c", range(7))
def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_sample(c):
    n = 6
    samples = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(samples, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(4, 5, 1)


def test_majority_vote_over_normalised_answers():
    keys = [normalize_answer(a) for a in ["12", "12.0", "7", None]]
    assert keys == ["12", "12", "7", None]
    assert majority_correct(keys, [True, True, False, False])
    assert not majority_correct(["7", "7", "12"], [False, False, True])
    assert not majority_correct(["7", "12"], [False, True])  # a tie goes to the earliest answer
    assert majority_correct(["12", "7"], [True, False])
    assert not majority_correct([None, None], [False, False])  # no answer never wins


def test_problem_metrics_on_a_hand_case():
    metrics = problem_metrics(HAND).sort("problem_id")
    assert metrics["avg"].to_list() == [0.25, 0.75]
    assert metrics["maj"].to_list() == [0.0, 1.0]  # p1 votes "6" (wrong), p2 votes "9"
    assert metrics["pass_at"][0].to_list() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert metrics["length"].to_list() == [25.0, 10.0]


def test_unequal_sample_counts_are_an_error():
    with pytest.raises(ValueError, match="same number of samples"):
        problem_metrics(HAND.filter(~((pl.col("problem_id") == "p2") & (pl.col("sample_idx") == 3))))


def test_bootstrap_ci_brackets_the_mean_and_collapses_on_constants():
    rng = np.random.default_rng(0)
    values = np.column_stack([rng.random(40), np.full(40, 0.3)])
    ci = bootstrap_ci(values, resamples=2000, seed=1)
    assert ci[0, 1] < ci[0, 0] < ci[0, 2]
    assert ci[1] == pytest.approx([0.3, 0.3, 0.3])
    assert np.array_equal(ci, bootstrap_ci(values, resamples=2000, seed=1))  # seeded


def test_miscalculated_step_rate_checks_each_steps_own_arithmetic():
    texts = [
        "<step_1> 3 * 4 = 12 </step_1>\n<step_2> 12 - 5 = 8 </step_2>\n<answer> 8 </answer>",  # 1 of 2 wrong
        "<step_1> 7 / 2 = 3.5 </step_1>\n<step_2> I add them </step_2>",  # right; the prose step is not checked
        "<step_1> 5 + 0 = 5 </step_1>\n<step_2> 5 / 0 = 1 </step_2>",  # right; division by zero is not checked
    ]
    assert miscalculated_step_rate(texts) == pytest.approx(1 / 4)
    assert miscalculated_step_rate(["<answer> 4 </answer>"]) is None


def test_answer_only_rate_counts_answers_without_a_step():
    texts = [
        "<answer> 4 </answer>",  # answer only
        "<step_1> 2 + 2 = 4 </step_1>\n<answer> 4 </answer>",
        "I think it is four",  # no answer: not counted as answer-only
        "\\boxed{4}",  # a boxed answer without steps
    ]
    assert answer_only_rate(texts) == 0.5
    assert answer_only_rate([]) is None
