"""Run a training stage in this process, or in several with torchrun (``resources: gpu > 1``).

:func:`run_training` is what both trainers' adapter scripts call. With more than one GPU it writes
the stage call as a JSON job and runs
``python -m torch.distributed.run --standalone --nproc_per_node N -m pipeline.launch JOB``. Every
process builds the same typed config and calls the same stage function; the training loop shares
each optimizer step's micro-batches among the processes and sums their gradients, and only rank 0
writes outputs.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import from_params

# stage -> (module, config class, config section); named, not imported: the stages sit above this floor
STAGES = {
    "distill_student": ("pipeline.distill", "DistillConfig", "distill"),
    "train_grpo": ("pipeline.grpo", "GrpoConfig", "grpo"),
}


def _stage(stage: str) -> tuple[Callable[..., Any], type, str]:
    """The stage function, its config class and its config section."""
    module_name, config_name, section = STAGES[stage]
    function = getattr(importlib.import_module(module_name), stage)
    return function, getattr(importlib.import_module("pipeline.config"), config_name), section


def run_training(stage: str, *, devices: int, params: dict[str, Any], paths: dict[str, Path]) -> None:
    """Run the training ``stage`` on its config section ``params``: under torchrun with one process per
    device when ``devices`` > 1, else in this process."""
    if devices > 1:
        run_distributed(stage, nproc=devices, params=params, paths=paths)
        return
    function, config_class, section = _stage(stage)
    function(**paths, cfg=from_params(config_class, params, where=section))


def run_distributed(stage: str, *, nproc: int, params: dict[str, Any], paths: dict[str, str | Path]) -> None:
    """Launch ``stage`` under torchrun with ``nproc`` processes and wait for it."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as job:
        json.dump({"stage": stage, "params": params, "paths": {k: str(v) for k, v in paths.items()}}, job)
    try:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        subprocess.run([*cmd, "-m", "pipeline.launch", job.name], check=True)
    finally:
        os.unlink(job.name)


def main(job_path: str) -> None:
    import torch
    import torch.distributed as dist

    job = json.loads(Path(job_path).read_text())
    function, config_class, section = _stage(job["stage"])
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        paths = {key: Path(value) for key, value in job["paths"].items()}
        function(**paths, cfg=from_params(config_class, job["params"], where=section))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
