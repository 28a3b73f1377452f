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
