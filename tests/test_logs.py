import logging
import logging.config

from pipeline.logs import setup_logging


def test_job_log_survives_a_library_reconfiguring_logging(tmp_path):
    """vLLM calls dictConfig, which closes every existing handler; the job log must keep going."""
    path = tmp_path / "job.log"
    setup_logging(path)
    logging.getLogger("pipeline.test").info("before")
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    logging.getLogger("pipeline.test").info("after")
    logging.shutdown()
    text = path.read_text()
    assert "before" in text and "after" in text


def test_job_log_records_the_disk_its_outputs_take(tmp_path, caplog):
    from pipeline.logs import DISK_USE_LINE, disk_use, log_disk_use

    (tmp_path / "a.parquet").write_bytes(b"x" * 10_000)
    version = tmp_path / ".model.version-1"
    version.mkdir()
    (version / "model.safetensors").write_bytes(b"y" * 50_000)
    (tmp_path / "model").symlink_to(version.name)  # a checkpoint link counts the folder it points to
    with caplog.at_level(logging.INFO, logger="pipeline.logs"):
        total = log_disk_use([tmp_path / "a.parquet", tmp_path / "model"])
    assert disk_use(tmp_path / "model") >= 50_000 and disk_use(tmp_path / "a.parquet") >= 10_000
    assert total == disk_use(tmp_path / "a.parquet") + disk_use(tmp_path / "model")
    assert DISK_USE_LINE.format(total=total) in caplog.text
