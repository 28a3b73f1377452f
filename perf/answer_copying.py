"""Diagnostic: the answer-copying path of a finished run (docs/experiments/: the default run, the guards).

Prints, from the run's stored artifacts (no model is loaded; the tokenizer only):

- per context kind, on the shared round-0 *train* traces: the teacher's probability of ``answer``
  at the completion's second token (right after ``<``, where the student writes ``step``), how many
  traces have that token in the critic's first wrong step (so ``token_mask: first_error`` puts loss
  on it), and the share of tokens that write the format's tags with their mean A_t;
- per evaluated checkpoint: the share of samples that answer without a step, and the accuracy of
  those samples and of the others.

    .venv/bin/python perf/answer_copying.py                           # in the run's folder
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import polars as pl

DEFAULT_MODEL = Path("resources/models/qwen2.5-coder-0.5b-instruct")


def teacher_side(results: Path, kind: str, tokenizer) -> str:
    """One line of train-set figures for one context kind's stored teacher log-probs."""
    from pipeline.tasks.token_spans import format_tokens, token_char_spans

    answer_id = tokenizer.encode("answer", add_special_tokens=False)[0]
    teacher = pl.read_parquet(results / f"teacher_logprobs/{kind}/round_0.parquet")
    traces = pl.read_parquet(results / "traces/shared/round_0.parquet").select("trace_id", "completion_text")
    rows = teacher.join(traces, on="trace_id")
    p_answer, tag_a, other_a = [], [], []
    for row in rows.iter_rows(named=True):
        if len(row["completion_token_ids"]) > 1:
            top = dict(zip(row["topk_ids"][1], row["topk_logprobs"][1]))
            p_answer.append(math.exp(top[answer_id]) if answer_id in top else 0.0)
        text = row["completion_text"]
        tags = np.array(format_tokens(token_char_spans(row["completion_token_ids"], text, tokenizer), text), dtype=bool)
        a_t = np.array(row["teacher_token_logprobs"]) - np.array(row["student_token_logprobs"])
        tag_a += a_t[tags].tolist()
        other_a += a_t[~tags].tolist()
    tag, other = np.array(tag_a), np.array(other_a)
    negative = -tag[tag < 0].sum() / (-tag[tag < 0].sum() - other[other < 0].sum())
    in_first_wrong = rows.filter(pl.col("token_categories").list.get(1, null_on_oob=True) == "first_wrong").height
    return (
        f"{kind}: teacher p(answer) at token 2: {np.mean(p_answer):.3f}; traces whose first wrong step holds "
        f"token 2: {in_first_wrong} of {rows.height}; tag tokens {len(tag)} of {len(tag) + len(other)}, mean A_t "
        f"{tag.mean():+.3f} (other tokens {other.mean():+.3f}), {negative:.0%} of the negative A_t mass"
    )


def checkpoint_side(path: Path) -> str:
    """One line per evaluated checkpoint: answer-only share and accuracy with and without steps."""
    from pipeline.metrics import is_answer_only

    samples = pl.read_parquet(path)
    bare = pl.Series([is_answer_only(text) for text in samples["completion_text"].to_list()])
    stepped = samples.filter(~bare)["is_correct"].mean()
    answered = samples.filter(bare)["is_correct"].mean()
    return (
        f"{samples['condition'][0]} round {samples['round'][0]}: answer only {bare.mean():.3f} "
        f"(correct {answered if answered is not None else float('nan'):.3f}), with steps correct "
        f"{stepped if stepped is not None else float('nan'):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the solver (for its tokenizer)")
    parser.add_argument("--results", type=Path, default=Path("results/seed_0"))
    parser.add_argument("--kinds", nargs="+", default=["critique", "reference"])
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    for kind in args.kinds:
        print(teacher_side(args.results, kind, tokenizer))
    for path in sorted(args.results.glob("eval/*/round_*.parquet")):
        print(checkpoint_side(path))


if __name__ == "__main__":
    main()
