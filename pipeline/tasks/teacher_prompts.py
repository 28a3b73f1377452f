"""What the self-teacher sees: context kinds and prompt layouts.

A *context kind* is the feedback shown to the teacher (its body, from a versioned template):

- ``reference``: the problem's reference solution;
- ``critique``: the critic's step-aligned rewrite of this very trace (StepAlignFB);
- ``critique_full_quote``: the whole earlier attempt, wrong step included, plus which step is wrong;
- ``critique_labels_only``: which step is wrong and its correction, without the trace.

A *layout* places that body in the teacher's chat:

- ``inline``: the solver's own user turn (instruction, one-shot example, question) with the context
  and a closing line inserted before its final ``Solution:`` cue;
- ``anchor``: the layout of SDPO, OPSD and TRL: the format instruction and the question, then the
  context, then an explicit instruction to solve the original question; no one-shot example, and a
  fresh assistant turn follows;
- ``anchor_example``: ``anchor`` with the solver's one-shot example kept after the instruction;
- ``multi_turn``: the solver's user turn, its earlier attempt as the assistant's turn, and the
  context with the closing line as the next user turn.

Every kind renders in every layout. Used by ``build_teacher_contexts`` (one layout, the arms'
teachers) and ``check_premise`` (every configured layout, to measure which one the model can use).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from pipeline.config import ContextTemplates, PromptConfig
from pipeline.tasks.solver_format import instruction_block, prompt_opens_thinking, render_chat

CONTEXT_KINDS = ("reference", "critique", "critique_full_quote", "critique_labels_only")
LAYOUTS = ("inline", "anchor", "anchor_example", "multi_turn")
_SOLUTION_CUE = "\nSolution:"

Message = dict[str, str]


def join_feedback(traces: pl.DataFrame, critiques: pl.DataFrame, problems: pl.DataFrame) -> pl.DataFrame:
    """Traces with their critique and their problem's question, reference and answer."""
    return traces.join(
        critiques.select("trace_id", "critique_text", "critique_steps", "first_wrong_step", "parse_error"),
        on="trace_id",
        how="left",
    ).join(problems.select("problem_id", "question", "reference", "answer"), on="problem_id", how="left")


def insert_context(user_message: str, context: str) -> str:
    """The solver's user turn with ``context`` inserted before its final ``Solution:`` cue."""
    cut = user_message.rfind(_SOLUTION_CUE)
    if cut < 0:
        return f"{user_message}\n\n{context}"
    return f"{user_message[:cut]}\n\n{context}{user_message[cut:]}"


def verdict_line(row: Mapping[str, Any], templates: ContextTemplates) -> str:
    """'Step k is wrong; it should be ...' from a critique row, or the all-correct line."""
    k = row["first_wrong_step"]
    if k is None or k > len(row["critique_steps"] or []):
        return templates.all_correct
    return templates.wrong_step.format(step=k, correction=row["critique_steps"][k - 1])


def context_body(kind: str, row: Mapping[str, Any], templates: ContextTemplates) -> str | None:
    """The context of one kind for one joined trace/critique/problem row (None: nothing to show).

    ``row`` holds ``reference``, ``completion_text`` and the critique's ``critique_text``,
    ``critique_steps``, ``first_wrong_step`` and ``parse_error``.
    """
    if kind == "reference":
        return templates.reference.format(reference=row["reference"]) if row["reference"] else None
    if kind == "critique":
        return templates.critique.format(critique=row["critique_text"]) if row["critique_text"] else None
    if kind not in CONTEXT_KINDS:
        raise ValueError(f"unknown context kind {kind!r}; expected one of {CONTEXT_KINDS}")
    if row["critique_text"] is None and row["parse_error"] is not None:
        return None  # the critic gave nothing usable to label
    if kind == "critique_full_quote":
        attempt = row["completion_text"].strip()
        return templates.critique_full_quote.format(attempt=attempt, verdict=verdict_line(row, templates))
    return templates.critique_labels_only.format(verdict=verdict_line(row, templates))


def teacher_messages(
    layout: str,
    *,
    context: str,
    row: Mapping[str, Any],
    templates: ContextTemplates,
    prompt: PromptConfig,
) -> list[Message]:
    """The teacher's chat (before the generation prompt) for one trace in one layout.

    ``row`` holds the problem's ``question``, the solver's ``user_message`` and its attempt
    ``completion_text``; ``context`` is the body from :func:`context_body`.
    """
    closing = getattr(templates.closing, layout, None) if layout in LAYOUTS else None
    if closing is None:
        raise ValueError(f"unknown teacher layout {layout!r}; expected one of {LAYOUTS}")
    if layout == "inline":
        return [{"role": "user", "content": insert_context(row["user_message"], f"{context}\n\n{closing}")}]
    if layout == "multi_turn":
        return [
            {"role": "user", "content": row["user_message"]},
            {"role": "assistant", "content": row["completion_text"].strip()},
            {"role": "user", "content": f"{context}\n\n{closing}"},
        ]
    example = (prompt.example_question, prompt.example_solution) if layout == "anchor_example" else (None, None)
    head = instruction_block(prompt.instruction, *example)
    return [{"role": "user", "content": f"{head}\n\nQuestion: {row['question']}\n\n{context}\n\n{closing}"}]


def render_teacher_chat(tokenizer: Any, messages: list[Message], *, enable_thinking: bool) -> str:
    """The teacher's chat, ending where the student's completion is scored (or a re-solve sampled).

    With thinking on, a Qwen3-style template ends at the assistant turn, where the model writes
    ``<think>`` first, while a non-thinking student's response starts with its first step after an
    empty think block: the teacher would score that step against the ``<think>`` it expects, a
    large and spurious disagreement on every trace's first tokens. As OPSD's maintainer advises
    (siyan-zhao/OPSD#10), the teacher prompt then ends with the think block opened, so the teacher
    reads the student's response as its own reasoning. A template without a thinking mode, or
    thinking off, is left as it is.
    """
    text = render_chat(tokenizer, messages, enable_thinking=enable_thinking)
    if not enable_thinking or prompt_opens_thinking(text):
        return text
    # a thinking-mode template closes an empty think block after the same prompt when thinking is off
    without = render_chat(tokenizer, messages, enable_thinking=False)
    has_thinking_mode = without.startswith(text) and "<think>" in without[len(text) :]
    return f"{text}<think>\n" if has_thinking_mode else text
