"""One logging setup for every stage: a per-job log file plus stderr."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The last line of every job's log: the disk its outputs take (perf/job_resources.py reads it).
DISK_USE_LINE = "outputs on disk: {total} bytes"

log = logging.getLogger(__name__)


def setup_logging(log_path: str | Path | None = None, *, level: int = logging.INFO) -> None:
    """Send ``pipeline.*`` logs to ``log_path`` (if given) and stderr; idempotent per process."""
    # vLLM would otherwise install its own logging config, and logging.config.dictConfig closes
    # every existing handler: the job's log file would silently stop. Its records then reach ours.
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text("")  # one log per job run
        # mode "a": a handler closed by someone else's dictConfig reopens instead of dropping records
        handlers.append(logging.FileHandler(log_path, mode="a"))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
    # The job's first timestamp: what precedes it is process start-up (imports), for
    # perf/wall_time_split.py.
    logging.getLogger(__name__).info("job started, logging to %s", log_path or "stderr")


def exit_cleanly() -> None:
    """End a job that may have started vLLM: flush, then exit 0 without interpreter teardown.

    vLLM's engine processes can abort a normal interpreter exit (exit code 134) after all outputs
    are written, which would fail the rule. Call this only after the outputs are complete.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def disk_use(path: str | Path) -> int:
    """Bytes ``path`` takes on disk (allocated blocks); a folder, or a link to one, counts every file under it."""
    path = Path(path).resolve()
    if not path.is_dir():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def log_disk_use(outputs: Iterable[str | Path]) -> int:
    """Log the disk the job's outputs take, in total and per output; return the total."""
    sizes = {str(path): disk_use(path) for path in outputs}
    total = sum(sizes.values())
    log.info(DISK_USE_LINE.format(total=total) + " (%s)", ", ".join(f"{p}: {n}" for p, n in sizes.items()))
    return total
