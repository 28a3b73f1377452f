"""The solver's step-tagged output format, its prompt, and the parser that reads it back.

A response looks like::

    <step_1> 64 - 15 = 49 </step_1>
    <step_2> 49 * 3 = 147 </step_2>
    <answer> 147 </answer>

or, for free-form math, prose steps and a boxed final answer::

    <step_1> The two roots sum to $-b/a = 5$. </step_1>
    <step_2> So the requested sum is $5 + 2 = 7$. </step_2>
    \\boxed{7}

Steps are numbered from 1 in order; each step's character span covers its whole tag, so per-token
analyses can map tokens to steps. The final answer is the first ``<answer>`` tag, or, without one,
the last ``\\boxed{...}``. The prompt is a one-shot example on a different problem: example
numbers inside a bare format instruction get copied into answers by small solvers (premise check).
Thinking models' ``<think>`` blocks are removed with :func:`strip_thinking`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipeline.config import PromptConfig

STEP_RE = re.compile(r"<step_(\d+)>(.*?)</step_\1>", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

PROMPT_VERSION = "solver-v2"
INSTRUCTION = (
    "Solve the math word problem. Use one arithmetic operation per step, each step on its own line "
    "in the form <step_k> a op b = c </step_k> where op is one of + - * /. After the steps, write the "
    "final line <answer> N </answer> where N is the final number. Write nothing else."
)
EXAMPLE_QUESTION = (
    "A market has 64 melons. Then 15 of the melons are sold. Each of the melons is then cut into "
    "3 slices. How many slices are there at the end?"
)
EXAMPLE_SOLUTION = "<step_1> 64 - 15 = 49 </step_1>\n<step_2> 49 * 3 = 147 </step_2>\n<answer> 147 </answer>"


@dataclass(frozen=True)
class StepSpan:
    """One ``<step_k>`` tag: its number, inner text and character span ``[start, end)``."""

    number: int
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class ParsedResponse:
    steps: tuple[StepSpan, ...]
    answer: str | None
    answer_span: tuple[int, int] | None

    @property
    def format_ok(self) -> bool:
        """At least one step, numbered 1..n in order, and an answer tag after the last step."""
        numbered = [s.number for s in self.steps] == list(range(1, len(self.steps) + 1))
        answer_last = self.answer_span is not None and (not self.steps or self.answer_span[0] >= self.steps[-1].end)
        return bool(self.steps) and numbered and self.answer is not None and answer_last


def last_boxed(text: str) -> tuple[str, int, int] | None:
    """The content and span ``[start, end)`` of the last ``\\boxed{...}`` (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    while start >= 0:
        depth = 0
        for i in range(start + len("\\boxed"), len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start + len("\\boxed{") : i].strip(), start, i + 1
        start = text.rfind("\\boxed{", 0, start)  # unclosed: try an earlier one
    return None


def parse_response(text: str) -> ParsedResponse:
    """Split a response into step spans and extract the answer: the first answer tag, else the last boxed."""
    steps = tuple(StepSpan(int(m.group(1)), m.group(2).strip(), m.start(), m.end()) for m in STEP_RE.finditer(text))
    match = ANSWER_RE.search(text)
    if match is not None:
        return ParsedResponse(steps, match.group(1).strip(), (match.start(), match.end()))
    boxed = last_boxed(text)
    if boxed is None or not boxed[0]:
        return ParsedResponse(steps, None, None)
    return ParsedResponse(steps, boxed[0], (boxed[1], boxed[2]))


def strip_thinking(text: str, *, opened: bool = False) -> tuple[str | None, str | None]:
    """(visible text, None), or (None, "think_only") when the output never left its thinking.

    Everything up to the last ``</think>`` is thinking. ``opened``: the prompt itself ended inside
    a ``<think>`` block (QwQ-32B's chat template opens it), so output without ``</think>`` is all
    thinking. Qwen3 with thinking on writes ``<think>`` itself.
    """
    if "</think>" in text:
        visible = text[text.rindex("</think>") + len("</think>") :].strip()
        return (None, "think_only") if "<think>" in visible else (visible, None)
    if opened or "<think>" in text:
        return None, "think_only"
    return text.strip(), None


def prompt_opens_thinking(prompt_text: str) -> bool:
    """Whether a rendered chat prompt ends inside an open ``<think>`` block."""
    tail = prompt_text.rstrip()
    return tail.endswith("<think>")


def render_solution(steps: Sequence[str], answer: str) -> str:
    """Write step texts and an answer in the solver's format."""
    lines = [f"<step_{i}> {text.strip()} </step_{i}>" for i, text in enumerate(steps, start=1)]
    return "\n".join([*lines, f"<answer> {answer.strip()} </answer>"])


def instruction_block(
    instruction: str, example_question: str | None = None, example_solution: str | None = None
) -> str:
    """The format instruction, followed by the one-shot example when one is given."""
    if example_question is None or example_solution is None:
        return instruction
    return f"{instruction}\n\nExample:\nQuestion: {example_question}\nSolution:\n{example_solution}"


def solver_user_message(
    question: str,
    *,
    instruction: str = INSTRUCTION,
    example_question: str = EXAMPLE_QUESTION,
    example_solution: str = EXAMPLE_SOLUTION,
) -> str:
    """The user turn that asks the solver for a step-tagged solution."""
    return f"{instruction_block(instruction, example_question, example_solution)}\n\nQuestion: {question}\nSolution:"


_PLACEHOLDER_RE = re.compile(r"\{(\w+)\}")


def fill_template(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` of ``values`` filled in; every other brace stays as written.

    Unlike ``str.format``, LaTeX in a prompt (``\\boxed{answer}``) needs no escaping.
    """
    return _PLACEHOLDER_RE.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)


def render_chat_prompt(tokenizer: Any, user_message: str, *, enable_thinking: bool = False) -> str:
    """Apply the model's chat template to one user turn, ending with the assistant's generation prompt."""
    return render_chat(tokenizer, [{"role": "user", "content": user_message}], enable_thinking=enable_thinking)


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]], *, enable_thinking: bool = False) -> str:
    """Apply the model's chat template to ``messages``, ending with the assistant's generation prompt."""
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )


def build_prompts(problems: pl.DataFrame, tokenizer: Any, prompt: PromptConfig) -> pl.DataFrame:
    """Chat-formatted solver prompt text and token ids, one row per problem.

    Columns: ``problem_id``, ``answer``, ``verifier`` (from ``problems``), ``user_message``,
    ``prompt`` and ``prompt_token_ids``.
    """
    messages = [
        solver_user_message(
            q,
            instruction=prompt.instruction,
            example_question=prompt.example_question,
            example_solution=prompt.example_solution,
        )
        for q in problems["question"]
    ]
    texts = [render_chat_prompt(tokenizer, m, enable_thinking=prompt.enable_thinking) for m in messages]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return problems.select("problem_id", "answer", "verifier").with_columns(
        user_message=pl.Series(messages, dtype=pl.String),
        prompt=pl.Series(texts, dtype=pl.String),
        prompt_token_ids=pl.Series(ids, dtype=pl.List(pl.Int32)),
    )
