"""Stage ``query_critic``: a frozen critic rewrites each trace, aligned to the solver's own steps.

The rewrite follows the paper's four cases:

- A ``correct``: reproduce the trace;
- B ``missing_justification`` (right answer, steps missing): insert the missing steps;
- C ``truncated`` (ran out of tokens): keep the correct steps, condense and finish;
- D ``wrong``: copy the steps before the first error verbatim, write the corrected step fresh in the
  solver's format, and continue to the right answer.

Backends: ``oracle`` (exact and programmatic, for ``arith``, which knows every step's true value)
and ``llm`` (a frozen critic model through an engine, greedy, its ``<think>`` stripped). Steps may be
``a op b = c`` or free-form prose. An unusable LLM output (thinking only, empty, no steps, no answer,
or, with ``require_correct_rewrite``, a final answer that is not the ground truth) is recorded with
``parse_error`` and handled by the configured fallback; it never crashes the stage. With the llm
backend, traces of arms that use no rewrite (GRPO, reference) get their verdict and reward only
(``critic`` = ``reward_only``), without a critic call.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.artifacts import CRITIQUES_SCHEMA, PROBLEMS_SCHEMA, TRACES_SCHEMA, read_artifact, write_artifact
from pipeline.config import CriticConfig, LLMCriticConfig
from pipeline.engines import SamplingConfig, engine_from_config, load_tokenizer, timing_stats
from pipeline.tasks.arith import parse_arith_step
from pipeline.tasks.critique_qa import alignment_score, answer_leak, first_changed_step
from pipeline.tasks.solver_format import (
    StepSpan,
    fill_template,
    parse_response,
    prompt_opens_thinking,
    render_chat_prompt,
    strip_thinking,
)
from pipeline.tasks.verify import verify_answer

log = logging.getLogger(__name__)
STAGE = "query_critic"
ORACLE_VERSION = "oracle-v1"


@dataclass(frozen=True)
class Review:
    """What the critic says about one trace."""

    verdict: str
    first_wrong_step: int | None  # 1-based, among the solver's steps
    step_verdicts: list[bool]
    critique_steps: list[str]
    critique_text: str | None
    parse_error: str | None = None
    fallback: str | None = None


def step_matches(text: str, truth: dict[str, Any]) -> bool:
    """Whether a solver step is the ground-truth step (commutation allowed for + and *)."""
    parsed = parse_arith_step(text)
    if parsed is None:
        return False
    a, op, b, c = parsed
    same = (a, b) == (truth["a"], truth["b"]) or (op in "+*" and (a, b) == (truth["b"], truth["a"]))
    return op == truth["op"] and same and c == truth["result"]


def render_step(number: int, truth: dict[str, Any]) -> str:
    return f"<step_{number}> {truth['a']} {truth['op']} {truth['b']} = {truth['result']} </step_{number}>"


def _finish(lines: Sequence[str], answer: str) -> tuple[list[str], str]:
    """(step texts, rewrite text) from step-tag lines followed by the answer."""
    steps = [parse_response(line).steps[0].text for line in lines]
    return steps, "\n".join([*lines, f"<answer> {answer} </answer>"])


def _assemble(kept: Sequence[str], fresh: Sequence[dict[str, Any]], answer: str) -> tuple[list[str], str]:
    """Verbatim kept step tags, then fresh ground-truth steps numbered on, then the answer."""
    return _finish(list(kept) + [render_step(len(kept) + i + 1, t) for i, t in enumerate(fresh)], answer)


def oracle_review(
    completion: str, *, finish_reason: str, is_correct: bool, truth_steps: Sequence[dict[str, Any]], answer: str
) -> Review:
    """The exact critic for tasks with a ground-truth chain (``arith``)."""
    if not truth_steps:
        raise ValueError(
            "the oracle critic needs each problem's ground-truth steps (task arith); use critic.backend: llm"
        )
    spans: tuple[StepSpan, ...] = parse_response(completion).steps
    texts = [s.text for s in spans]
    verbatim = [completion[s.start : s.end] for s in spans]
    first_error = next((i for i, t in enumerate(truth_steps) if i >= len(texts) or not step_matches(texts[i], t)), None)
    if first_error is None and len(texts) > len(truth_steps):
        first_error = len(truth_steps)  # an extra step
    n_ok = len(truth_steps) if first_error is None else first_error
    wrong_written = first_error is not None and first_error < len(texts)
    first_wrong = first_error + 1 if wrong_written else None

    if is_correct and finish_reason != "length" and first_error is not None:
        # B: right answer, justification missing: keep every solver step that matches the chain in
        # order, insert the missing ones fresh.
        kept_lines, used, cursor = [], [False] * len(texts), 0
        for number, truth in enumerate(truth_steps, start=1):
            if cursor < len(texts) and step_matches(texts[cursor], truth):
                kept_lines.append(verbatim[cursor].replace(f"step_{spans[cursor].number}>", f"step_{number}>"))
                used[cursor] = True
                cursor += 1
            else:
                kept_lines.append(render_step(number, truth))
        steps, text = _finish(kept_lines, answer)
        first_missing = next((i + 1 for i, u in enumerate(used) if not u), None)
        return Review("missing_justification", first_missing, used, steps, text)

    steps, text = _assemble(verbatim[:n_ok], truth_steps[n_ok:], answer)
    step_verdicts = [i < n_ok for i in range(len(texts))]
    if finish_reason == "length":
        verdict = "truncated"
    elif is_correct:
        verdict = "correct"
    else:
        verdict = "wrong"
    return Review(verdict, first_wrong, step_verdicts, steps, text)


def parse_critic_output(raw: str, *, think_opened: bool = False) -> tuple[list[str], str | None, str | None]:
    """(rewrite steps, rewrite text, parse_error) from a critic model's raw output.

    The thinking is stripped first (``think_opened``: the chat template opened it in the prompt).
    Errors: ``think_only`` (the thinking never closed), ``empty``, ``no_steps``, ``no_answer``.
    """
    text, error = strip_thinking(raw, opened=think_opened)
    if error is not None or text is None:
        return [], None, error or "think_only"
    if not text:
        return [], None, "empty"
    parsed = parse_response(text)
    if not parsed.steps:
        return [], None, "no_steps"
    if parsed.answer is None:
        return [], None, "no_answer"
    assert parsed.answer_span is not None
    return [s.text for s in parsed.steps], text[parsed.steps[0].start : parsed.answer_span[1]], None


def _verdict_without_rewrite(finish_reason: str, is_correct: bool) -> str:
    return "truncated" if finish_reason == "length" else ("correct" if is_correct else "wrong")


def llm_review(
    raw_output: str,
    *,
    completion: str,
    finish_reason: str,
    is_correct: bool,
    fallback: str,
    reference: str,
    answer: str | None = None,
    verifier: str = "exact",
    think_opened: bool = False,
) -> Review:
    """Turn one critic-model output into a review; unusable output falls back by policy.

    With ``answer`` given, a rewrite whose final answer is not the ground truth is unusable too
    (``wrong_answer``): the critic was shown the answer, and a teacher context that ends wrong
    teaches the wrong answer.
    """
    solver = [s.text for s in parse_response(completion).steps]
    steps, text, error = parse_critic_output(raw_output, think_opened=think_opened)
    if error is None and answer is not None:
        assert text is not None
        if not verify_answer(parse_response(text).answer, answer, method=verifier):
            error = "wrong_answer"
    if error is None:
        changed = first_changed_step(solver, steps)
        if finish_reason == "length":
            verdict = "truncated"
        elif changed is None:  # every step kept: right only if the trace was (else the critic found no error)
            verdict = "correct" if is_correct else "wrong"
        elif is_correct:
            verdict = "missing_justification"
        else:
            verdict = "wrong"
        first_wrong = None if verdict == "correct" or changed is None or changed > len(solver) else changed
        verdicts = [first_wrong is None or i + 1 < first_wrong for i in range(len(solver))]
        return Review(verdict, first_wrong, verdicts, steps, text)
    return Review(
        _verdict_without_rewrite(finish_reason, is_correct),
        None,
        [],
        [],
        reference if fallback == "reference" else None,
        parse_error=error,
        fallback=fallback,
    )


def critic_prompts(rows: pl.DataFrame, tokenizer: Any, cfg: LLMCriticConfig) -> tuple[list[list[int]], bool]:
    """Chat-formatted critic prompts (question, step-tagged trace, ground truth) as token ids.

    Also returns whether the chat template opens a ``<think>`` block in the prompt itself (QwQ's
    does), so that the parser knows the output starts inside the thinking.
    """
    prompts, opened = [], False
    for row in rows.iter_rows(named=True):
        user = fill_template(
            cfg.prompt_template,
            question=row["question"],
            trace=row["completion_text"].strip(),
            ground_truth=row["answer"],
        )
        text = render_chat_prompt(tokenizer, user, enable_thinking=cfg.enable_thinking)
        opened = prompt_opens_thinking(text)
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return prompts, opened


def review_traces(
    joined: pl.DataFrame,
    *,
    cfg: CriticConfig,
    critic_outputs: Sequence[str] | None = None,
    critic_model: str = "",
    think_opened: bool = False,
    rewrite: bool = True,
) -> pl.DataFrame:
    """The critiques frame for traces joined with their problems; the pure core of the stage.

    ``rewrite=False`` (llm backend only): the traces' arm needs no rewrite (GRPO uses the reward, the
    reference arm the reference), so no critic output is read and each row carries the verdict and
    reward alone, with ``critic`` = ``reward_only``.
    """
    rows = []
    reward_only = cfg.backend == "llm" and not rewrite
    for i, row in enumerate(joined.iter_rows(named=True)):
        verifier = row.get("verifier") or "exact"
        if cfg.backend == "oracle":
            review = oracle_review(
                row["completion_text"],
                finish_reason=row["finish_reason"],
                is_correct=row["is_correct"],
                truth_steps=row["steps"],
                answer=row["answer"],
            )
        elif reward_only:
            review = Review(_verdict_without_rewrite(row["finish_reason"], row["is_correct"]), None, [], [], None)
        else:
            assert critic_outputs is not None
            review = llm_review(
                critic_outputs[i],
                completion=row["completion_text"],
                finish_reason=row["finish_reason"],
                is_correct=row["is_correct"],
                fallback=cfg.fallback,
                reference=row["reference"],
                answer=row["answer"] if cfg.require_correct_rewrite else None,
                verifier=verifier,
                think_opened=think_opened,
            )
        solver = [s.text for s in parse_response(row["completion_text"]).steps]
        rewritten = review.parse_error is None and review.critique_text is not None
        rewrite_answer = parse_response(review.critique_text).answer if rewritten else None
        rows.append(
            {
                "trace_id": row["trace_id"],
                "problem_id": row["problem_id"],
                "condition": row["condition"],
                "round": row["round"],
                "verdict": review.verdict,
                "reward": 1.0 if row["is_correct"] else 0.0,
                "first_wrong_step": review.first_wrong_step,
                "step_verdicts": review.step_verdicts,
                "critique_text": review.critique_text,
                "critique_steps": review.critique_steps,
                "parse_error": review.parse_error,
                "fallback": review.fallback,
                "critic": "reward_only" if reward_only else cfg.backend,
                "critic_model": critic_model if cfg.backend == "llm" else "",
                "prompt_version": cfg.llm.prompt_version if cfg.backend == "llm" and cfg.llm else ORACLE_VERSION,
                "alignment_score": alignment_score(solver, review.critique_steps, review.first_wrong_step)
                if rewritten
                else None,
                "first_changed_step": first_changed_step(solver, review.critique_steps) if rewritten else None,
                "answer_leak": answer_leak(review.critique_text or "", row["answer"]),
                "rewrite_correct": verify_answer(rewrite_answer, row["answer"], method=verifier) if rewritten else None,
                "critic_output": critic_outputs[i] if cfg.backend == "llm" and not reward_only else None,
            }
        )
    return pl.DataFrame(rows, schema=CRITIQUES_SCHEMA)


def critique_stats(critiques: pl.DataFrame) -> dict[str, Any]:
    """The QA figures the log, the metadata and the report show for one critiques frame."""
    rewritten = critiques.filter(pl.col("critic") != "reward_only")
    usable = rewritten.filter(pl.col("parse_error").is_null())
    n = rewritten.height
    errors = rewritten["parse_error"].drop_nulls()
    return {
        "traces": critiques.height,
        "reviewed": n,
        "verdicts": dict(critiques.group_by("verdict").len().sort("verdict").iter_rows()),
        "parse_errors": int(errors.len()),
        "parse_error_kinds": dict(errors.value_counts().sort(errors.name).iter_rows()) if errors.len() else {},
        "parse_rate": round(1 - errors.len() / n, 4) if n else None,
        "fallback_rate": round(int(rewritten["fallback"].is_not_null().sum()) / n, 4) if n else None,
        "mean_alignment": rewritten["alignment_score"].mean(),
        # over the critic's usable rewrites: a fallback's context is the reference, not the critic's
        "leak_rate": usable["answer_leak"].mean() if usable.height else None,
        "rewrite_correct_rate": rewritten["rewrite_correct"].mean(),
    }


def oracle_agreement(llm: pl.DataFrame, oracle: pl.DataFrame) -> dict[str, Any]:
    """How an LLM critic's usable reviews compare with the exact oracle's on the same ``arith`` traces.

    ``verdict``: same verdict; ``first_wrong_step``: same located first wrong step (both None counts);
    ``over_traces_with_error``: the same, among traces the oracle finds a wrong step in.
    """
    pairs = llm.filter(pl.col("parse_error").is_null() & (pl.col("critic") == "llm")).join(
        oracle.select("trace_id", oracle_verdict="verdict", oracle_step="first_wrong_step"), on="trace_id"
    )
    if pairs.height == 0:
        return {"compared": 0, "verdict": None, "first_wrong_step": None, "over_traces_with_error": None}
    same_step = pl.col("first_wrong_step").eq_missing(pl.col("oracle_step"))
    with_error = pairs.filter(pl.col("oracle_step").is_not_null())
    return {
        "compared": pairs.height,
        "verdict": round(float((pairs["verdict"] == pairs["oracle_verdict"]).mean()), 4),
        "first_wrong_step": round(float(pairs.select(same_step.mean()).item()), 4),
        "over_traces_with_error": round(float(with_error.select(same_step.mean()).item()), 4)
        if with_error.height
        else None,
    }


def query_critic(
    *,
    traces: Path,
    problems: Path,
    out: Path,
    cfg: CriticConfig,
    critic_model: Path | None = None,
    rewrite: bool = True,
) -> dict[str, Any]:
    """Write one critique row per trace in ``traces`` (``rewrite``: see :func:`review_traces`)."""
    trace_frame = read_artifact(traces, schema=TRACES_SCHEMA, artifact="traces")
    problem_frame = read_artifact(problems, schema=PROBLEMS_SCHEMA, artifact="problems")
    joined = trace_frame.join(
        problem_frame.select("problem_id", "question", "answer", "reference", "verifier", "steps"),
        on="problem_id",
        how="left",
    )
    if joined["question"].null_count():
        raise ValueError(f"{traces}: some traces' problems are not in {problems}")
    outputs, model_name, startup, seconds, think_opened, generated = None, "", 0.0, 0.0, False, 0
    if cfg.backend == "llm" and rewrite and joined.height:
        assert critic_model is not None and cfg.llm is not None
        model_name = critic_model.name
        prompts, think_opened = critic_prompts(joined, load_tokenizer(critic_model), cfg.llm)
        engine = engine_from_config(cfg.llm.engine, critic_model, seed=0, where="critic.llm.engine")
        try:
            start = time.perf_counter()
            completions = engine.generate(prompts, SamplingConfig(n=1, temperature=0.0, max_tokens=cfg.llm.max_tokens))
            seconds = time.perf_counter() - start
        finally:
            engine.close()
        outputs = [samples[0].text for samples in completions]
        generated = sum(len(samples[0].token_ids) for samples in completions)
        startup = engine.startup_s
    elif cfg.backend == "llm":
        model_name = critic_model.name if critic_model is not None else ""
    critiques = review_traces(
        joined,
        cfg=cfg,
        critic_outputs=outputs,
        critic_model=model_name,
        think_opened=think_opened,
        rewrite=rewrite,
    )
    stats = {
        **critique_stats(critiques),
        **timing_stats(startup, seconds, generated),
        "generated_tokens": generated,
    }
    write_artifact(
        critiques,
        out,
        schema=CRITIQUES_SCHEMA,
        artifact="critiques",
        stage=STAGE,
        params={**dataclasses.asdict(cfg), "rewrite": rewrite, "stats": stats},
        model=model_name,
    )
    log.info("critiques: %s", stats)
    return stats
