import polars as pl
import pytest

from pipeline.artifacts import SCHEMA_VERSION, SchemaError, read_metadata, validate_frame, write_artifact

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
    assert oct(path.stat().st_mode & 0o777) == "0o644"
