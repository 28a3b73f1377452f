"""select_problems: the filters on hand-made Avg@16 tables, the stored tables, and the stage end to end."""

from __future__ import annotations

import json

import polars as pl
import pytest

from pipeline.artifacts import (
    CRITIC_ANSWERS_SCHEMA,
    DROPPED_SCHEMA,
    PROBLEMS_SCHEMA,
    SELECTION_SAMPLES_SCHEMA,
    read_artifact,
    write_artifact,
)
from pipeline.config import ConfigError, SelectionFilters
from pipeline.engines import Completion
from pipeline.select_problems import (
    apply_filters,
    candidates,
    critic_answers_frame,
    problem_table,
    select_problems,
    solver_samples_frame,
    summarise_selection,
)

PAPER = SelectionFilters(max_avg=5 / 16, min_avg=0.0, critic_solves=True, min_format_rate=0.5)


def problems(spec: list[tuple[str, str, int]]) -> pl.DataFrame:
    """Problem rows (id, split, num_steps): num_steps 0 is a dataset problem the oracle cannot solve."""
    return pl.DataFrame(
        [
            {"problem_id": pid, "split": split, "question": f"q {pid}", "answer": "7", "reference": "r",
             "source": "t", "verifier": "exact", "num_steps": steps, "steps": []}
            for pid, split, steps in spec
        ],
        schema=PROBLEMS_SCHEMA,
    )  # fmt: skip


def samples(table: dict[str, tuple[int, int]], n: int = 16) -> pl.DataFrame:
    """Avg@n table -> per-sample rows: problem id -> (correct samples, samples in the step format)."""
    rows = []
    for pid, (correct, formatted) in table.items():
        for i in range(n):
            rows.append(
                {"problem_id": pid, "split": "", "sample_idx": i, "completion_text": "", "num_tokens": 5,
                 "finish_reason": "stop", "extracted_answer": None, "format_ok": i < formatted, "is_correct": i < correct}
            )  # fmt: skip
    return pl.DataFrame(rows, schema=SELECTION_SAMPLES_SCHEMA)


def critic(answers: dict[str, bool]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"problem_id": pid, "split": "", "critic_output": "", "num_tokens": 1, "finish_reason": "stop",
          "parse_error": None, "extracted_answer": "7", "is_correct": ok} for pid, ok in answers.items()],
        schema=CRITIC_ANSWERS_SCHEMA,
    )  # fmt: skip


# Avg@16 candidates: (correct of 16, formatted of 16)
TABLE = {
    "hard": (0, 16),  # 0/16: kept (no lower bound in the paper)
    "edge": (4, 12),  # 4/16 < 5/16: kept
    "easy": (5, 16),  # 5/16 is not < 5/16: too easy
    "solved": (16, 16),  # too easy
    "messy": (1, 7),  # 7/16 < 0.5 formatted: format
    "nocritic": (2, 16),  # the critic fails it
    "both": (9, 0),  # too easy and format
}
CANDIDATES = problems([(pid, "train", 2) for pid in TABLE] + [("ev1", "eval", 2), ("ev2", "eval", 2)])
ALL_SAMPLES = pl.concat([samples(TABLE), samples({"ev1": (3, 16), "ev2": (8, 16)})])
CRITIC = critic({pid: pid != "nocritic" for pid in [*TABLE, "ev1", "ev2"]})


def table(critic_answers=CRITIC) -> pl.DataFrame:
    return problem_table(candidates(CANDIDATES.filter(pl.col("split") == "train"),
                                    CANDIDATES.filter(pl.col("split") == "eval")), ALL_SAMPLES, critic_answers)  # fmt: skip


def test_paper_filters_on_a_hand_made_avg16_table():
    kept, dropped = apply_filters(table(), PAPER)
    assert kept.schema == PROBLEMS_SCHEMA and dropped.schema == DROPPED_SCHEMA
    assert kept["problem_id"].to_list() == ["hard", "edge", "ev1"]
    reasons = dict(zip(dropped["problem_id"], dropped["reasons"].to_list()))
    assert reasons == {
        "easy": ["too_easy"],
        "solved": ["too_easy"],
        "messy": ["format"],
        "nocritic": ["critic_fails"],
        "both": ["too_easy", "format"],
        "ev2": ["too_easy"],
    }
    assert dict(zip(dropped["problem_id"], dropped["reason"]))["both"] == "too_easy"
    row = dropped.filter(pl.col("problem_id") == "easy").row(0, named=True)
    assert (row["samples"], row["correct"], row["avg"], row["format_rate"]) == (16, 5, 5 / 16, 1.0)


def test_thresholds_band_critic_switch_and_caps():
    loose = SelectionFilters(max_avg=1.01, min_avg=1 / 16, critic_solves=False, min_format_rate=0.0)
    kept, dropped = apply_filters(table(), loose)
    assert "hard" not in kept["problem_id"].to_list()  # 0/16 < 1/16: too hard
    assert dict(zip(dropped["problem_id"], dropped["reason"])) == {"hard": "too_hard"}
    assert "nocritic" in kept["problem_id"].to_list()  # critic_solves off
    capped, over = apply_filters(table(), dataclass_replace(loose, n_train=2, n_eval=1))
    assert capped["problem_id"].to_list() == ["edge", "easy", "ev1"]  # the first passing ones, in order
    assert set(over.filter(pl.col("reason") == "over_cap")["problem_id"]) == {
        "solved",
        "messy",
        "nocritic",
        "both",
        "ev2",
    }


def dataclass_replace(filters, **changes):
    import dataclasses

    return dataclasses.replace(filters, **changes)


def test_oracle_critic_solves_exactly_the_problems_with_a_chain():
    spec = problems([("chain", "train", 3), ("dataset", "train", 0)])
    t = problem_table(spec.with_row_index("order"), samples({"chain": (0, 16), "dataset": (0, 16)}), None)
    assert dict(zip(t["problem_id"], t["critic_correct"])) == {"chain": True, "dataset": False}
    # a candidate missing from the critic's answers counts as unsolved
    t = problem_table(spec.with_row_index("order"), samples({"chain": (0, 16), "dataset": (0, 16)}), critic({}))
    assert not t["critic_correct"].any()


def test_missing_samples_are_an_error():
    with pytest.raises(ValueError, match="no solver samples for 8 candidates"):
        problem_table(CANDIDATES.with_row_index("order"), samples({"hard": (0, 16)}), None)


def test_summary_counts_each_filter():
    t = table()
    kept, dropped = apply_filters(t, PAPER)
    summary = summarise_selection(t, dropped, PAPER)
    train = summary["splits"]["train"]
    assert (train["candidates"], train["kept"], train["dropped"]) == (7, 2, 5)
    assert train["failing"] == {"too_easy": 3, "too_hard": 0, "critic_fails": 1, "format": 2, "over_cap": 0}
    assert train["first_reason"] == {"too_easy": 3, "too_hard": 0, "critic_fails": 1, "format": 1, "over_cap": 0}
    assert train["correct_histogram"][0] == 1 and train["correct_histogram"][16] == 1
    assert len(train["correct_histogram"]) == 17
    assert summary["splits"]["eval"]["kept"] == 1


def test_filters_validate():
    with pytest.raises(ConfigError, match="min_avg < max_avg"):
        SelectionFilters(max_avg=0.1, min_avg=0.2)
    with pytest.raises(ConfigError, match="min_format_rate"):
        SelectionFilters(min_format_rate=1.5)


def test_sample_frames_parse_verify_and_strip_thinking():
    cands = CANDIDATES.head(2)
    good = Completion("<step_1> 3 + 4 = 7 </step_1>\n<answer> 7 </answer>", [1, 2], [-0.1, -0.1], "stop")
    bad = Completion("seven", [3], [-0.1], "length")
    frame = solver_samples_frame(cands, [[good, bad], [bad, bad]])
    assert frame["is_correct"].to_list() == [True, False, False, False]
    assert frame["format_ok"].to_list() == [True, False, False, False]
    answers = critic_answers_frame(
        cands, [Completion("so\n</think>\n\\boxed{7}", [1], [0.0], "stop"), Completion("hmm", [1], [0.0], "length")],
        think_opened=True,
    )  # fmt: skip
    assert answers["is_correct"].to_list() == [True, False]
    assert answers["parse_error"].to_list() == [None, "think_only"]
    assert critic_answers_frame(cands.head(1), [Completion("no box", [1], [0.0], "stop")], think_opened=False)[
        "parse_error"
    ].to_list() == ["no_answer"]


def test_select_problems_stage_writes_kept_dropped_and_summary(tmp_path):
    dev = problems([("dv1", "dev", 2), ("dv2", "dev", 2)])  # the dev split passes the same filters
    paths = {}
    for split, frame in (("train", CANDIDATES), ("eval", CANDIDATES), ("dev", dev)):
        paths[split] = write_artifact(
            frame.filter(pl.col("split") == split), tmp_path / f"{split}.parquet", schema=PROBLEMS_SCHEMA,
            artifact="problems", stage="t",
        )  # fmt: skip
    sample_path = write_artifact(
        pl.concat([ALL_SAMPLES, samples({"dv1": (2, 16), "dv2": (10, 16)})]), tmp_path / "s.parquet",
        schema=SELECTION_SAMPLES_SCHEMA, artifact="selection_samples", stage="t",
    )  # fmt: skip
    critic_path = write_artifact(
        pl.concat([CRITIC, critic({"dv1": True, "dv2": True})]), tmp_path / "c.parquet",
        schema=CRITIC_ANSWERS_SCHEMA, artifact="critic_answers", stage="t",
    )  # fmt: skip
    out = tmp_path / "selection"
    select_problems(
        train=paths["train"], eval=paths["eval"], dev=paths["dev"], samples=sample_path, critic_answers=critic_path,
        train_out=out / "train.parquet", eval_out=out / "eval.parquet", dev_out=out / "dev.parquet",
        dropped_out=out / "dropped.parquet", summary_out=out / "summary.json", filters=PAPER,
    )  # fmt: skip
    train = read_artifact(out / "train.parquet", schema=PROBLEMS_SCHEMA, artifact="problems")
    assert train["problem_id"].to_list() == ["hard", "edge"] and set(train["split"]) == {"train"}
    kept_dev = read_artifact(out / "dev.parquet", schema=PROBLEMS_SCHEMA, artifact="problems")
    assert kept_dev["problem_id"].to_list() == ["dv1"] and set(kept_dev["split"]) == {"dev"}
    assert read_artifact(out / "dropped.parquet", schema=DROPPED_SCHEMA, artifact="dropped").height == 7
    summary = json.loads((out / "summary.json").read_text())["splits"]
    assert summary["eval"]["kept"] == 1 and summary["dev"] == summary["dev"] | {"candidates": 2, "kept": 1}
    with pytest.raises(ValueError, match="no eval problem passes"):
        select_problems(
            train=paths["train"], eval=paths["eval"], dev=paths["dev"], samples=sample_path,
            critic_answers=critic_path, train_out=out / "t2.parquet", eval_out=out / "e2.parquet",
            dev_out=out / "v2.parquet", dropped_out=out / "d2.parquet", summary_out=out / "s2.json",
            filters=dataclass_replace(PAPER, max_avg=3 / 16),
        )  # fmt: skip
