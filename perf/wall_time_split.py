"""Benchmark: where a finished run's wall time went, from its own logs.

Reads Snakemake's run logs (``.snakemake/log/*.snakemake.log``: when each job started and finished)
and each job's log (``logs/...``: timestamped lines, and the engines' "started in" / "loaded in"
lines). Each job's wall time is split into

- **process start-up**: from Snakemake starting the job to the job's first log line (Python and
  library imports, config parsing);
- **engine start-up**: the model loads the job logs ("started in" / "loaded in": vLLM and
  transformers engines, the trainers' student);
- **model compute**: the rest of the job up to its last log line (sampling, scoring, training, I/O);
- **teardown**: from the last log line to Snakemake seeing the job finish (engine shutdown, exit).

**Snakemake overhead** is the run's wall time outside every job (DAG building, scheduling, checks).
A run resumed after a kill is several Snakemake logs: their walls add up, and a job the kill stopped
is listed as lost time.

    .venv/bin/python perf/wall_time_split.py                           # in the run's folder
    .venv/bin/python perf/wall_time_split.py --run RUN --logs RUN/.snakemake/log/A.snakemake.log

A job whose log a later run rewrote counts whole as model compute (the script says how many).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

SNAKEMAKE_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
SNAKEMAKE_DATE = re.compile(r"^\s*Date: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)$")
JOB_START = re.compile(r"^(?:local)?rule (\w+):$")
JOB_FINISH = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")
LOG_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
ENGINE_START = re.compile(r"(?:started|loaded) in ([0-9.]+)s")
PARTS = ("process start-up", "engine start-up", "model compute", "teardown")


@dataclass
class Job:
    """One job of a Snakemake run: its rule, log and the times Snakemake saw it start and end."""

    rule: str
    start: datetime
    log: str | None = None
    jobid: str | None = None
    end: datetime | None = None
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    """One Snakemake invocation: its first and last timestamp and its jobs."""

    start: datetime
    end: datetime
    jobs: list[Job]


def parse_snakemake_log(path: Path) -> Run | None:
    """Jobs (rule, log, start, end) and the first and last timestamps of one Snakemake run log.

    None for a log without timestamps (``--unlock``, ``-n``)."""
    lines = path.read_text().splitlines()
    stamp: datetime | None = None
    first: datetime | None = None
    jobs: list[Job] = []
    open_jobs: dict[str, Job] = {}
    current: Job | None = None
    for line in lines:
        if m := SNAKEMAKE_DATE.match(line):
            first = first or datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        elif m := SNAKEMAKE_STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            first = first or stamp
        elif (m := JOB_START.match(line)) and stamp is not None:
            current = Job(rule=m.group(1), start=stamp)
            jobs.append(current)
        elif current is not None and line.startswith("    log: "):
            current.log = line.removeprefix("    log: ").split(",")[0].strip()
        elif current is not None and line.startswith("    jobid: "):
            current.jobid = line.removeprefix("    jobid: ").strip()
            open_jobs[current.jobid] = current
        elif (m := JOB_FINISH.match(line)) and stamp is not None and m.group(1) in open_jobs:
            open_jobs.pop(m.group(1)).end = stamp
    if first is None or stamp is None:
        return None
    return Run(start=first, end=stamp, jobs=[job for job in jobs if job.rule != "all"])


def log_span(path: Path) -> tuple[datetime, datetime, float] | None:
    """First and last timestamps of a job log and the engine start-up seconds it reports."""
    if not path.is_file():
        return None
    stamps, engine = [], 0.0
    for line in path.read_text(errors="replace").splitlines():
        if m := LOG_STAMP.match(line):
            stamps.append(datetime.strptime(f"{m.group(1)}.{m.group(2)}", "%Y-%m-%d %H:%M:%S.%f"))
            if e := ENGINE_START.search(line):
                engine += float(e.group(1))
    return (stamps[0], stamps[-1], engine) if stamps else None


def split_job(job: Job, run_dir: Path) -> bool:
    """Fill ``job.parts`` (seconds per part) from its log; False when the job has no log of its own
    (none, or one a later run rewrote): then it is all compute."""
    assert job.end is not None
    wall = (job.end - job.start).total_seconds()
    span = log_span(run_dir / job.log) if job.log else None
    if span is None or span[0] > job.end or span[1] < job.start:
        job.parts = {"model compute": wall}
        return False
    first, last, engine = span
    startup = max((first - job.start).total_seconds(), 0.0)
    teardown = max((job.end - last).total_seconds(), 0.0)
    job.parts = {
        "process start-up": startup,
        "engine start-up": engine,
        "model compute": max(wall - startup - teardown - engine, 0.0),
        "teardown": teardown,
    }
    return True


def busy_seconds(jobs: list[Job]) -> float:
    """Seconds during which at least one job ran (jobs may overlap)."""
    spans = sorted((job.start, job.end) for job in jobs if job.end is not None)
    total, cursor = 0.0, None
    for start, end in spans:
        if cursor is None or start > cursor:
            total += (end - start).total_seconds()
            cursor = end
        elif end > cursor:
            total += (end - cursor).total_seconds()
            cursor = end
    return total


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:4.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("."), help="the run's folder (holds .snakemake/ and logs/)")
    parser.add_argument(
        "--logs", type=Path, nargs="+", help="the Snakemake logs of the run (default: every one under .snakemake/log)"
    )
    args = parser.parse_args()
    logs = args.logs or sorted((args.run / ".snakemake" / "log").glob("*.snakemake.log"))
    runs = [run for run in map(parse_snakemake_log, logs) if run is not None and run.jobs]
    if not runs:
        raise SystemExit(f"no Snakemake run with jobs under {args.run / '.snakemake' / 'log'}")
    per_rule: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(PARTS, 0.0))
    counts: dict[str, int] = defaultdict(int)
    wall = overhead = lost = 0.0
    without_log = 0
    for run, resumed_at in zip(runs, [later.start for later in runs[1:]] + [None]):
        finished = [job for job in run.jobs if job.end is not None]
        for job in finished:
            without_log += not split_job(job, args.run)
            counts[job.rule] += 1
            for part, seconds in job.parts.items():
                per_rule[job.rule][part] += seconds
        for job in run.jobs:
            span = log_span(args.run / job.log) if job.end is None and job.log else None
            # Killed: its work is lost and the run ended with its last log line, unless the resumed
            # run has rewritten that log (then the loss is unknown and not counted).
            if span is not None and (resumed_at is None or span[1] < resumed_at):
                lost += (span[1] - job.start).total_seconds()
                run.end = max(run.end, span[1])
        wall += (run.end - run.start).total_seconds()
        overhead += (run.end - run.start).total_seconds() - busy_seconds(finished)
    overhead -= lost
    if runs[-1].jobs[-1].end is None and lost == 0:
        print("note: the last run has an unfinished job (still running?)")
    print(f"{len(runs)} Snakemake run(s), wall {minutes(wall)}")
    print(f"| rule | jobs | {' | '.join(PARTS)} | total |")
    print("| --- | ---: | " + " | ".join("---:" for _ in PARTS) + " | ---: |")
    totals = dict.fromkeys(PARTS, 0.0)
    for rule in sorted(per_rule, key=lambda r: -sum(per_rule[r].values())):
        parts = per_rule[rule]
        for part in PARTS:
            totals[part] += parts[part]
        cells = " | ".join(f"{parts[part]:.0f} s" for part in PARTS)
        print(f"| {rule} | {counts[rule]} | {cells} | {sum(parts.values()):.0f} s |")
    cells = " | ".join(f"**{totals[part]:.0f} s**" for part in PARTS)
    print(f"| all jobs | {sum(counts.values())} | {cells} | **{sum(totals.values()):.0f} s** |")
    for part in PARTS:
        print(f"{part}: {minutes(totals[part])} ({totals[part] / wall:.1%} of wall)")
    print(f"Snakemake overhead (wall outside every job): {minutes(overhead)} ({overhead / wall:.1%} of wall)")
    if without_log:
        print(f"note: {without_log} job(s) without a log of their own (none, or rewritten by a later run): all compute")
    if lost:
        print(f"lost to the kill (unfinished jobs, rerun after resuming): {minutes(lost)}")


if __name__ == "__main__":
    main()
