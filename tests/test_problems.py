import dataclasses
import json

import polars as pl
import pytest

from pipeline.artifacts import PROBLEMS_SCHEMA, REJECTS_SCHEMA, read_artifact, read_metadata
from pipeline.config import ArithSettings, DatasetSource, ProblemsConfig
from pipeline.problems import arith_frames, clean_rows, extract_answer, load_source, prepare_problems, split_rows
from tests.conftest import ROOT

ROWS = [
    {"q": "What is 2 + 3?", "a": "Add them. #### 5"},
    {"q": "", "a": "#### 1"},  # no question
    {"q": "What is 4 * 4?", "a": "sixteen"},  # no '####'
    {"q": "What is 1 + 1?", "a": "#### two"},  # unparsable
    {"q": "what is 2 + 3?  ", "a": "#### 5"},  # duplicate after normalising
    {"q": None, "a": None},
    {"q": "What is 10 - 4?", "a": "Subtract. #### 6"},
    {"q": "What is 1,000 + 1?", "a": "#### 1,001"},
]


def test_extract_answer_formats():
    assert extract_answer("Because. #### 1,234", "gsm8k") == ("1234", "Because.")
    assert extract_answer("so \\boxed{\\frac{1}{2}} done", "boxed")[0] == "\\frac{1}{2}"
    assert extract_answer(" 7 ", "plain") == ("7", None)
    assert extract_answer("no marker", "gsm8k") == (None, None)


def test_clean_rows_rejects_bad_rows_with_reasons():
    source = DatasetSource(
        builder="json", question_column="q", answer_column="a", answer_format="gsm8k", verifier="exact"
    )
    good, rejects = clean_rows(pl.DataFrame(ROWS), source, source_name="toy")
    assert good["answer"].to_list() == ["5", "6", "1001"]
    assert good["reference"].to_list() == ["Add them.", "Subtract.", ""]
    assert dict(zip(rejects["row_index"], rejects["reason"])) == {
        1: "no question",
        2: "no answer",
        3: "unparsable answer",
        4: "duplicate question",
        5: "no question",
    }


def test_missing_column_is_named():
    source = DatasetSource(builder="json", question_column="problem")
    with pytest.raises(KeyError, match="'problem' is not in the dataset"):
        clean_rows(pl.DataFrame(ROWS), source, source_name="toy")


def test_loader_end_to_end_from_local_jsonl(tmp_path):
    data = tmp_path / "toy.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ROWS))
    source = DatasetSource(
        builder="json",
        data_files=(str(data),),
        question_column="q",
        answer_column="a",
        answer_format="gsm8k",
        verifier="exact",
    )
    cfg = ProblemsConfig(source="dataset", seed=0, n_train=5, n_eval=1, n_dev=0, dataset=source)
    out = {name: tmp_path / f"{name}.parquet" for name in ("train", "eval", "dev", "rejects")}
    counts = prepare_problems(**out, cfg=cfg)
    assert counts == {"train": 2, "eval": 1, "dev": 0, "rejects": 5}
    train = read_artifact(out["train"], schema=PROBLEMS_SCHEMA, artifact="problems")
    evals = read_artifact(out["eval"], schema=PROBLEMS_SCHEMA, artifact="problems")
    assert not set(train["problem_id"]) & set(evals["problem_id"])
    assert read_artifact(out["rejects"], schema=REJECTS_SCHEMA, artifact="rejects").height == 5
    assert read_metadata(out["train"])["stage"] == "prepare_problems"


def test_champ_wheel_loads():
    source = DatasetSource(builder="champ", reference_column="reference", verifier="math")
    good, rejects = clean_rows(load_source(source), source, source_name="champ")
    assert good.height + rejects.height == 270
    assert good.height > 200
    assert (good["reference"].str.len_chars() > 0).all()


def test_split_is_seeded_and_disjoint():
    good = pl.DataFrame(
        [
            {
                "problem_id": f"p{i}",
                "split": "",
                "question": f"q{i}",
                "answer": "1",
                "reference": "",
                "source": "t",
                "verifier": "exact",
                "num_steps": 0,
                "steps": [],
            }
            for i in range(20)
        ],
        schema=PROBLEMS_SCHEMA,
    )
    a = split_rows(good, n_train=10, n_eval=5, n_dev=3, seed=1)
    b = split_rows(good, n_train=10, n_eval=5, n_dev=3, seed=1)
    assert all(a[split].equals(b[split]) for split in ("train", "eval", "dev"))
    assert {split: frame.height for split, frame in a.items()} == {"train": 10, "eval": 5, "dev": 3}
    ids = [set(a[split]["problem_id"]) for split in ("train", "eval", "dev")]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert set(a["dev"]["split"]) == {"dev"}
    # dev is carved from the train part: the eval set does not move when n_dev changes
    assert split_rows(good, n_train=10, n_eval=5, n_dev=0, seed=1)["eval"].equals(a["eval"])


def test_arith_eval_set_does_not_move_when_n_train_changes():
    small = arith_frames(ProblemsConfig(n_train=5, n_eval=4))
    big = arith_frames(ProblemsConfig(n_train=50, n_eval=4))
    assert small["eval"].equals(big["eval"])
    assert small["train"]["problem_id"].to_list() == big["train"]["problem_id"].head(5).to_list()
    assert not set(big["train"]["question"]) & set(big["eval"]["question"])


def test_arith_dev_split_is_its_own_stream_disjoint_from_train_and_eval():
    cfg = ProblemsConfig(n_train=60, n_eval=40, n_dev=50, arith=ArithSettings(min_steps=2, max_steps=2, max_start=12))
    sets = arith_frames(cfg)
    assert {split: frame.height for split, frame in sets.items()} == {"train": 60, "eval": 40, "dev": 50}
    questions = {split: set(frame["question"]) for split, frame in sets.items()}
    assert not questions["dev"] & questions["train"] and not questions["dev"] & questions["eval"]
    assert set(sets["dev"]["split"]) == {"dev"}
    # adding a dev split moves neither train nor eval, and dev does not depend on n_eval's draw order
    without = arith_frames(dataclasses.replace(cfg, n_dev=0))
    assert without["train"].equals(sets["train"]) and without["eval"].equals(sets["eval"])
    assert without["dev"].height == 0
    assert arith_frames(dataclasses.replace(cfg, n_dev=10))["dev"].equals(sets["dev"].head(10))


OMR_SAMPLE = ROOT / "tests/data/openmathreasoning_sample.jsonl"


def test_openmathreasoning_layout_from_a_local_jsonl():
    source = DatasetSource(builder="json", data_files=(str(OMR_SAMPLE),), preset="openmathreasoning")
    raw = load_source(source)
    assert {"problem", "expected_answer", "generated_solution", "problem_type"} <= set(raw.columns)
    good, rejects = clean_rows(raw, source, source_name="omr")
    assert dict(zip(rejects["row_index"], rejects["reason"])) == {
        1: "duplicate question",  # a second generated solution of problem 0
        4: "no reference",  # its thinking never closed
        5: "problem_type no_answer_extracted",
        6: "problem_type converted_proof",
    }
    assert good["answer"].to_list() == ["12", "\\frac{3}{4}", "2\\sqrt{2}", "1010"]  # \( \) dropped
    assert set(good["verifier"]) == {"math"}
    assert all(r and "<think>" not in r and "Okay" not in r for r in good["reference"])
    assert good["reference"][0].startswith("Write $60 = 2^2")
    # every answer checks against the boxed answer of its own reference with math-verify
    from pipeline.tasks.solver_format import parse_response
    from pipeline.tasks.verify import verify_answer

    assert all(
        verify_answer(parse_response(r).answer, a, method="math") for r, a in zip(good["reference"], good["answer"])
    )


def test_max_rows_reads_only_the_first_rows(tmp_path):
    source = DatasetSource(builder="json", data_files=(str(OMR_SAMPLE),), preset="openmathreasoning", max_rows=3)
    raw = load_source(source)  # streamed
    assert raw.height == 3 and raw["problem"][0].startswith("How many positive divisors")
    cfg = ProblemsConfig(source="dataset", seed=0, n_train=1, n_eval=1, n_dev=0, dataset=source)
    out = {name: tmp_path / f"{name}.parquet" for name in ("train", "eval", "dev", "rejects")}
    assert prepare_problems(**out, cfg=cfg) == {"train": 1, "eval": 1, "dev": 0, "rejects": 1}


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_a_file_that_is_not_utf8_is_named_with_its_line_and_nothing_is_written(tmp_path, suffix):
    from pipeline.problems import ProblemSourceError

    data = tmp_path / f"latin1.{suffix}"
    if suffix == "jsonl":
        lines = [json.dumps({"q": "What is 2 + 3?", "a": "5"}), '{"q": "Caf\xe9: what is 1 + 1?", "a": "2"}']
    else:
        lines = ["q,a", "What is 2 + 3?,5", "Caf\xe9: what is 1 + 1?,2"]
    data.write_bytes("\n".join(lines).encode("latin-1"))
    builder = "json" if suffix == "jsonl" else "csv"
    source = DatasetSource(builder=builder, data_files=(str(data),), question_column="q", answer_column="a")
    out = {name: tmp_path / f"{name}.parquet" for name in ("train", "eval", "dev", "rejects")}
    with pytest.raises(ProblemSourceError, match=f"{data}: line {len(lines)} is not UTF-8 .*Caf.*xe9"):
        prepare_problems(**out, cfg=ProblemsConfig(source="dataset", n_train=1, n_eval=1, dataset=source))
    assert not any(path.exists() for path in out.values())


def test_empty_huge_and_odd_text_and_non_numeric_exact_answers_are_rejected_with_reasons(tmp_path):
    rows = [
        {"q": "What is 2 + 3?", "a": "5"},
        {"q": "   \n\t ", "a": "1"},  # whitespace only
        {"q": "What is 7 + 1?" + " and then?" * 10_000, "a": "8"},  # ~100k characters
        {"q": "What is 6 / 2?", "a": "three"},  # exact verifier, no number
        {"q": "What is 6 / 2?", "a": ""},  # empty answer
        {"q": "Combien font 2 \u00d7 4 ? \U0001f34e\u200b", "a": "8"},  # non-ASCII UTF-8 is fine
        {"q": "what is 2 + 3?", "a": "5"},  # a duplicate question
        {"q": "What is 9 - 4?", "a": "5"},
    ]
    data = tmp_path / "odd.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    source = DatasetSource(
        builder="json", data_files=(str(data),), question_column="q", answer_column="a", verifier="exact"
    )
    out = {name: tmp_path / f"{name}.parquet" for name in ("train", "eval", "dev", "rejects")}
    counts = prepare_problems(**out, cfg=ProblemsConfig(source="dataset", n_train=5, n_eval=1, n_dev=0, dataset=source))
    rejects = read_artifact(out["rejects"], schema=REJECTS_SCHEMA, artifact="rejects")
    assert dict(zip(rejects["row_index"], rejects["reason"])) == {
        1: "no question",
        2: "question too long",
        3: "unparsable answer",
        4: "no answer",
        6: "duplicate question",
    }
    assert counts == {"train": 2, "eval": 1, "dev": 0, "rejects": 5}
    kept = pl.concat([read_artifact(out[s], schema=PROBLEMS_SCHEMA, artifact="problems") for s in ("train", "eval")])
    assert "Combien font 2 \u00d7 4 ? \U0001f34e\u200b" in kept["question"].to_list()
    assert kept["problem_id"].n_unique() == kept.height  # ids are unique by construction
