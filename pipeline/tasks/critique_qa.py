"""Quality checks shared by every stage that builds a teacher context from feedback.

- **Alignment**: how much of the solver's own correct prefix a rewrite reproduces verbatim, and
  the first step it changes. A step-aligned critique should score 1.0 and change exactly the
  first wrong step. Steps compare verbatim up to runs of whitespace (a re-wrapped prose line is the
  same step; any other edit is a change), so the checks work on ``a op b = c`` and prose alike.
- **Answer leak**: does a context state the final answer before it derives it? A teacher that is
  simply told the answer teaches the answer token, not the reasoning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_DERIVES = r"(?:=|\bgives|\bleaves|\bmakes|\bequals|\bresults in)\s*\$?\s*"
_TAGS_RE = re.compile(r"</?step_\d+>|</?answer>")
_STEP_SPAN_RE = re.compile(r"<step_(\d+)>.*?</step_\1>", re.DOTALL)
# An operand expression written immediately before "=" on one line: digits, operators, brackets and
# LaTeX commands (\frac{84}{2} = 42). Its numbers are operands, not statements of the result. A
# point or comma belongs to an operand only inside a number (3.5, 1,200): "... be 8. 33 - 19 = 14"
# ends a sentence that states 8 before the operands start.
_OPERANDS_RE = re.compile(r"(?:[0-9]+(?:[.,][0-9]+)*|[ \t+\-*/x×÷·^()\[\]{}$]|\\[A-Za-z]+)+(?==)")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def same_step(a: str, b: str) -> bool:
    """Two step texts are the same step: equal up to runs of whitespace."""
    return a.split() == b.split()


def first_changed_step(solver_steps: Sequence[str], rewrite_steps: Sequence[str]) -> int | None:
    """1-based index of the first step the rewrite changes (or adds/drops); None if identical."""
    for i, (a, b) in enumerate(zip(solver_steps, rewrite_steps), start=1):
        if not same_step(a, b):
            return i
    if len(solver_steps) != len(rewrite_steps):
        return min(len(solver_steps), len(rewrite_steps)) + 1
    return None


def alignment_score(solver_steps: Sequence[str], rewrite_steps: Sequence[str], first_wrong: int | None) -> float | None:
    """Share of the solver's steps before its first wrong step that the rewrite keeps verbatim.

    ``first_wrong`` is 1-based; None means no step is wrong, so every solver step counts. Returns
    None when there is no pre-error step to keep.
    """
    n_pre = len(solver_steps) if first_wrong is None else min(first_wrong - 1, len(solver_steps))
    if n_pre <= 0:
        return None
    kept = sum(1 for i in range(n_pre) if i < len(rewrite_steps) and same_step(solver_steps[i], rewrite_steps[i]))
    return kept / n_pre


def _blank(match: re.Match) -> str:
    return " " * len(match.group(0))


def _answer_pattern(answer: str) -> str:
    """A regex for the answer as written: numbers with digit boundaries, LaTeX with any spacing."""
    answer = answer.strip().strip("$").strip()
    if _NUMBER_RE.fullmatch(answer):
        return rf"(?<![\d.]){re.escape(answer)}(?![\d]|\.\d)"
    compact = "".join(answer.split())
    body = r"\s*".join(re.escape(ch) for ch in compact)
    before = r"(?<![\w\\])" if compact[:1].isalnum() else ""
    after = r"(?![\w])" if compact[-1:].isalnum() else ""
    return before + body + after


def answer_leak(context: str, answer: str) -> bool:
    """Whether ``context`` states ``answer`` before any step or sentence derives it (or never derives it).

    A derivation is ``= N`` or ``gives/leaves/makes/equals/results in N``. In a step-tagged context,
    tag numbers (``step_1``) and the operand expression left of each ``=`` are not mentions, and a
    mention inside the last step is its conclusion, so it counts as derived; a final answer (tag or
    boxed) that no step derives is a leak: the rewrite states the answer without reaching it. A
    heuristic: in prose, an operand that happens to equal the answer before its derivation still
    counts as a leak.
    """
    if not answer.strip().strip("$").strip():
        return False
    pattern = _answer_pattern(answer)
    text = context
    spans = list(_STEP_SPAN_RE.finditer(context))
    if spans:
        text = _OPERANDS_RE.sub(_blank, _TAGS_RE.sub(_blank, text))
    mentions = [m.start() for m in re.finditer(pattern, text)]
    if not mentions:
        return False
    derived_at = [m.start(1) for m in re.finditer(f"{_DERIVES}({pattern})", text)]
    if spans:
        last = spans[-1]
        derived_at += [m for m in mentions if last.start() <= m < last.end()]
    return not derived_at or mentions[0] < min(derived_at)
