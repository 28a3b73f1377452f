"""Cost model of one experiment at scale: tokens generated, scored and trained per stage, and GPU-hours.

Token counts follow from the config (problems, samples, rounds, arms) and a few lengths; GPU time
from throughput figures measured by others and cited in :class:`Throughput`. Decoding is taken at
the cited output throughput; scoring (a forward pass, 2 N FLOPs per token) and LoRA training (forward
and activation gradients, 4 N FLOPs per token; the frozen weights get no gradient) at a cited
model-FLOPs utilisation. The CLI is perf/cost_model.py; docs/scaling_up.md shows
its output for config/paper.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl


@dataclass(frozen=True)
class Lengths:
    """Token lengths (means) the config does not fix."""

    answer: int = 2000  # the paper's mean answer lengths are 1681-1996 tokens; traces are capped at 2048
    solver_prompt: int = 260  # measured: 253-257 Qwen tokens for paper.yaml's prompt on the fixture's problems
    reference: int = 800  # an OpenMathReasoning solution after its thinking (our guess; measure with the data)
    critic_prompt: int = 450  # the faithful-scribe template + the problem (plus the trace, counted apart)
    critic_thinking: int = 4000  # QwQ-32B's thinking per rewrite: an assumption, the largest unknown
    critic_answer: int = 600  # the critic's visible solution when it solves a candidate itself
    labels_context: int = 60  # the labels-only ablation's verdict line


@dataclass(frozen=True)
class Throughput:
    """Measured figures, with their sources, and the GPUs they were measured on."""

    # vLLM 0.6.0, Llama 3.1 8B, 1 x H100-80GB-SXM, 5000 prompts, max 2048 tokens, 10 scheduler steps:
    # 8088 output tokens/s (Lambda, github.com/LambdaLabsML/vllm-benchmark, benchmark_v0.md). Used
    # for the 1.7B solver as is: a bound, the smaller model decodes faster.
    solver_decode: float = 8088.0
    solver_gpus: int = 1
    # Same report, Llama 3.1 70B, tensor parallel 4 on 4 x H100: 3543 output tokens/s. Used for the
    # 32B critic on 4 GPUs as is: again a bound. Its thinking runs longer than 2048 tokens, which
    # lowers the batch a GPU holds; docs/scaling_up.md says so.
    critic_decode: float = 3543.0
    critic_gpus: int = 4
    # H100 SXM dense bf16 peak, and the model-FLOPs utilisation Meta measured training Llama 3 405B
    # on H100s (38-43%, arXiv 2407.21783, Table 4); a 1.7B model with LoRA rarely reaches it, so
    # scoring and training times are lower bounds.
    peak_flops: float = 989e12
    mfu: float = 0.38
    solver_params: float = 1.7e9


def _traces(cfg: Mapping[str, Any], condition: str) -> int:
    traces = cfg["traces"]
    if condition == "grpo":
        return (traces.get("grpo_problems_per_round") or traces["problems_per_round"]) * traces["grpo_group_size"]
    return traces["problems_per_round"] * traces["samples_per_problem"]


def stage_tokens(cfg: Mapping[str, Any], lengths: Lengths = Lengths()) -> pl.DataFrame:
    """One row per (stage, when): tokens decoded by the solver, decoded by the critic, scored and trained.

    ``when``: ``once`` (selection, premise check), ``round 0``, ``round r>0`` (each later round), or
    ``base`` (the base solver's evaluation).
    """
    exp = cfg["experiment"]
    variants = {variant["name"]: variant for variant in exp.get("variants") or []}
    sd_arms = [c for c in exp["conditions"] if c != "grpo"] + (
        ["critique_full_quote", "critique_labels_only"] if exp["ablations"] else []
    )
    sd_arms += list(variants)
    kind_of = {arm: variants[arm]["context"] if arm in variants else arm for arm in sd_arms}
    grpo = "grpo" in exp["conditions"]
    critique_arms = [a for a in sd_arms if kind_of[a] != "reference"]
    L, S = lengths.answer, lengths.solver_prompt
    n_sd, n_grpo = _traces(cfg, "shared"), _traces(cfg, "grpo") if grpo else 0
    rows: list[dict[str, Any]] = []

    def add(stage: str, when: str, solver: float = 0, critic: float = 0, scored: float = 0, trained: float = 0):
        rows.append({"stage": stage, "when": when, "solver_decoded": solver, "critic_decoded": critic,
                     "scored": scored, "trained": trained})  # fmt: skip

    selection = cfg.get("select_problems") or {}
    if selection.get("enabled"):
        candidates = cfg["problems"]["n_train"] + cfg["problems"]["n_eval"]
        add("select_problems_solver", "once", solver=candidates * selection["solver"]["samples_per_problem"] * L)
        if cfg["critic"]["backend"] == "llm":
            add("select_problems_critic", "once", critic=candidates * (lengths.critic_thinking + lengths.critic_answer))
    context = {"reference": lengths.reference, "critique": L, "critique_full_quote": L + lengths.labels_context,
               "critique_labels_only": lengths.labels_context}  # fmt: skip
    rewrite = lengths.critic_thinking + L
    ev = cfg["evaluate"]
    n_eval = (selection.get("filters") or {}).get("n_eval") or cfg["problems"]["n_eval"]
    for when, sd_jobs in (("round 0", ["shared"] if sd_arms else []), ("round r>0", sd_arms)):
        add("generate_traces", when, solver=(len(sd_jobs) * n_sd + n_grpo) * L)
        rewriting = 1 if when == "round 0" else len(critique_arms)
        if cfg["critic"]["backend"] == "llm" and sd_arms:
            add("query_critic", when, critic=rewriting * n_sd * rewrite)
        kinds = list(context) if when == "round 0" else sd_arms  # round 0 scores every kind for the analysis
        add("score_traces", when, scored=len(sd_jobs) * n_sd * (S + L))  # the student side, once per traces file
        add("precompute_teacher_logprobs", when, scored=sum(n_sd * (S + context[kind_of.get(k, k)] + L) for k in kinds))
        add("distill_student", when, trained=len(sd_arms) * n_sd * (S + L))
        if grpo:
            add("train_grpo", when, trained=n_grpo * (S + L))
        add("evaluate", when, solver=(len(sd_arms) + grpo) * n_eval * ev["samples_per_problem"] * L)
    add("evaluate", "base", solver=n_eval * ev["samples_per_problem"] * L)
    premise = cfg.get("premise") or {}
    prompts = 1 + len(premise.get("layouts", [])) * len(premise.get("kinds", []))  # + the no-context prompt
    scored = n_sd * prompts * (S + L) if premise.get("advantages") else 0
    add("check_premise", "once", solver=n_sd * premise.get("samples", 1) * prompts * L, scored=scored)
    return pl.DataFrame(rows)


def gpu_hours(tokens: pl.DataFrame, throughput: Throughput = Throughput()) -> pl.DataFrame:
    """GPU-hours per row of :func:`stage_tokens`."""
    flops = throughput.peak_flops * throughput.mfu
    n = throughput.solver_params
    return tokens.with_columns(
        gpu_hours=(
            pl.col("solver_decoded") / throughput.solver_decode * throughput.solver_gpus
            + pl.col("critic_decoded") / throughput.critic_decode * throughput.critic_gpus
            + pl.col("scored") * 2 * n / flops
            + pl.col("trained") * 4 * n / flops
        )
        / 3600
    )


def experiment_cost(
    cfg: Mapping[str, Any], lengths: Lengths = Lengths(), throughput: Throughput = Throughput()
) -> dict:
    """Per-stage table, the GPU-hours of round 0, of each later round, once-off, and of the whole run."""
    table = gpu_hours(stage_tokens(cfg, lengths), throughput)
    rounds, seeds = cfg["experiment"]["rounds"], len(cfg["experiment"]["seeds"])

    def total(when: str) -> float:
        return float(table.filter(pl.col("when") == when)["gpu_hours"].sum())

    per_seed = total("round 0") + (rounds - 1) * total("round r>0") + total("base")
    return {
        "table": table,
        "round_0": total("round 0"),
        "later_round": total("round r>0"),
        "once": total("once"),
        "whole_run": total("once") + seeds * per_seed,
    }
