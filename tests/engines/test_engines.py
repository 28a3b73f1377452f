import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.engines import SamplingConfig
from pipeline.engines.base import tail_logmass_from_topk
from pipeline.engines.hf import HFEngine
from tests.conftest import ROOT, offline_env


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    return HFEngine(tiny_model_dir, seed=0)


def test_score_is_aligned_to_completion_positions(hf):
    """Position t of the scores predicts completion token t from prompt + completion[:t]."""
    prompt, completion = [5, 17, 42, 99], [7, 8, 300]
    (scores,) = hf.score([prompt], [completion], top_k=5)
    full = torch.log_softmax(hf.model(torch.tensor([prompt + completion])).logits[0].float(), dim=-1)
    for t, token in enumerate(completion):
        row = full[len(prompt) - 1 + t]  # the logits at the previous position predict this token
        assert scores.token_logprobs[t] == pytest.approx(row[token].item(), abs=1e-5)
        assert set(scores.topk_ids[t].tolist()) == set(row.topk(5).indices.tolist())


def test_k_equal_to_vocab_reproduces_the_full_softmax(hf):
    (scores,) = hf.score([[3, 4, 5]], [[6, 7]], top_k=hf.vocab_size)
    assert scores.topk_ids.shape == (2, hf.vocab_size)
    np.testing.assert_allclose(np.exp(scores.topk_logprobs.astype(np.float64)).sum(-1), 1.0, atol=1e-5)
    assert np.all(np.isneginf(scores.tail_logmass))


def test_tail_logmass_is_exact(hf):
    (scores,) = hf.score([[3, 4, 5]], [[6, 7, 8]], top_k=4)
    mass = np.exp(scores.topk_logprobs.astype(np.float64)).sum(-1) + np.exp(scores.tail_logmass.astype(np.float64))
    np.testing.assert_allclose(mass, 1.0, atol=1e-5)
    np.testing.assert_allclose(tail_logmass_from_topk(scores.topk_logprobs), scores.tail_logmass, atol=1e-4)


def test_batched_scoring_equals_one_at_a_time(hf):
    prompts, completions = [[1, 2, 3, 4, 5, 6], [9, 10]], [[7, 8], [11, 12, 13, 14]]
    batched = hf.score(prompts, completions, top_k=3)
    for p, c, b in zip(prompts, completions, batched):
        (single,) = hf.score([p], [c], top_k=3)
        np.testing.assert_allclose(single.token_logprobs, b.token_logprobs, atol=1e-5)


def test_generate_returns_ids_logprobs_and_finish_reason(hf, tiny_model_dir):
    (samples,) = hf.generate([[5, 6, 7]], SamplingConfig(n=3, temperature=1.0, max_tokens=6))
    assert len(samples) == 3
    for s in samples:
        assert len(s.token_ids) == len(s.logprobs) <= 6
        assert s.finish_reason in ("stop", "length")
        assert all(lp <= 0 for lp in s.logprobs)
    # the sampled-token log-probs are the temperature-1 model log-probs of those tokens
    (scored,) = hf.score([[5, 6, 7]], [samples[0].token_ids], top_k=1)
    np.testing.assert_allclose(scored.token_logprobs, samples[0].logprobs, atol=1e-4)


def test_generation_is_seeded(tiny_model_dir):
    runs = [HFEngine(tiny_model_dir, seed=3).generate([[5, 6, 7]], SamplingConfig(n=2, max_tokens=8)) for _ in range(2)]
    assert [s.token_ids for s in runs[0][0]] == [s.token_ids for s in runs[1][0]]


@pytest.mark.slow
def test_vllm_and_transformers_agree_on_topk_logprobs(hf, tiny_model_dir, tmp_path):
    """Engine parity on the smoke model, fp32: top-k log-probs within 1e-4."""
    rng = np.random.default_rng(0)
    prompts = [rng.integers(5, hf.vocab_size, size=n).tolist() for n in (40, 23, 61)]
    completions = [rng.integers(5, hf.vocab_size, size=n).tolist() for n in (30, 12, 45)]
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {"prompts": prompts, "completions": completions, "top_k": 20, "generate_prompts": prompts, "max_tokens": 16}
        )
    )
    result = tmp_path / "result.npz"
    cmd = [sys.executable, str(ROOT / "tests/engines/vllm_worker.py"), str(tiny_model_dir), str(request), str(result)]
    network_log = tmp_path / "network.jsonl"
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900, env=offline_env(network_log))
    assert out.returncode == 0, out.stderr[-3000:]
    assert [e for e in map(json.loads, network_log.read_text().splitlines()) if e["event"] != "loaded"] == []
    got = np.load(result)
    for i, reference in enumerate(hf.score(prompts, completions, top_k=20)):
        np.testing.assert_allclose(got[f"{i}_token_logprobs"], reference.token_logprobs, atol=1e-4)
        np.testing.assert_allclose(got[f"{i}_topk_logprobs"], reference.topk_logprobs, atol=1e-4)
        same_sets = [set(a) == set(b) for a, b in zip(got[f"{i}_topk_ids"].tolist(), reference.topk_ids.tolist())]
        assert np.mean(same_sets) >= 0.99  # near-ties at the k-th place may swap
        np.testing.assert_allclose(got[f"{i}_tail_logmass"], reference.tail_logmass, atol=1e-3)
    greedy = hf.generate(prompts, SamplingConfig(temperature=0.0, max_tokens=16))
    for i, (sample,) in enumerate(greedy):
        assert got[f"greedy_{i}_ids"].tolist() == sample.token_ids
        np.testing.assert_allclose(got[f"greedy_{i}_logprobs"], sample.logprobs, atol=1e-4)


@pytest.mark.slow
def test_server_engine_matches_in_process_and_serves_a_lora_student(hf, tiny_model_dir, tmp_path, monkeypatch):
    """A real vLLM OpenAI-compatible server on loopback: scores, greedy text, and a runtime adapter.

    The server runs with the network blocked, asks for none, and every socket its processes listen
    on is on loopback.
    """
    import socket

    import psutil  # a dependency of vllm

    from pipeline.config import LoraSettings
    from pipeline.engines.server import ServerEngine, launched_server
    from pipeline.training import load_student, save_student

    model, tokenizer, base = load_student(tiny_model_dir, LoraSettings(r=8, alpha=16))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # a fresh adapter is a no-op; make it matter
    student = tmp_path / "student"
    save_student(model, tokenizer, student, base_dir=base, details={})

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prompts, completions = [[5, 6, 7, 8, 9] * 4], [[20, 21, 22, 23]]
    network_log = tmp_path / "network.jsonl"
    for key, value in offline_env(network_log).items():
        monkeypatch.setenv(key, value)  # the server inherits it
    with launched_server(
        tiny_model_dir, port=port, log_path=tmp_path / "server.log", max_model_len=512, lora_rank=8
    ) as url:
        servers = [p for p in psutil.process_iter(["cmdline"]) if f"{port}" in (p.info["cmdline"] or [])]
        tree = [*servers, *(child for p in servers for child in p.children(recursive=True))]
        listening = {
            (c.laddr.ip, c.laddr.port)
            for p in tree
            for c in p.net_connections("inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert (("127.0.0.1", port) in listening) and {ip for ip, _ in listening} == {"127.0.0.1"}, listening
        base_engine = ServerEngine(tiny_model_dir, base_url=url)
        (got,) = base_engine.score(prompts, completions, top_k=5)
        (want,) = hf.score(prompts, completions, top_k=5)
        np.testing.assert_allclose(got.token_logprobs, want.token_logprobs, atol=1e-4)
        np.testing.assert_allclose(got.topk_logprobs, want.topk_logprobs, atol=1e-4)
        (greedy,) = base_engine.generate(prompts, SamplingConfig(temperature=0.0, max_tokens=8))
        (reference,) = hf.generate(prompts, SamplingConfig(temperature=0.0, max_tokens=8))
        assert greedy[0].token_ids == reference[0].token_ids
        (adapted,) = ServerEngine(student, base_url=url).score(prompts, completions, top_k=5)
        (want_adapted,) = HFEngine(student, seed=0).score(prompts, completions, top_k=5)
        np.testing.assert_allclose(adapted.token_logprobs, want_adapted.token_logprobs, atol=1e-4)
        assert np.abs(adapted.token_logprobs - got.token_logprobs).max() > 1e-3
    seen = [json.loads(line) for line in network_log.read_text().splitlines()]
    assert seen and [e for e in seen if e["event"] != "loaded"] == []


def test_tcmalloc_is_preloaded_once_and_kept_beside_the_users_preloads():
    from pipeline.engines.vllm_engine import tcmalloc_preload

    lib = "libtcmalloc_minimal.so.4"
    assert tcmalloc_preload("", lib) == lib
    assert tcmalloc_preload("/opt/libiomp5.so", lib) == f"{lib}:/opt/libiomp5.so"
    assert tcmalloc_preload("/usr/lib/libtcmalloc.so", lib) is None  # the user's own choice stands
    assert tcmalloc_preload("/opt/libiomp5.so", None) is None  # not installed: nothing changes


def test_the_cpu_server_uses_the_in_process_engines_kv_block_size():
    from pipeline.engines.server import server_command
    from pipeline.engines.vllm_engine import CPU_BLOCK_SIZE

    kwargs = dict(port=8000, max_model_len=64, max_logprobs=1, lora_rank=0, enforce_eager=True)
    cmd = server_command("m", **kwargs, block_size=CPU_BLOCK_SIZE)
    assert cmd[cmd.index("--block-size") + 1] == str(CPU_BLOCK_SIZE)
    assert "--block-size" not in server_command("m", **kwargs)  # GPUs keep vLLM's own


def test_timing_stats_are_rounded_and_the_rate_is_none_when_nothing_ran():
    from pipeline.engines import timing_stats

    assert timing_stats(1.234, 2.0, 301) == {"startup_s": 1.23, "generate_s": 2.0, "tokens_per_s": 150.5}
    assert timing_stats(0.5, 0.25, 10, work="score") == {"startup_s": 0.5, "score_s": 0.25, "tokens_per_s": 40.0}
    assert timing_stats(0.0, 0.0, 0)["tokens_per_s"] is None  # e.g. the oracle critic: no engine
