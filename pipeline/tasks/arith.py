"""Seeded multi-step arithmetic word problems with a ground-truth value per step.

Each problem is a chain ``start op1 b1 op2 b2 ...`` told as a story about one kind of object. The
reference solution is prose and, where the chain allows it, takes a different route from the
solver's one-operation-per-step format: runs of additions/subtractions are merged into one net change
and runs of multiplications into one overall factor, as real reference solutions rarely mirror a
model's own decomposition.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field

# The difficulty knobs are typed config (one floor below tasks); still importable from here.
from pipeline.config import ARITH_OPS, ArithOp, ArithSettings

Op = ArithOp
ALL_OPS = ARITH_OPS

_SETTINGS = [
    ("A farm", "apples"),
    ("A library", "books"),
    ("A bakery", "cookies"),
    ("A school", "pencils"),
    ("A garden", "flowers"),
    ("A shop", "toys"),
    ("A harbor", "boats"),
    ("A museum", "paintings"),
    ("A zoo", "tickets"),
    ("A market", "melons"),
]

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "+": ("Then {b} more {noun} arrive.", "Next, {b} new {noun} are added."),
    "-": ("Then {b} {noun} are taken away.", "Next, {b} of the {noun} are sold."),
    "*": (
        "Then the number of {noun} is multiplied by {b}.",
        "Next, the number of {noun} becomes {b} times as large.",
    ),
    "/": (
        "Then the {noun} are split equally into {b} groups, and only one group is kept.",
        "Next, the {noun} are shared equally among {b} stores, and one store's share stays.",
    ),
}


@dataclass(frozen=True)
class Step:
    """One ground-truth operation ``a op b = result``."""

    a: int
    op: str
    b: int
    result: int

    def as_dict(self) -> dict[str, int | str]:
        return {"a": self.a, "op": self.op, "b": self.b, "result": self.result}


@dataclass(frozen=True)
class ArithProblem:
    problem_id: str
    question: str
    answer: int
    reference: str
    steps: tuple[Step, ...] = field(default_factory=tuple)


def _next_step(rng: random.Random, value: int, s: ArithSettings) -> Step | None:
    """Draw one valid operation on ``value``, or None if the chosen op has no valid operand."""
    op = rng.choice(s.ops)
    if op == "+":
        hi = min(s.max_operand, s.max_value - value)
        b = rng.randint(1, hi) if hi >= 1 else None
    elif op == "-":
        hi = min(s.max_operand, value - 1)
        b = rng.randint(1, hi) if hi >= 1 else None
    elif op == "*":
        hi = min(s.max_operand, s.max_value // max(value, 1))
        b = rng.randint(2, hi) if hi >= 2 else None
    else:
        divisors = [d for d in range(2, min(s.max_operand, value) + 1) if value % d == 0]
        b = rng.choice(divisors) if divisors else None
    if b is None:
        return None
    result = {"+": value + b, "-": value - b, "*": value * b}.get(op, value // b)
    return Step(value, op, b, result)


def _draw_chain(rng: random.Random, s: ArithSettings) -> tuple[Step, ...]:
    n_steps = rng.randint(s.min_steps, s.max_steps)
    while True:
        value = rng.randint(2, s.max_start)
        steps: list[Step] = []
        for _ in range(50 * n_steps):
            step = _next_step(rng, value, s)
            if step is None or (steps and step.op == steps[-1].op == "/"):
                continue
            steps.append(step)
            value = step.result
            if len(steps) == n_steps:
                return tuple(steps)


def _question(rng: random.Random, steps: tuple[Step, ...]) -> tuple[str, str]:
    """The story text and the noun it counts."""
    place, noun = rng.choice(_SETTINGS)
    sentences = [f"{place} has {steps[0].a} {noun}."]
    sentences += [rng.choice(_TEMPLATES[st.op]).format(b=st.b, noun=noun) for st in steps]
    sentences.append(f"How many {noun} are there at the end?")
    return " ".join(sentences), noun


def _merge_kind(op: str) -> str | None:
    """Steps of the same kind in a row are merged by the reference; division never is."""
    return {"+": "net", "-": "net", "*": "factor"}.get(op)


def _runs(steps: tuple[Step, ...]) -> list[list[Step]]:
    """Group consecutive steps that a reference would merge: +/- runs and * runs."""
    groups: list[list[Step]] = []
    for st in steps:
        kind = _merge_kind(st.op)
        if groups and kind is not None and _merge_kind(groups[-1][0].op) == kind:
            groups[-1].append(st)
        else:
            groups.append([st])
    return groups


def reference_solution(steps: tuple[Step, ...], noun: str) -> str:
    """A prose reference that merges runs of +/- (net change) and of * (overall factor)."""
    verbs = {"+": "adding {b}", "-": "taking away {b}", "*": "multiplying by {b}", "/": "dividing by {b}"}
    parts = [f"We start with {steps[0].a} {noun}."]
    for group in _runs(steps):
        start, end = group[0].a, group[-1].result
        if len(group) == 1:
            st = group[0]
            parts.append(f"{verbs[st.op].format(b=st.b).capitalize()} gives {end} {noun}.")
        elif group[0].op in "+-":
            net = end - start
            changes = " and ".join(verbs[st.op].format(b=st.b) for st in group)
            gain = f"a net gain of {net}" if net >= 0 else f"a net loss of {-net}"
            parts.append(f"Taken together, {changes} is {gain}, which leaves {end} {noun}.")
        else:
            factor = end // start
            factors = " and ".join(str(st.b) for st in group)
            parts.append(f"Scaling by {factors} is a factor of {factor} in all, which makes {end} {noun}.")
    parts.append(f"So the final answer is {steps[-1].result}.")
    return " ".join(parts)


def problem_id(question: str) -> str:
    """A stable id from the question text, independent of generation order."""
    return "arith-" + hashlib.sha1(question.encode()).hexdigest()[:12]


def generate_problems(
    n: int, *, seed: int | str, settings: ArithSettings, exclude: frozenset[str] = frozenset()
) -> list[ArithProblem]:
    """Draw ``n`` distinct problems, deterministically for a seed; skip questions in ``exclude``."""
    rng = random.Random(str(seed))
    seen = set(exclude)
    out: list[ArithProblem] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"arith: could only draw {len(out)} distinct problems of {n}; widen the difficulty knobs")
        steps = _draw_chain(rng, settings)
        question, noun = _question(rng, steps)
        if question in seen:
            continue
        seen.add(question)
        out.append(
            ArithProblem(
                problem_id=problem_id(question),
                question=question,
                answer=steps[-1].result,
                reference=reference_solution(steps, noun),
                steps=steps,
            )
        )
    return out


_OPS = {"+": "+", "-": "-", "*": "*", "x": "*", "×": "*", "/": "/", "÷": "/"}
_NUM = r"-?\d+(?:\.\d+)?"
_STEP_RE = re.compile(rf"^\s*({_NUM})\s*([-+*/x×÷])\s*({_NUM})\s*=\s*({_NUM})(?:\s+[A-Za-z ]*)?\s*\.?\s*$")


def parse_arith_step(text: str) -> tuple[float, str, float, float] | None:
    """``a op b = c`` (with x, ×, ÷ and trailing unit words allowed), or None."""
    match = _STEP_RE.match(text)
    if match is None:
        return None
    a, op, b, c = match.groups()
    return float(a), _OPS[op], float(b), float(c)
