"""Quality checks shared by every stage that builds a teacher context from feedback.

- **Alignment**: how much of the solver's own correct prefix a rewrite reproduces verbatim, and
  the first step it changes. A step-aligned critique should score 1.0 and change exactly the
  first wrong step.
- **Answer leak**: does a context state the final answer before it derives it? A teacher that is
  simply told the answer teaches the answer token, not the reasoning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_DERIVES = r"(?:=|\bgives|\bleaves|\bmakes|\bequals|\bresults in)\s*"


def first_changed_step(solver_steps: Sequence[str], rewrite_steps: Sequence[str]) -> int | None:
    """1-based index of the first step the rewrite changes (or adds/drops); None if identical."""
    for i, (a, b) in enumerate(zip(solver_steps, rewrite_steps), start=1):
        if a.strip() != b.strip():
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
    kept = sum(
        1 for i in range(n_pre) if i < len(rewrite_steps) and solver_steps[i].strip() == rewrite_steps[i].strip()
    )
    return kept / n_pre


def _mask_operands(context: str) -> str:
    """Blank out step/answer tags and each step's left-hand side, keeping character positions.

    Operands are not statements of the answer, and tag numbers (``step_1``) are not numbers.
    """

    def blank(match: re.Match) -> str:
        return " " * len(match.group(0))

    text = re.sub(r"</?step_\d+>|</?answer>", blank, context)
    return re.sub(r"[^\n=]*(?==)", blank, text)  # everything left of "=" on a line


def answer_leak(context: str, answer: str) -> bool:
    """Whether ``context`` mentions ``answer`` before any step or sentence derives it.

    A derivation is ``= N`` or ``gives/leaves/makes/equals/results in N``. Operands written on a
    step's left-hand side and tag numbers do not count as mentions. A heuristic: in prose, an operand
    that happens to equal the answer before its derivation still counts as a leak.
    """
    number = re.escape(answer.strip())
    if not number:
        return False
    text = _mask_operands(context) if "<step_" in context else context
    mentions = [m.start() for m in re.finditer(rf"(?<![\d.]){number}(?![\d]|\.\d)", text)]
    if not mentions:
        return False
    derivation = re.search(rf"{_DERIVES}{number}(?![\d]|\.\d)", text)
    return derivation is None or mentions[0] < derivation.end() - len(answer.strip())
