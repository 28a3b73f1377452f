import os

import polars as pl
import pytest

from pipeline.artifacts import (
    SCHEMA_VERSION,
    SchemaError,
    read_metadata,
    validate_frame,
    versioned_dir,
    write_artifact,
)

SCHEMA = pl.Schema({"trace_id": pl.String, "topk_ids": pl.List(pl.Array(pl.Int32, 3))})


def frame() -> pl.DataFrame:
    return pl.DataFrame({"trace_id": ["a"], "topk_ids": [[[1, 2, 3], [4, 5, 6]]]}, schema=SCHEMA)


def test_round_trip_keeps_types_and_metadata(tmp_path):
    path = write_artifact(
        frame(), tmp_path / "x.parquet", schema=SCHEMA, artifact="toy", stage="s", params={"k": 3}, model="m"
    )
    assert pl.scan_parquet(path).collect_schema() == SCHEMA
    meta = read_metadata(path)
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert meta["params"] == {"k": 3} and meta["stage"] == "s" and meta["model"] == "m"


def test_wrong_schema_is_rejected_naming_the_column(tmp_path):
    bad = frame().with_columns(pl.col("trace_id").cast(pl.Categorical))
    with pytest.raises(SchemaError, match="column 'trace_id' is Categorical"):
        write_artifact(bad, tmp_path / "x.parquet", schema=SCHEMA, artifact="toy", stage="s")
    with pytest.raises(SchemaError, match="missing column 'topk_ids'.*unexpected column 'extra'"):
        validate_frame(pl.DataFrame({"trace_id": ["a"], "extra": [1]}), SCHEMA, artifact="toy")
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = write_artifact(frame(), tmp_path / "x.parquet", schema=SCHEMA, artifact="toy", stage="s")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        write_artifact(frame(), path, schema=SCHEMA, artifact="toy", stage="s")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_write_json_is_atomic_and_sorted(tmp_path):
    import json

    from pipeline.artifacts import write_json

    path = write_json({"b": 1, "a": [0.5]}, tmp_path / "sub" / "summary.json")
    assert path.read_text() == json.dumps({"a": [0.5], "b": 1}, indent=2)
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]  # no temporary file left


def write_version(path, text: str) -> None:
    with versioned_dir(path) as version:
        (version / "weights").write_text(text)


def test_versioned_dir_swaps_a_link_and_keeps_the_previous_version_until_then(tmp_path):
    path = tmp_path / "round_1"
    write_version(path, "one")
    first = path.resolve()
    assert path.is_symlink() and first.parent == tmp_path and first.name.startswith(".round_1.version-")
    assert (path / "weights").read_text() == "one"
    with versioned_dir(path) as version:
        (version / "weights").write_text("two")
        assert (path / "weights").read_text() == "one"  # readers see the previous version until the swap
    assert (path / "weights").read_text() == "two"
    assert not first.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["round_1", path.resolve().name])


def test_versioned_dir_failure_or_kill_keeps_the_previous_version(tmp_path):
    path = tmp_path / "round_1"
    write_version(path, "one")
    first = path.resolve()
    with pytest.raises(RuntimeError, match="out of memory"), versioned_dir(path):
        raise RuntimeError("out of memory")
    assert (path / "weights").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["round_1", first.name])
    # a killed rerun: Snakemake unlinked the output before the job, which died mid-write
    path.unlink()
    stale = tmp_path / ".round_1.version-killed"
    stale.mkdir()
    (tmp_path / ".round_10.version-other").mkdir()  # another round's version is not this one's
    assert (first / "weights").read_text() == "one"
    write_version(path, "two")
    assert (path / "weights").read_text() == "two"
    assert not first.exists() and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".round_10.version-other", "round_1", path.resolve().name]
    )


def test_a_completed_write_removes_what_killed_writes_of_the_same_path_left(tmp_path):
    from pipeline.artifacts import remove_temporaries, staging_prefix, write_bytes_atomic

    killed = [tmp_path / ".x.parquet.a1b2_c3d.tmp", tmp_path / ".fig.png.zzzzzzzz.tmp"]
    kept = [tmp_path / ".x.parquet.tmp", tmp_path / ".x.parquet.v2.a1b2_c3d.tmp", tmp_path / "y.parquet"]
    for path in killed + kept:
        path.write_bytes(b"half")
    write_artifact(frame(), tmp_path / "x.parquet", schema=SCHEMA, artifact="toy", stage="s")
    write_bytes_atomic(b"png", tmp_path / "fig.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in [*kept, tmp_path / "x.parquet", tmp_path / "fig.png"]
    )

    (tmp_path / f"{staging_prefix(tmp_path / 'm')}abc").mkdir()  # a killed model preparation
    (tmp_path / f"{staging_prefix(tmp_path / 'm2')}abc").mkdir()  # another model's: not this one's
    (tmp_path / "m").mkdir()
    remove_temporaries(tmp_path / "m")
    assert not (tmp_path / ".m.staging-abc").exists() and (tmp_path / ".m2.staging-abc").is_dir()


def test_read_artifact_names_the_file_of_a_missing_truncated_or_foreign_input(tmp_path):
    from pipeline.artifacts import ArtifactReadError, read_artifact

    path = write_artifact(frame(), tmp_path / "x.parquet", schema=SCHEMA, artifact="toy", stage="s")
    data = path.read_bytes()
    cases = {"empty": b"", "first half": data[: len(data) // 2], "all but the last byte": data[:-1], "text": b"a,b\n"}
    for name, content in cases.items():
        bad = tmp_path / f"{name}.parquet"
        bad.write_bytes(content)
        with pytest.raises(ArtifactReadError, match=f"{bad} \\(toy\\): not a readable Parquet file"):
            read_artifact(bad, schema=SCHEMA, artifact="toy")
    with pytest.raises(ArtifactReadError, match="absent.parquet \\(toy\\): no such file"):
        read_artifact(tmp_path / "absent.parquet", schema=SCHEMA, artifact="toy")


def test_read_artifact_names_the_file_and_the_column_of_a_schema_mismatch(tmp_path):
    from pipeline.artifacts import read_artifact

    path = tmp_path / "foreign.parquet"
    pl.DataFrame({"trace_id": [1], "other": ["x"]}).write_parquet(path)
    with pytest.raises(SchemaError) as err:
        read_artifact(path, schema=SCHEMA, artifact="toy")
    message = str(err.value)
    assert message.startswith(f"{path} (toy): ")
    assert "column 'trace_id' is Int64, expected String" in message
    assert "missing column 'topk_ids'" in message and "unexpected column 'other'" in message


def test_read_artifact_rejects_a_repeated_row_key(tmp_path):
    from pipeline.artifacts import PROBLEMS_SCHEMA, ArtifactReadError, read_artifact

    row = {"split": "train", "question": "q", "answer": "1", "reference": "", "source": "s", "verifier": "exact"}
    ids = ["p1", "p2", "p1"]
    problems = pl.DataFrame(
        [{"problem_id": i, **row, "num_steps": 0, "steps": []} for i in ids], schema=PROBLEMS_SCHEMA
    )
    path = write_artifact(problems, tmp_path / "train.parquet", schema=PROBLEMS_SCHEMA, artifact="problems", stage="s")
    with pytest.raises(
        ArtifactReadError, match=r"train.parquet \(problems\): 1 repeated problem_id value\(s\), e.g. \('p1',\)"
    ):
        read_artifact(path, schema=PROBLEMS_SCHEMA, artifact="problems")
    assert read_artifact(path, schema=PROBLEMS_SCHEMA, artifact="toy").height == 3  # no key declared: read as is


def test_teacher_logprobs_are_read_with_their_own_k_and_checked(tmp_path):
    from pipeline.artifacts import read_teacher_logprobs, teacher_logprobs_schema

    for k, dtype in ((3, "float32"), (5, "float16")):
        schema = teacher_logprobs_schema(k, dtype)
        path = write_artifact(schema.to_frame(), tmp_path / f"t{k}.parquet", schema=schema, artifact="t", stage="s")
        assert read_teacher_logprobs(path).schema == schema
    bad = tmp_path / "bad.parquet"
    teacher_logprobs_schema(3).to_frame().drop("tail_logmass").write_parquet(bad)
    with pytest.raises(SchemaError, match=r"bad.parquet \(teacher_logprobs\): missing column 'tail_logmass'"):
        read_teacher_logprobs(bad)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_finished_artifacts_and_versions_follow_the_umask(tmp_path, umask):
    from pipeline.artifacts import write_json

    old = os.umask(umask)
    try:
        parquet = write_artifact(frame(), tmp_path / "x.parquet", schema=SCHEMA, artifact="toy", stage="s")
        summary = write_json({"a": 1}, tmp_path / "x.json")
        write_version(tmp_path / "round_1", "one")
        plain = tmp_path / "plain.txt"
        plain.write_text("as open() makes it")
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in (parquet, summary, plain)} == {oct(0o666 & ~umask)}
    assert oct((tmp_path / "round_1").resolve().stat().st_mode & 0o777) == oct(0o777 & ~umask)
