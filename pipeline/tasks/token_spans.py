"""Where each completion token sits in a step-tagged response.

:func:`token_char_spans` maps token ids to character spans of the decoded completion;
:func:`categorise_tokens` puts each token in one category relative to the critic's first wrong step:
``pre_error``, ``first_wrong``, ``after_error`` or ``answer``. The advantage analysis, the premise
check and the distillation masks all read these categories; :func:`format_tokens` marks the tokens
that write the format's tags.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipeline.tasks.solver_format import parse_response

# The step format's markup: <step_k>, </step_k>, <answer>, </answer>.
FORMAT_TAG_RE = re.compile(r"</?step_\d+>|</?answer>")

CATEGORIES = ("pre_error", "first_wrong", "after_error", "answer")
_INCOMPLETE = "\ufffd"  # what a decoder yields for a partial UTF-8 character


def _walk_spans(n: int, text: str, chunk: Callable[[int, int, int], str | None]) -> list[tuple[int, int]] | None:
    """Spans from ``chunk(g, i, pos)``, the text of tokens ``g..i`` that starts at ``text[pos]``.

    Tokens that end inside a character wait for the one that completes it; the run's text goes to
    its last token and the others get an empty span where it starts. None when ``text`` is not matched.
    """
    spans: list[tuple[int, int]] = []
    pos = g = 0
    for i in range(n):
        piece = chunk(g, i, pos)
        if piece is not None and piece.endswith(_INCOMPLETE) and i + 1 < n:
            continue
        if piece is None or not text.startswith(piece, pos):
            return None
        spans += [(pos, pos)] * (i - g) + [(pos, pos + len(piece))]
        pos, g = pos + len(piece), i + 1
    return spans if pos == len(text) else None


def token_char_spans(token_ids: Sequence[int], text: str, tokenizer: Any) -> list[tuple[int, int]]:
    """Character span ``[start, end)`` of each token in ``text``, the decode of ``token_ids``.

    Special tokens decode to nothing (empty spans). Runs of tokens are decoded alone (linear time);
    when that does not reproduce ``text`` (a tokenizer that decodes a word differently out of
    context), every prefix is decoded instead. Raises ValueError when neither reproduces ``text``.
    """
    ids = list(token_ids)

    def decode(part: list[int]) -> str:
        return tokenizer.decode(part, skip_special_tokens=True)

    def in_context(g: int, i: int, pos: int) -> str | None:
        full = decode(ids[: i + 1])
        return full[pos:] if full.startswith(text[:pos]) else None

    spans = _walk_spans(len(ids), text, lambda g, i, pos: decode(ids[g : i + 1]))
    spans = spans if spans is not None else _walk_spans(len(ids), text, in_context)
    if spans is None:
        decoded = decode(ids)
        at = next((k for k, (a, b) in enumerate(zip(decoded, text)) if a != b), min(len(decoded), len(text)))
        raise ValueError(
            f"the token ids do not decode to the completion text (first difference at character {at}: "
            f"decoded {decoded[at : at + 20]!r}, text {text[at : at + 20]!r}); was it sampled with another tokenizer?"
        )
    return spans


def categorise_tokens(
    spans: Sequence[tuple[int, int]],
    text: str,
    step_spans: Sequence[Mapping[str, int]],
    first_wrong_step: int | None,
) -> list[str]:
    """The category of each token from its character span in ``text``.

    ``answer``: overlaps the first ``<answer>`` tag or comes after it (none without the tag);
    ``first_wrong``: overlaps step ``first_wrong_step`` (1-based position in ``step_spans``);
    ``after_error``: after that step; ``pre_error``: everything else (all non-answer tokens when no
    step is wrong or the wrong step is not among ``step_spans``). An empty span counts as the
    character at its start, which its token helps to write.
    """
    answer = parse_response(text).answer_span
    wrong = step_spans[first_wrong_step - 1] if first_wrong_step and first_wrong_step <= len(step_spans) else None
    out = []
    for start, end in spans:
        end = max(end, start + 1)
        if answer is not None and end > answer[0]:
            out.append("answer")
        elif wrong is not None and start < wrong["end"] and end > wrong["start"]:
            out.append("first_wrong")
        elif wrong is not None and start >= wrong["end"]:
            out.append("after_error")
        else:
            out.append("pre_error")
    return out


def format_tokens(spans: Sequence[tuple[int, int]], text: str) -> list[bool]:
    """Whether each token (character span in ``text``) overlaps a format tag (``<step_k>``,
    ``</step_k>``, ``<answer>``, ``</answer>``). An empty span counts as the character at its start."""
    tags = [(m.start(), m.end()) for m in FORMAT_TAG_RE.finditer(text)]
    return [any(start < b and max(end, start + 1) > a for a, b in tags) for start, end in spans]
