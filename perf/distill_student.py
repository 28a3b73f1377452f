"""Benchmark: where a distillation step spends its time, against a bare forward + backward.

Reads the round-0 teacher log-probs and traces of a finished default run, loads the student as the
stage does (LoRA r 64 on the base solver), and in one process times, per optimizer step, the phases
of ``distill_student``'s step: building the batch tensors (data), the student forward at the
completion positions (forward), the per-token loss (loss), backward, and the optimizer. It then
times a bare forward + backward of the very same padded batch (a sum of the kept logits as loss)
and prints ``bare / step`` (goal >= 0.8: the step adds little to the model's own compute). With
``--autocast`` it also runs the step under bf16 autocast and prints the loss difference to fp32.

    .venv/bin/python perf/distill_student.py --steps 2 [--autocast]

``--against-trl [sdft|sdpo]`` (needs ``pip install -e '.[bench]'``, i.e. trl 1.16.0) also runs, in the
same process and at equal settings, TRL's experimental self-distillation trainer for the same number
of optimizer steps, and prints completion tokens/s of both sides and the ratio ours / TRL (goal >= 5x):

    .venv/bin/python perf/distill_student.py --steps 2 --against-trl

Which TRL trainer: ``sdft`` (``SDFTTrainer``, the default) is the fair analogue of this stage. Its
teacher is the same model with the adapter disabled (``teacher_model_kind="base"``: the frozen
initial weights, our ``teacher: initial``) given the privileged context in its prompt; it needs no
reward and no rollout groups, and its loss is configured as ours: forward KL (``distillation_alpha=0``)
on a top-20 support with a tail bucket (TRL's support is the student's top 20, ours the teacher's;
with one generation per optimizer step TRL computes no rollout log-probs, so neither side applies
the importance weight here). ``sdpo`` (``SDPOTrainer``, the trainer docs/benchmarks.md's goal
names) is the same computation plus a reward on every rollout and rollout groups
(``num_generations=2`` here, since it mines successful siblings as demonstrations); it is run with the
same base teacher, loss and privileged context (``include_environment_feedback=True``).

Equal settings: the same model folder in fp32 (TRL's defaults ``bf16=True`` and
``gradient_checkpointing=True`` are turned off), LoRA with the config's r / alpha / dropout / target
modules, optimizer batch ``--batch`` in micro-batches of ``--micro``, lr 1e-5, the same problems'
prompts in the same order (the solver's chat prompt; TRL's teacher prompt is that prompt plus the
critique context and closing line, ours is the stored teacher prompt without the one-shot example),
sampling at temperature 1, top-p 1, up to ``--max-completion-length`` tokens (the stage's 128).

What each side's tokens/s includes, printed as two comparisons:

(a) train step only. Ours: the distillation step on stored traces and stored teacher top-k
    (data, student forward, loss, backward, optimizer). TRL: its optimizer step minus rollout
    preparation (``_prepare_inputs``: generation, rewards, teacher prompts) and minus the teacher's
    forward passes (timed around its no-grad ``_forward_logits`` calls), i.e. student forward,
    loss, backward, clipping and optimizer.
(b) end to end. TRL: its whole optimizer step (generation + teacher scoring online + training).
    Ours: the train step plus, per completion token, what producing its inputs costs, both timed
    here in-process on the same traces: generation (``HFEngine.generate``, transformers fp32, the
    same engine TRL samples with, at batch ``--batch``; the pipeline itself samples with vLLM bf16)
    and the teacher precompute's scoring (``HFEngine.score``, the stage's engine: the teacher's
    top-20 on teacher prompt + completion, and the student side's log-probs).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import polars as pl
import torch

DEFAULT_MODEL = Path("resources/models/qwen2.5-coder-0.5b-instruct")


def timed_step(model, optimizer, chunks: list[pl.DataFrame], cfg, *, autocast: bool) -> tuple[dict[str, float], float]:
    """One optimizer step over ``chunks`` (micro-batches) with each phase timed; returns (phases, loss)."""
    from pipeline.distill import distill_loss
    from pipeline.training import completion_logits

    phases: dict[str, float] = defaultdict(float)
    batch_tokens = sum(int(c["loss_mask"].list.sum().sum()) for c in chunks)
    total = 0.0
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    for chunk in chunks:
        start = time.perf_counter()
        rows = list(chunk.iter_rows(named=True))
        tensors = [
            (
                torch.tensor(r["topk_ids"]), torch.tensor(r["topk_logprobs"], dtype=torch.float32),
                torch.tensor(r["tail_logmass"]), torch.tensor(r["completion_logprobs"]),
                torch.tensor(r["completion_token_ids"]), torch.tensor(r["loss_mask"]),
            )
            for r in rows
        ]  # fmt: skip
        phases["data"] += time.perf_counter() - start
        start = time.perf_counter()
        with amp:
            logits = completion_logits(
                model, chunk["prompt_token_ids"].to_list(), chunk["completion_token_ids"].to_list()
            )
        phases["forward"] += time.perf_counter() - start
        start = time.perf_counter()
        loss = (
            sum(distill_loss(lg, *t, cfg, importance=False)[0].sum() for lg, t in zip(logits, tensors)) / batch_tokens
        )
        phases["loss"] += time.perf_counter() - start
        start = time.perf_counter()
        loss.backward()
        phases["backward"] += time.perf_counter() - start
        total += loss.item()
    start = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    phases["optimizer"] += time.perf_counter() - start
    return phases, total


def bare_step(model, chunks: list[pl.DataFrame]) -> float:
    """Seconds for a forward + backward of the same micro-batches with a trivial loss."""
    from pipeline.training import completion_logits

    start = time.perf_counter()
    for chunk in chunks:
        logits = completion_logits(model, chunk["prompt_token_ids"].to_list(), chunk["completion_token_ids"].to_list())
        sum(lg.sum() for lg in logits).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def upstream_seconds(args, used: pl.DataFrame) -> dict[str, float]:
    """Our side's inputs for ``used`` (the traces our steps train on), timed in-process: generating
    completions for the same prompts (transformers fp32, batch ``--batch``) and the teacher
    precompute's scoring passes over the stored traces (the teacher's top-20 on the teacher prompt +
    completion, and the student side's log-probs on the no-context prompt), with the stage's engine
    (``HFEngine.score``, 16 rows a batch)."""
    from pipeline.engines.base import SamplingConfig
    from pipeline.engines.hf import HFEngine

    ids = used["trace_id"].to_list()
    traces = pl.read_parquet(args.results / "traces/shared/round_0.parquet")
    contexts = pl.read_parquet(args.results / f"contexts/{args.kind}/round_0.parquet")
    rows = pl.DataFrame({"trace_id": ids}).join(traces, on="trace_id", how="left", maintain_order="left")
    rows = rows.join(
        contexts.select("trace_id", "teacher_prompt_token_ids"), on="trace_id", how="left", maintain_order="left"
    )
    prompts, completions = rows["prompt_token_ids"].to_list(), rows["completion_token_ids"].to_list()
    teacher_prompts = rows["teacher_prompt_token_ids"].to_list()
    engine = HFEngine(args.model, seed=0, max_batch_rows=args.batch)
    sampling = SamplingConfig(n=1, temperature=1.0, top_p=1.0, max_tokens=args.max_completion_length)
    start = time.perf_counter()
    samples = engine.generate(prompts, sampling)
    generation = time.perf_counter() - start
    engine.max_batch_rows = 16  # teacher.engine.max_batch_rows
    start = time.perf_counter()
    engine.score(teacher_prompts, completions, top_k=20)
    engine.score(prompts, completions, top_k=1)
    precompute = time.perf_counter() - start
    engine.close()
    return {
        "generation_s": generation,
        "generated_tokens": sum(len(s[0].token_ids) for s in samples),
        "precompute_s": precompute,
        "precompute_tokens": sum(map(len, completions)),
        "teacher_sequence_tokens": sum(len(p) + len(c) for p, c in zip(teacher_prompts, completions)) / len(ids),
    }


def trl_records(args, used: pl.DataFrame, n_prompts: int) -> list[dict]:
    """The first ``n_prompts`` of ``used`` as TRL rows: the solver's chat prompt, the privileged
    context (the critique and the closing line of the stored teacher prompt) and the answer key."""
    traces = pl.read_parquet(args.results / "traces/shared/round_0.parquet")
    contexts = pl.read_parquet(args.results / f"contexts/{args.kind}/round_0.parquet")
    problems = pl.read_parquet(args.problems or args.results.parent / "problems/train.parquet")
    by_trace = {r["trace_id"]: r for r in traces.iter_rows(named=True)}
    by_context = {r["trace_id"]: r for r in contexts.iter_rows(named=True)}
    answers = dict(zip(problems["problem_id"], problems["answer"]))
    records = []
    for trace_id in used["trace_id"].to_list()[:n_prompts]:
        trace, context = by_trace[trace_id], by_context[trace_id]
        text, teacher = context["context_text"], context["teacher_prompt"]
        if text in teacher:  # the context and what follows it in the teacher's user turn (its closing line)
            start = teacher.index(text)
            end = teacher.find("<|im_end|>", start)
            text = teacher[start : end if end >= 0 else len(teacher)]
        records.append(
            {
                "prompt": [{"role": "user", "content": trace["user_message"]}],
                "privileged_context": text,
                "answer": answers.get(trace["problem_id"], ""),
            }
        )
    return records


def answer_reward(prompts, completions, answer, **_) -> list[float]:
    """SDPO's reward: 1.0 when the completion's answer is the problem's answer (the pipeline's verifier)."""
    from pipeline.tasks.solver_format import parse_response
    from pipeline.tasks.verify import verify_answer

    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(verify_answer(parse_response(t).answer, a)) for t, a in zip(texts, answer)]


def trl_config(trainer: str, out: str, *, steps: int, batch: int, micro: int, max_completion_length: int):
    """TRL's ``SDFTConfig`` / ``SDPOConfig`` at this stage's settings (see the module docstring)."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    common = dict(
        use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, seed=0, max_steps=steps,
        per_device_train_batch_size=micro, gradient_accumulation_steps=batch // micro,
        learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
        num_generations=2 if trainer == "sdpo" else 1, shuffle_dataset=False,
        max_completion_length=max_completion_length, temperature=1.0, top_p=1.0, top_k=0,
        teacher_model_kind="base", distillation_mode="topk_logits", distillation_topk=20,
        distillation_alpha=0.0, distillation_add_tail=True, distillation_is_clip=2.0,
    )  # fmt: skip
    if trainer == "sdpo":
        from trl.experimental.sdpo import SDPOConfig

        return SDPOConfig(
            output_dir=out, **common, include_environment_feedback=True, feedback_template="\n\n{feedback_raw}",
            reprompt_template="{prompt}{solution}{feedback}", distillation_weight=1.0, beta=0.0,
        )  # fmt: skip
    from trl.experimental.sdft import SDFTConfig

    return SDFTConfig(output_dir=out, **common, teacher_prompt_template="{prompt}\n\n{privileged_context}")


def trl_side(args, lora) -> dict[str, float]:
    """``--steps`` optimizer steps of TRL's SDFT or SDPO trainer at our settings, with its phases timed."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # before any trl.experimental import
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback

    from pipeline.engines.checkpoint import load_tokenizer
    from pipeline.training import lora_config

    sdpo = args.against_trl == "sdpo"
    generations = 2 if sdpo else 1
    n_prompts = args.steps * args.batch // generations
    records = trl_records(args, args.used, n_prompts)
    peft_config = lora_config(lora)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, use_safetensors=True)
    tokenizer = load_tokenizer(args.model)
    steps: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            steps.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as out:
        config = trl_config(
            args.against_trl, out, steps=args.steps, batch=args.batch, micro=args.micro,
            max_completion_length=args.max_completion_length,
        )  # fmt: skip
        if sdpo:
            from trl.experimental.sdpo import SDPOTrainer

            trainer = SDPOTrainer(
                model=model, reward_funcs=[answer_reward], args=config, train_dataset=Dataset.from_list(records),
                processing_class=tokenizer, peft_config=peft_config, callbacks=[StepTimer()],
            )  # fmt: skip
        else:
            from trl.experimental.sdft import SDFTTrainer

            records = [{k: r[k] for k in ("prompt", "privileged_context")} for r in records]
            trainer = SDFTTrainer(
                model=model, args=config, train_dataset=Dataset.from_list(records), processing_class=tokenizer,
                peft_config=peft_config, callbacks=[StepTimer()],
            )  # fmt: skip
        seconds: dict[str, float] = defaultdict(float)
        state = {"preparing": False}
        prepare, generate, forward = trainer._prepare_inputs, trainer._generate, trainer._forward_logits

        def timed_prepare(batch):
            state["preparing"], start = True, time.perf_counter()
            try:
                return prepare(batch)
            finally:
                state["preparing"] = False
                seconds["prepare"] += time.perf_counter() - start

        def timed_generate(prompt_ids):
            start = time.perf_counter()
            out = generate(prompt_ids)
            seconds["generation"] += time.perf_counter() - start
            seconds["completion_tokens"] += sum(map(len, out[1]))
            seconds["prompt_tokens"] += sum(map(len, prompt_ids))
            seconds["rollouts"] += len(out[1])
            return out

        def timed_forward(*a, **kw):
            if torch.is_grad_enabled() or state["preparing"]:
                return forward(*a, **kw)
            start = time.perf_counter()  # the teacher's forward (no grad, inside compute_loss)
            out = forward(*a, **kw)
            seconds["teacher"] += time.perf_counter() - start
            seconds["teacher_sequence_tokens"] += float(kw["attention_mask"].sum())
            seconds["teacher_rows"] += kw["attention_mask"].shape[0]
            return out

        trainer._prepare_inputs, trainer._generate, trainer._forward_logits = (
            timed_prepare,
            timed_generate,
            timed_forward,
        )
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    seconds["step"] = sum(steps)
    seconds["steps"] = len(steps)
    seconds["losses"] = losses
    return seconds


def compare_with_trl(args, ours_step: float, ours_tokens: int, lora) -> None:
    """Run TRL's trainer and our upstream stages; print both comparisons (see the module docstring)."""
    up = upstream_seconds(args, args.used)
    gc.collect()
    trl = trl_side(args, lora)
    name = "SDPOTrainer" if args.against_trl == "sdpo" else "SDFTTrainer"
    gen_per_token = up["generation_s"] / up["generated_tokens"]
    pre_per_token = up["precompute_s"] / up["precompute_tokens"]
    ours_e2e = ours_step + ours_tokens * (gen_per_token + pre_per_token)
    tokens = trl["completion_tokens"]
    trl_train = trl["step"] - trl["prepare"] - trl["teacher"]
    print(
        f"settings: {args.model.name}, fp32, LoRA r {lora.r} alpha {lora.alpha} on {len(lora.target_modules)} "
        f"projections, {args.steps} optimizer steps of {args.batch} rollouts in micro-batches of {args.micro}, "
        f"lr 1e-5, top-20 + tail forward KL, teacher = the frozen initial weights; sampling t 1, top-p 1, "
        f"max {args.max_completion_length} tokens"
    )
    print(
        f"ours: {ours_tokens} completion tokens (stored traces): train step {ours_step:.1f} s; generation "
        f"(transformers fp32, batch {args.batch}) {up['generated_tokens']} tokens in {up['generation_s']:.1f} s "
        f"({1 / gen_per_token:.1f} tok/s); teacher precompute {up['precompute_tokens']} tokens in "
        f"{up['precompute_s']:.1f} s ({1 / pre_per_token:.1f} tok/s); teacher sequences "
        f"{up['teacher_sequence_tokens']:.0f} tokens on average"
    )
    rest = trl["prepare"] - trl["generation"]
    print(
        f"TRL {name}: {tokens:.0f} completion tokens ({trl['rollouts']:.0f} rollouts, mean "
        f"{tokens / max(trl['rollouts'], 1):.1f}, prompts {trl['prompt_tokens'] / max(trl['rollouts'], 1):.0f} "
        f"tokens): {trl['steps']:.0f} steps, {trl['step']:.1f} s = generation {trl['generation']:.1f} s + other "
        f"rollout preparation {rest:.1f} s + teacher forward {trl['teacher']:.1f} s (sequences "
        f"{trl['teacher_sequence_tokens'] / max(trl['teacher_rows'], 1):.0f} tokens on average) + train "
        f"{trl_train:.1f} s; losses {[round(x, 6) for x in trl['losses']]}"
    )
    for label, ours_s, trl_s, what in (
        ("(a) train step only", ours_step, trl_train, "ours: step on stored teacher top-k; TRL: step minus "
         "rollout preparation and teacher forward"),
        ("(b) end to end", ours_e2e, trl["step"], "ours: step + generation + teacher precompute per token; "
         "TRL: its whole step"),
    ):  # fmt: skip
        mine, theirs = ours_tokens / ours_s, tokens / trl_s
        verdict = "met" if mine / theirs >= 5 else "not met"
        print(
            f"{label}: ours {mine:.1f} completion tok/s, TRL {theirs:.1f} completion tok/s: ours / TRL = "
            f"{mine / theirs:.2f}x (goal >= 5x: {verdict}) [{what}]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--results", type=Path, default=Path("results/seed_0"))
    parser.add_argument("--kind", default="critique")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--micro", type=int, default=2)
    parser.add_argument("--autocast", action="store_true", help="also time the step under bf16 autocast")
    parser.add_argument(
        "--against-trl", nargs="?", const="sdft", choices=["sdft", "sdpo"], default=None,
        help="also run TRL's SDFTTrainer (default) or SDPOTrainer at equal settings and print the ratio",
    )  # fmt: skip
    parser.add_argument("--max-completion-length", type=int, default=128, help="sampling cap (the stage's 128)")
    parser.add_argument("--problems", type=Path, default=None, help="default: RESULTS/../problems/train.parquet")
    args = parser.parse_args()
    if args.against_trl and importlib.util.find_spec("trl") is None:
        parser.exit(2, "--against-trl needs TRL 1.16.0, which is not installed: pip install -e '.[bench]'\n")

    from pipeline.config import DistillConfig, LoraSettings
    from pipeline.distill import training_rows
    from pipeline.training import load_student

    cfg = DistillConfig(lora=LoraSettings())
    rows = training_rows(
        pl.read_parquet(args.results / f"teacher_logprobs/{args.kind}/round_0.parquet"),
        pl.read_parquet(args.results / "traces/shared/round_0.parquet"),
        cfg,
    )
    batches = [rows.slice(s * args.batch, args.batch) for s in range(args.steps)]
    modes = [False, True] if args.autocast else [False]
    for autocast in modes:
        torch.manual_seed(0)
        model, _, _ = load_student(args.model, cfg.lora)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        totals: dict[str, float] = defaultdict(float)
        losses, bare, tokens = [], 0.0, 0
        for batch in batches:
            chunks = [batch.slice(i, args.micro) for i in range(0, batch.height, args.micro)]
            phases, loss = timed_step(model, optimizer, chunks, cfg, autocast=autocast)
            losses.append(loss)
            for name, seconds in phases.items():
                totals[name] += seconds
            bare += bare_step(model, chunks)
            tokens += int(batch["completion_token_ids"].list.len().sum())
        step = sum(totals.values())
        label = "bf16 autocast" if autocast else "fp32"
        split = ", ".join(f"{name} {seconds / step:.0%}" for name, seconds in totals.items())
        print(f"{label}: {args.steps} steps of {args.batch} traces, {tokens} completion tokens, {step:.1f} s "
              f"({tokens / step:.1f} completion tok/s): {split}")  # fmt: skip
        print(f"{label}: bare forward + backward {bare:.1f} s; bare / step = {bare / step:.2f} (goal >= 0.8)")
        print(f"{label}: losses {[round(x, 6) for x in losses]}")
        if not autocast:
            fp32 = (step, tokens)
        del model, optimizer
        gc.collect()
    if args.against_trl:
        args.used = pl.concat(batches)
        compare_with_trl(args, *fp32, cfg.lora)


if __name__ == "__main__":
    main()
