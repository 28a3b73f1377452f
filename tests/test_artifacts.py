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
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def write_version(path, text: str) -> None:
    with versioned_dir(path) as version:
        (version / "weights").write_text(text)


def test_versioned_dir_swaps_a_link_and_keeps_the_previous_version_until_then(tmp_path):
    path = tmp_path / "round_1"
    write_version(path, "one")
    first = path.resolve()
    assert path.is_symlink() and first.parent == tmp_path and first.name.startswith(".round_1.version-")
    assert (path / "weights").read_text() == "one" and oct(first.stat().st_mode & 0o777) == "0o755"
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
