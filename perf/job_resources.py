"""Print every job's wall time, peak memory and the disk its outputs take, from a run's folder.

Peak RSS and time come from Snakemake's ``benchmarks/<rule>/<job>.tsv`` (``max_rss`` in MiB, summed over
the job's processes), the disk use from the last line its job wrote to ``logs/<rule>/<job>.log``
(``pipeline.logs.log_disk_use``). A job without that line (still running, failed, or from before the
line existed) shows ``-``.

    .venv/bin/python perf/job_resources.py [RUN_FOLDER]
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.logs import DISK_USE_LINE  # noqa: E402

MIB = 1 << 20
DISK_USE = re.compile(re.escape(DISK_USE_LINE).replace(r"\{total\}", r"(\d+)"))


def job_resources(run: Path) -> list[dict]:
    """One record per benchmarked job: rule, job, seconds, max_rss_mib, disk_mib (None if unknown)."""
    records = []
    for bench in sorted((run / "benchmarks").rglob("*.tsv")):
        rows = list(csv.DictReader(bench.open(), delimiter="\t"))
        if not rows:
            continue
        relative = bench.relative_to(run / "benchmarks")
        log = (run / "logs" / relative).with_suffix(".log")
        found = DISK_USE.findall(log.read_text()) if log.is_file() else []
        records.append(
            {
                "rule": relative.parts[0],
                "job": str(Path(*relative.parts[1:]).with_suffix("")),
                "seconds": float(rows[-1]["s"]),
                "max_rss_mib": float(rows[-1]["max_rss"]) if rows[-1]["max_rss"] != "NA" else None,
                "disk_mib": int(found[-1]) / MIB if found else None,
            }
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, default=Path("."), help="the run's folder (default: here)")
    records = job_resources(parser.parse_args().run)
    print(f"{'rule':30s} {'job':36s} {'time s':>8s} {'max RSS MiB':>12s} {'outputs MiB':>12s}")
    for r in records:
        rss = "-" if r["max_rss_mib"] is None else f"{r['max_rss_mib']:.0f}"
        disk = "-" if r["disk_mib"] is None else f"{r['disk_mib']:.2f}"
        print(f"{r['rule']:30s} {r['job']:36s} {r['seconds']:8.1f} {rss:>12s} {disk:>12s}")
    peak = max((r for r in records if r["max_rss_mib"] is not None), key=lambda r: r["max_rss_mib"], default=None)
    disk = sum(r["disk_mib"] or 0 for r in records)
    if peak:
        print(f"peak RSS: {peak['max_rss_mib']:.0f} MiB ({peak['rule']} {peak['job']}); outputs: {disk:.1f} MiB")


if __name__ == "__main__":
    main()
