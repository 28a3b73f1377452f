"""Two gloo processes make the same update as one process on the same data."""

import pytest
import torch
import torch.multiprocessing as mp

from pipeline.config import DistillConfig, OptimConfig
from pipeline.distill import train_distill
from pipeline.training import load_student
from tests.test_distill import stored_teacher

CFG = DistillConfig(
    token_filter="none",
    teacher_temperature=1.0,
    mask_format_tokens=False,
    lora=None,
    optim=OptimConfig(lr=1e-3, batch_size=4, micro_batch_size=1, epochs=2),
)


def _worker(rank: int, world: int, model_dir: str, rows_path: str, init_file: str, out: str) -> None:
    import polars as pl
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model, _, _ = load_student(model_dir, None)
    log = train_distill(model, pl.read_parquet(rows_path), CFG)
    if rank == 0:
        torch.save({"params": {k: v.detach() for k, v in model.named_parameters()}, "loss": log["loss"].to_list()}, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_update_equals_one_process(tiny_model_dir, tmp_path):
    rows = stored_teacher(tiny_model_dir, n=4)
    rows_path = tmp_path / "rows.parquet"
    rows.write_parquet(rows_path)

    model, _, _ = load_student(tiny_model_dir, None)
    single_log = train_distill(model, rows, CFG)
    single = {k: v.detach() for k, v in model.named_parameters()}

    out = tmp_path / "ddp.pt"
    mp.spawn(
        _worker, args=(2, str(tiny_model_dir), str(rows_path), str(tmp_path / "init"), str(out)), nprocs=2, join=True
    )
    distributed = torch.load(out)
    torch.testing.assert_close(
        torch.tensor(distributed["loss"]), torch.tensor(single_log["loss"].to_list()), atol=1e-5, rtol=1e-4
    )
    moved = max(
        (single[k] - dict(load_student(tiny_model_dir, None)[0].named_parameters())[k]).abs().max().item()
        for k in single
    )
    assert moved > 1e-4  # training changed the weights at all
    for name, value in single.items():
        torch.testing.assert_close(distributed["params"][name], value, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_torchrun_launch_reproduces_the_one_process_student(smoke_run, tmp_path):
    """The path a gpu > 1 rule takes: torchrun with 2 gloo processes, on the smoke DAG's round 0."""
    import yaml
    from safetensors.torch import load_file

    from pipeline.launch import run_distributed
    from tests.conftest import SMOKE_CONFIG

    results = smoke_run / "results/seed_0"
    out_model = tmp_path / "round_1"
    params = yaml.safe_load(SMOKE_CONFIG.read_text())["distill"]
    params["optim"]["micro_batch_size"] = 1  # so that both processes get a sequence of each batch
    run_distributed(
        "distill_student",
        nproc=2,
        params=params,
        paths={
            "teacher_logprobs": results / "teacher_logprobs/critique/round_0.parquet",
            "traces": results / "traces/shared/round_0.parquet",
            "student": smoke_run / "resources/models/tiny-qwen2",
            "out_model": out_model,
            "out_log": tmp_path / "train_log.parquet",
        },
    )
    two = load_file(out_model / "model.safetensors")
    one = load_file(results / "students/critique/round_1/model.safetensors")
    assert two.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-5, rtol=1e-4)
