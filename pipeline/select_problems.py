"""Stage ``select_problems``: keep the candidate problems that are hard but learnable.

The paper keeps a problem only where (1) the base solver is weak, Avg@16 < 5/16, (2) the critic can
solve it, and (3) the solver follows the step format. Three jobs, so that editing a threshold reruns
no sampling:

- ``select_problems_solver``: the base solver samples every candidate (train, eval, dev) n times with
  the solver prompt; every sample is stored;
- ``select_problems_critic`` (LLM critic only): the critic answers every candidate itself, greedy,
  thinking stripped; the oracle needs no job, as it knows every ``arith`` chain;
- ``select_problems``: the pure filter over those tables. It writes the kept train, eval and dev sets
  (same schema as ``prepare_problems``'), every dropped candidate with the filters it fails, and a
  summary the report shows.

The core (:func:`problem_table`, :func:`apply_filters`, :func:`summarise_selection`) is pure.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.artifacts import (
    CRITIC_ANSWERS_SCHEMA,
    DROPPED_SCHEMA,
    PROBLEMS_SCHEMA,
    SELECTION_SAMPLES_SCHEMA,
    read_artifact,
    write_artifact,
    write_json,
)
from pipeline.config import CriticSolveConfig, PromptConfig, SelectionFilters, SelectionSamplingConfig
from pipeline.engines import Completion, SamplingConfig, load_tokenizer, sample_model, timing_stats
from pipeline.tasks.solver_format import (
    build_prompts,
    fill_template,
    parse_response,
    prompt_opens_thinking,
    render_chat_prompt,
    strip_thinking,
)
from pipeline.tasks.verify import verify_answer

log = logging.getLogger(__name__)
STAGE = "select_problems"
# Filter names, in the order that picks a dropped problem's primary reason.
FILTERS = ("too_easy", "too_hard", "critic_fails", "format", "over_cap")


# ---------------------------------------------------------------------------------------------
# Pure core.


SPLITS = ("train", "eval", "dev")


def candidates(*splits: pl.DataFrame) -> pl.DataFrame:
    """The candidate splits in one frame (train, eval, dev), each in its file's order."""
    return pl.concat(splits).with_row_index("order")


def problem_table(problems: pl.DataFrame, samples: pl.DataFrame, critic_answers: pl.DataFrame | None) -> pl.DataFrame:
    """Per candidate: its problem columns plus samples, correct, avg, format_rate and critic_correct.

    Without ``critic_answers`` the critic is the oracle: it solves a problem exactly when the problem
    has a ground-truth chain (``arith``).
    """
    per_problem = samples.group_by("problem_id").agg(
        samples=pl.len().cast(pl.Int32),
        correct=pl.col("is_correct").sum().cast(pl.Int32),
        avg=pl.col("is_correct").mean().cast(pl.Float64),
        format_rate=pl.col("format_ok").mean().cast(pl.Float64),
    )
    table = problems.join(per_problem, on="problem_id", how="left")
    if table["samples"].null_count():
        missing = table.filter(pl.col("samples").is_null())["problem_id"].to_list()
        raise ValueError(f"select_problems: no solver samples for {len(missing)} candidates, e.g. {missing[:3]}")
    if critic_answers is None:
        return table.with_columns(critic_correct=pl.col("num_steps") > 0)
    critic = critic_answers.select("problem_id", critic_correct=pl.col("is_correct"))
    return table.join(critic, on="problem_id", how="left").with_columns(pl.col("critic_correct").fill_null(False))


def apply_filters(table: pl.DataFrame, filters: SelectionFilters) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, dropped) from a :func:`problem_table`; each dropped row lists every filter it fails.

    Filters: ``too_easy`` (avg >= max_avg), ``too_hard`` (avg < min_avg), ``critic_fails`` (with
    ``critic_solves``), ``format`` (format_rate < min_format_rate); then ``over_cap``: problems
    that pass but lie beyond the split's cap (n_train / n_eval / n_dev, in candidate order).
    """
    fails = {
        "too_easy": pl.col("avg") >= filters.max_avg,
        "too_hard": pl.col("avg") < filters.min_avg,
        "critic_fails": ~pl.col("critic_correct") if filters.critic_solves else pl.lit(False),
        "format": pl.col("format_rate") < filters.min_format_rate,
    }
    flagged = table.sort("order").with_columns(
        reasons=pl.concat_list([pl.when(test).then(pl.lit(name)).otherwise(None) for name, test in fails.items()])
        .list.drop_nulls()
        .cast(pl.List(pl.String))
    )
    passing = flagged.filter(pl.col("reasons").list.len() == 0)
    caps = {"train": filters.n_train, "eval": filters.n_eval, "dev": filters.n_dev}
    passing = passing.with_columns(rank=pl.int_range(pl.len()).over("split"))
    over = pl.col("rank") >= pl.col("split").replace_strict(caps, default=None, return_dtype=pl.Int64)
    over_cap = passing.filter(over.fill_null(False)).with_columns(reasons=pl.lit(["over_cap"]))
    kept = passing.filter(~over.fill_null(False))
    dropped = pl.concat([flagged.filter(pl.col("reasons").list.len() > 0), over_cap.drop("rank")]).sort("order")
    dropped = dropped.with_columns(reason=pl.col("reasons").list.first())
    return kept.sort("order").select(PROBLEMS_SCHEMA.names()), dropped.select(DROPPED_SCHEMA.names())


def summarise_selection(table: pl.DataFrame, dropped: pl.DataFrame, filters: SelectionFilters) -> dict[str, Any]:
    """Per split: candidates, kept, how many fail each filter (a problem can fail several), the
    primary-reason counts, and the histogram of correct samples per problem."""
    out: dict[str, Any] = {"filters": dataclasses.asdict(filters), "splits": {}}
    for split in SPLITS:
        part = table.filter(pl.col("split") == split)
        gone = dropped.filter(pl.col("split") == split)
        failing = gone.explode("reasons")["reasons"].value_counts()
        first = gone["reason"].value_counts()
        n = int(part["samples"].max() or 0)
        histogram = part["correct"].value_counts()
        out["splits"][split] = {
            "candidates": part.height,
            "kept": part.height - gone.height,
            "dropped": gone.height,
            "failing": {name: _count(failing, "reasons", name) for name in FILTERS},
            "first_reason": {name: _count(first, "reason", name) for name in FILTERS},
            "mean_avg": round(float(part["avg"].mean() or 0.0), 4),
            "correct_histogram": [_count(histogram, "correct", c) for c in range(n + 1)],
        }
    return out


def _count(counts: pl.DataFrame, column: str, value: Any) -> int:
    hit = counts.filter(pl.col(column) == value)
    return int(hit["count"][0]) if hit.height else 0


def solver_samples_frame(problems: pl.DataFrame, completions: Sequence[Sequence[Completion]]) -> pl.DataFrame:
    """One row per solver sample: parse, format and correctness under the problem's verifier."""
    rows = []
    for problem, group in zip(problems.iter_rows(named=True), completions):
        for sample_idx, completion in enumerate(group):
            parsed = parse_response(completion.text)
            rows.append(
                {
                    "problem_id": problem["problem_id"],
                    "split": problem["split"],
                    "sample_idx": sample_idx,
                    "completion_text": completion.text,
                    "num_tokens": len(completion.token_ids),
                    "finish_reason": completion.finish_reason,
                    "extracted_answer": parsed.answer,
                    "format_ok": parsed.format_ok,
                    "is_correct": verify_answer(parsed.answer, problem["answer"], method=problem["verifier"]),
                }
            )
    return pl.DataFrame(rows, schema=SELECTION_SAMPLES_SCHEMA)


def critic_answers_frame(
    problems: pl.DataFrame, completions: Sequence[Completion], *, think_opened: bool
) -> pl.DataFrame:
    """One row per candidate: the critic's answer (the answer tag or last boxed, after its thinking)."""
    rows = []
    for problem, completion in zip(problems.iter_rows(named=True), completions):
        visible, error = strip_thinking(completion.text, opened=think_opened)
        answer = parse_response(visible).answer if visible is not None else None
        if error is None and answer is None:
            error = "no_answer"
        rows.append(
            {
                "problem_id": problem["problem_id"],
                "split": problem["split"],
                "critic_output": completion.text,
                "num_tokens": len(completion.token_ids),
                "finish_reason": completion.finish_reason,
                "parse_error": error,
                "extracted_answer": answer,
                "is_correct": verify_answer(answer, problem["answer"], method=problem["verifier"]),
            }
        )
    return pl.DataFrame(rows, schema=CRITIC_ANSWERS_SCHEMA)


# ---------------------------------------------------------------------------------------------
# Runners: read and write artifacts.


def _read_candidates(*paths: Path) -> pl.DataFrame:
    return candidates(*(read_artifact(path, schema=PROBLEMS_SCHEMA, artifact="problems") for path in paths))


def sample_solver(
    *,
    train: Path,
    eval: Path,
    dev: Path,
    model: Path,
    out: Path,
    prompt: PromptConfig,
    cfg: SelectionSamplingConfig,
) -> dict[str, Any]:
    """``select_problems_solver``: n samples of the base solver per candidate, stored."""
    problems = _read_candidates(train, eval, dev)
    prompts = build_prompts(problems, load_tokenizer(model), prompt)
    sampling = SamplingConfig(
        n=cfg.samples_per_problem, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens
    )
    completions, startup, seconds = sample_model(
        cfg.engine,
        model,
        prompts["prompt_token_ids"].to_list(),
        sampling,
        seed=cfg.seed,
        where="select_problems.solver.engine",
    )
    samples = solver_samples_frame(problems, completions)
    tokens = int(samples["num_tokens"].sum())
    stats = {
        "candidates": problems.height,
        "samples": samples.height,
        "accuracy": round(float(samples["is_correct"].mean() or 0.0), 4),
        "format_rate": round(float(samples["format_ok"].mean() or 0.0), 4),
        **timing_stats(startup, seconds, tokens),
    }
    write_artifact(
        samples,
        out,
        schema=SELECTION_SAMPLES_SCHEMA,
        artifact="selection_samples",
        stage=STAGE,
        params={"solver": dataclasses.asdict(cfg), "prompt": dataclasses.asdict(prompt), "stats": stats},
        model=model.name,
    )
    log.info("select_problems solver samples: %s", stats)
    return stats


def critic_prompts(problems: pl.DataFrame, tokenizer: Any, cfg: CriticSolveConfig) -> tuple[list[list[int]], bool]:
    """The critic's solve prompts as token ids, and whether its template opens a <think> block."""
    texts = [
        render_chat_prompt(
            tokenizer, fill_template(cfg.prompt_template, question=q), enable_thinking=cfg.enable_thinking
        )
        for q in problems["question"]
    ]
    opened = bool(texts) and prompt_opens_thinking(texts[0])
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], opened


def sample_critic(
    *, train: Path, eval: Path, dev: Path, model: Path, out: Path, cfg: CriticSolveConfig
) -> dict[str, Any]:
    """``select_problems_critic``: the critic's own greedy answer to every candidate, stored."""
    problems = _read_candidates(train, eval, dev)
    prompts, opened = critic_prompts(problems, load_tokenizer(model), cfg)
    sampling = SamplingConfig(n=1, temperature=0.0, max_tokens=cfg.max_tokens)
    completions, startup, seconds = sample_model(
        cfg.engine, model, prompts, sampling, seed=0, where="select_problems.critic.engine"
    )
    answers = critic_answers_frame(problems, [c[0] for c in completions], think_opened=opened)
    tokens = int(answers["num_tokens"].sum())
    stats = {
        "candidates": problems.height,
        "critic_accuracy": round(float(answers["is_correct"].mean() or 0.0), 4),
        "parse_errors": int(answers["parse_error"].is_not_null().sum()),
        **timing_stats(startup, seconds, tokens),
    }
    write_artifact(
        answers,
        out,
        schema=CRITIC_ANSWERS_SCHEMA,
        artifact="critic_answers",
        stage=STAGE,
        params={"critic": dataclasses.asdict(cfg), "stats": stats},
        model=model.name,
    )
    log.info("select_problems critic answers: %s", stats)
    return stats


def select_problems(
    *,
    train: Path,
    eval: Path,
    dev: Path,
    samples: Path,
    critic_answers: Path | None,
    train_out: Path,
    eval_out: Path,
    dev_out: Path,
    dropped_out: Path,
    summary_out: Path,
    filters: SelectionFilters,
) -> dict[str, Any]:
    """``select_problems``: filter the candidates on the stored tables; write kept, dropped, summary."""
    table = problem_table(
        _read_candidates(train, eval, dev),
        read_artifact(samples, schema=SELECTION_SAMPLES_SCHEMA, artifact="selection_samples"),
        read_artifact(critic_answers, schema=CRITIC_ANSWERS_SCHEMA, artifact="critic_answers")
        if critic_answers is not None
        else None,
    )
    kept, dropped = apply_filters(table, filters)
    summary = summarise_selection(table, dropped, filters)
    params = {"filters": dataclasses.asdict(filters), "critic": "llm" if critic_answers is not None else "oracle"}
    for split, path in (("train", train_out), ("eval", eval_out), ("dev", dev_out)):
        part = kept.filter(pl.col("split") == split)
        if part.height == 0 and summary["splits"][split]["candidates"]:
            raise ValueError(
                f"select_problems: no {split} problem passes the filters ({summary['splits'][split]}); "
                "loosen select_problems.filters or add candidates"
            )
        write_artifact(part, path, schema=PROBLEMS_SCHEMA, artifact="problems", stage=STAGE, params=params)
    write_artifact(dropped, dropped_out, schema=DROPPED_SCHEMA, artifact="dropped", stage=STAGE, params=params)
    write_json(summary, summary_out)
    counts = {split: {k: v[k] for k in ("candidates", "kept", "failing")} for split, v in summary["splits"].items()}
    log.info("select_problems: %s", counts)
    return summary
