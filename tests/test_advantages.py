import numpy as np
import polars as pl
import pytest

from pipeline.advantages import (
    ADVANTAGE_AGGREGATES_SCHEMA,
    ADVANTAGE_TOKENS_SCHEMA,
    STAGE,
    aggregate,
    analyse_advantages,
    figure_trace_ids,
    render_html,
)
from pipeline.artifacts import CRITIQUES_SCHEMA, TRACES_SCHEMA, read_artifact, read_metadata, write_artifact
from pipeline.config import AdvantagesConfig
from pipeline.engines import TokenScores
from pipeline.tasks.solver_format import parse_response
from pipeline.tasks.teacher_prompts import CONTEXT_KINDS
from pipeline.teacher import teacher_frame, teacher_logprobs_schema
from tests.conftest import CORRECT_TEXT, WRONG_TEXT, step_spans


def tokens_frame(rows):
    return pl.DataFrame(
        [
            {
                "trace_id": t,
                "problem_id": "p",
                "context_kind": kind,
                "is_correct": ok,
                "first_wrong_step": wrong,
                "tokens": toks,
                "categories": cats,
                "advantages": adv,
            }
            for t, kind, ok, wrong, toks, cats, adv in rows
        ],
        schema=ADVANTAGE_TOKENS_SCHEMA,
    )


def test_aggregate_numbers():
    wrong_cats = ["pre_error", "pre_error", "first_wrong", "after_error", "answer"]
    frame = tokens_frame(
        [
            ("t1", "critique", False, 2, list("abcde"), wrong_cats, [0.5, -0.5, -2.0, 1.0, 0.0]),
            ("t2", "critique", True, None, list("abc"), ["pre_error", "pre_error", "answer"], [1.0, 2.0, -1.0]),
        ]
    )
    out = aggregate(frame)
    assert out.schema == ADVANTAGE_AGGREGATES_SCHEMA
    assert out.height == 1 * 2 * 5

    def row(correctness, category):
        return out.filter(correctness=correctness, category=category).row(0, named=True)

    pre = row("incorrect", "pre_error")
    assert (pre["n_traces"], pre["n_tokens"], pre["mean_advantage"], pre["share_negative"]) == (1, 2, 0.0, 0.5)
    assert pre["mean_abs_advantage"] == pytest.approx(0.5)
    every = row("incorrect", "all")
    assert every["n_tokens"] == 5
    assert every["mean_advantage"] == pytest.approx(-0.2)
    assert every["share_negative"] == pytest.approx(0.4)
    assert every["mean_abs_advantage"] == pytest.approx(0.8)
    assert row("incorrect", "first_wrong")["mean_advantage"] == pytest.approx(-2.0)
    correct = row("correct", "all")
    assert (correct["n_traces"], correct["n_tokens"]) == (1, 3)
    assert correct["mean_advantage"] == pytest.approx(2 / 3)
    assert correct["share_negative"] == pytest.approx(1 / 3)
    assert correct["mean_abs_advantage"] == pytest.approx(4 / 3)
    empty = row("correct", "first_wrong")
    assert (empty["n_traces"], empty["n_tokens"], empty["mean_advantage"]) == (0, 0, None)


def test_figure_traces_put_located_errors_first_then_one_correct():
    cats = ["pre_error", "first_wrong"]
    frame = tokens_frame(
        [
            ("c1", "critique", True, None, ["a", "b"], ["pre_error", "answer"], [0.0, 0.0]),
            ("c2", "critique", True, None, ["a", "b"], ["pre_error", "answer"], [0.0, 0.0]),
            ("w2", "critique", False, 1, ["a", "b"], cats, [0.0, 0.0]),
            ("w1", "critique", False, 1, ["a", "b"], cats, [0.0, 0.0]),
            ("x", "critique", False, None, ["a", "b"], ["pre_error", "pre_error"], [0.0, 0.0]),
        ]
    )
    assert figure_trace_ids(frame, 3) == ["w1", "w2", "c1"]
    assert figure_trace_ids(frame, 2) == ["w1", "c1"]
    assert figure_trace_ids(frame, 1) == ["w1"]
    assert figure_trace_ids(frame, 5) == ["w1", "w2", "c1", "c2", "x"]


def test_html_figure_shows_every_token_escaped():
    pieces = ["<step_1>", " 1 & 2", " </step_1>\n", "<answer>", " 3 </answer>", ""]
    cats = ["first_wrong", "first_wrong", "first_wrong", "answer", "answer", "answer"]
    frame = tokens_frame(
        [("t1", kind, False, 1, pieces, cats, [-1.0, 0.25, 3.0, 0.0, -0.5, 0.1]) for kind in ("critique", "reference")]
    )
    page = render_html(frame, ["t1"], kinds=["critique", "reference"], color_limit=1.0)
    for piece in ["&lt;step_1&gt;", " 1 &amp; 2", " &lt;/step_1&gt;\u21b5<br>", "&lt;answer&gt;", " 3 &lt;/answer&gt;"]:
        assert page.count(f">{piece}</span>") == 2, piece  # once per kind column
    assert "<step_1>" not in page and "<answer>" not in page
    assert page.count('title="A_t = -1.000 (first_wrong)"') == 2
    assert "background:rgb(236,84,78)" in page  # saturated red at A_t = -1
    assert "background:rgb(72,133,237)" in page  # saturated blue at A_t = 3 > limit
    assert page.count('<span class="wrong"><span style=') == 2  # the wrong step, outlined in each column
    assert page.index("<th>critique</th>") < page.index("<th>reference</th>")
    assert not any(ref in page for ref in ("src=", "<link", "<script", "@import"))  # self-contained


def write_inputs(tmp_path, tokenizer):
    """Three traces (wrong at step 2, correct, one a kind skipped) and their teacher log-probs."""
    texts = {"w": WRONG_TEXT, "c": CORRECT_TEXT, "s": CORRECT_TEXT.replace("20", "19")}
    rows, critiques = [], []
    for name, text in texts.items():
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        parsed = parse_response(text)
        rows.append(
            {
                "trace_id": f"shared:0:{name}:0",
                "problem_id": name,
                "condition": "shared",
                "round": 0,
                "sample_idx": 0,
                "user_message": "q",
                "prompt": "q",
                "prompt_token_ids": [1, 2],
                "completion_text": text,
                "completion_token_ids": ids,
                "completion_logprobs": [-1.0] * len(ids),
                "finish_reason": "stop",
                "step_spans": step_spans(text),
                "extracted_answer": parsed.answer,
                "format_ok": True,
                "is_correct": name == "c",
                "first_wrong_step": 2 if name == "w" else None,
            }
        )
    traces = pl.DataFrame(rows).drop("first_wrong_step").cast(dict(TRACES_SCHEMA))  # type: ignore[arg-type]
    write_artifact(traces, tmp_path / "traces.parquet", schema=TRACES_SCHEMA, artifact="traces", stage="test")
    critique_rows = [
        {name: None for name in CRITIQUES_SCHEMA.names()}
        | {"trace_id": r["trace_id"], "problem_id": r["problem_id"], "first_wrong_step": r["first_wrong_step"]}
        for r in rows
    ]
    critiques = pl.DataFrame(critique_rows, schema=CRITIQUES_SCHEMA)
    write_artifact(critiques, tmp_path / "critiques.parquet", schema=CRITIQUES_SCHEMA, artifact="critiques", stage="t")
    paths = {}
    for k, kind in enumerate(CONTEXT_KINDS):
        kept = traces if kind == "critique" else traces.filter(pl.col("trace_id") != "shared:0:s:0")
        scores = []
        for ids in kept["completion_token_ids"].to_list():
            n = len(ids)
            teacher = np.linspace(-1.0, 0.0, n, dtype=np.float32) + k  # A_t = linspace + k - (-1)
            scores.append(TokenScores(np.zeros((n, 1), np.int32), teacher[:, None], teacher, np.zeros(n, np.float32)))
        frame = teacher_frame(
            kept.with_columns(
                context_kind=pl.lit(kind),
                token_categories=pl.col("completion_token_ids").list.eval(pl.lit("pre_error")),
                student_token_logprobs=pl.col("completion_token_ids").list.eval(pl.lit(-1.0, dtype=pl.Float32)),
            ),
            scores,
            [0] * kept.height,
            k=1,
            dtype="float32",
        )
        paths[kind] = tmp_path / f"{kind}.parquet"
        write_artifact(frame, paths[kind], schema=teacher_logprobs_schema(1), artifact="teacher_logprobs", stage="t")
    return paths


def test_analyse_advantages_end_to_end(tmp_path, tokenizer, tiny_model_dir):
    paths = write_inputs(tmp_path, tokenizer)
    out = tmp_path / "out"
    stats = analyse_advantages(
        teacher_logprobs=paths,
        traces=tmp_path / "traces.parquet",
        critiques=tmp_path / "critiques.parquet",
        model=tiny_model_dir,
        tokens_out=out / "tokens.parquet",
        aggregates_out=out / "aggregates.parquet",
        figure_html=out / "figure.html",
        figure_png=out / "figure.png",
        cfg=AdvantagesConfig(figure_traces=2, color_limit=1.0),
    )
    tokens = read_artifact(out / "tokens.parquet", schema=ADVANTAGE_TOKENS_SCHEMA, artifact="advantage_tokens")
    # the trace one kind skipped is left out everywhere
    assert tokens.height == 2 * len(CONTEXT_KINDS)
    assert sorted(tokens["trace_id"].unique()) == ["shared:0:c:0", "shared:0:w:0"]
    assert tokens["context_kind"].unique(maintain_order=True).to_list() == list(CONTEXT_KINDS)
    traces = pl.read_parquet(tmp_path / "traces.parquet")
    lengths = dict(zip(traces["trace_id"], traces["completion_token_ids"].list.len()))
    for row in tokens.iter_rows(named=True):
        n = lengths[row["trace_id"]]
        assert len(row["tokens"]) == len(row["categories"]) == len(row["advantages"]) == n
        k = CONTEXT_KINDS.index(row["context_kind"])
        assert row["advantages"][0] == pytest.approx(k) and row["advantages"][-1] == pytest.approx(k + 1)
    wrong = tokens.filter(trace_id="shared:0:w:0").row(0, named=True)
    assert "".join(wrong["tokens"]) == WRONG_TEXT and wrong["first_wrong_step"] == 2
    first_wrong = "".join(t for t, c in zip(wrong["tokens"], wrong["categories"]) if c == "first_wrong")
    assert first_wrong.strip() == "<step_2> 5 * 4 = 21 </step_2>"
    assert wrong["categories"][-1] == "answer" and set(wrong["categories"]) == {
        "pre_error",
        "first_wrong",
        "after_error",
        "answer",
    }

    aggregates = read_artifact(
        out / "aggregates.parquet", schema=ADVANTAGE_AGGREGATES_SCHEMA, artifact="advantage_aggregates"
    )
    assert aggregates.height == len(CONTEXT_KINDS) * 2 * 5
    all_correct = aggregates.filter(context_kind="reference", correctness="correct", category="all").row(0, named=True)
    assert all_correct["n_traces"] == 1 and all_correct["n_tokens"] == lengths["shared:0:c:0"]
    assert all_correct["mean_advantage"] == pytest.approx(0.5, abs=1e-6)  # mean of linspace(0, 1)
    assert all_correct["share_negative"] == 0.0

    assert stats["traces"] == 2 and stats["correct"] == 1 and stats["not_in_every_kind"] == 1
    assert stats["figure_traces"] == ["shared:0:w:0", "shared:0:c:0"]
    assert set(stats["mean_advantage_first_wrong"]) == set(CONTEXT_KINDS)
    assert 1.0 < stats["mean_advantage_first_wrong"]["critique"] < 2.0  # A_t = k + linspace(0, 1), k = 1
    meta = read_metadata(out / "tokens.parquet")
    assert meta["stage"] == STAGE and meta["params"]["color_limit"] == 1.0
    assert meta["model"].startswith(tiny_model_dir.name + "@")

    page = (out / "figure.html").read_text(encoding="utf-8")
    assert page.count("<th>critique_labels_only</th>") == 1 and "shared:0:w:0: incorrect, first wrong step 2" in page
    png = (out / "figure.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
