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


def _parse_math(text: str) -> list:
    """math-verify's parse of an answer, wrapped in ``$...$`` unless already delimited."""
    from math_verify import parse

    # parsing_timeout=None: math-verify's signal.alarm fails outside the main thread.
    return parse(text if "$" in text or "\\boxed" in text else f"${text}$", parsing_timeout=None)


def _math_verify(predicted: str, truth: str) -> bool:
    from math_verify import verify

    gold, answer = _parse_math(truth), _parse_math(predicted)
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


def normalize_answer(predicted: str | None, *, method: Method = "exact") -> str | None:
    """A canonical key for ``predicted`` under ``method``: equal keys are the same answer (Maj@k votes).

    ``exact``: the number in canonical form (``"12"``, ``"-0.5"``); ``math``: math-verify's parsed
    expression. None when nothing answer-like was written.
    """
    if predicted is None or not predicted.strip():
        return None
    if method == "exact":
        value = parse_number(predicted)
        if value is None:
            return None
        return str(int(value)) if value.is_integer() else format(value, ".12g")
    if method == "math":
        parsed = _parse_math(predicted)
        return str(parsed[0]) if parsed else predicted.strip()
    raise ValueError(f"unknown verification method {method!r}; expected 'exact' or 'math'")


def is_parsable_answer(answer: str | None, *, method: Method = "exact") -> bool:
    """Whether a ground-truth answer can be checked at all by ``method``."""
    if answer is None or not answer.strip():
        return False
    if method == "exact":
        return parse_number(answer) is not None
    from math_verify import parse

    return bool(parse(f"${answer}$", parsing_timeout=None))
