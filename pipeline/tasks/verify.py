"""Answer verification: exact numeric for ``arith``, math-verify for real math."""

from __future__ import annotations

import logging
import math
import re
from typing import Literal

Method = Literal["exact", "math"]
# math-verify warns on every call made with parsing_timeout=None, which threads require.
logging.getLogger("math_verify").setLevel(logging.ERROR)
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def parse_number(text: str | None) -> float | None:
    """The last number written in ``text`` (commas allowed), or None if there is none."""
    if not text:
        return None
    found = _NUMBER_RE.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def _math_verify(predicted: str, truth: str) -> bool:
    from math_verify import parse, verify

    # parsing_timeout/timeout_seconds=None: math-verify's signal.alarm fails outside the main thread.
    gold = parse(f"${truth}$", parsing_timeout=None)
    answer = parse(predicted if "$" in predicted or "\\boxed" in predicted else f"${predicted}$", parsing_timeout=None)
    if not gold or not answer:
        return False
    return bool(verify(gold, answer, timeout_seconds=None))


def verify_answer(predicted: str | None, truth: str, *, method: Method = "exact") -> bool:
    """Whether ``predicted`` equals the ground truth ``truth``."""
    if predicted is None or not predicted.strip():
        return False
    if method == "exact":
        got, want = parse_number(predicted), parse_number(truth)
        return got is not None and want is not None and math.isclose(got, want, rel_tol=0, abs_tol=1e-9)
    if method == "math":
        return _math_verify(predicted, truth)
    raise ValueError(f"unknown verification method {method!r}; expected 'exact' or 'math'")


def is_parsable_answer(answer: str | None, *, method: Method = "exact") -> bool:
    """Whether a ground-truth answer can be checked at all by ``method``."""
    if answer is None or not answer.strip():
        return False
    if method == "exact":
        return parse_number(answer) is not None
    from math_verify import parse

    return bool(parse(f"${answer}$", parsing_timeout=None))
