"""transformers engine: the exact reference, and the fast path for tiny models."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from pipeline.engines.base import Completion, SamplingConfig, TokenScores, check_lengths
from pipeline.engines.checkpoint import load_adapter, load_tokenizer, resolve_checkpoint
from pipeline.memory import LOGITS_BUDGET_BYTES

log = logging.getLogger(__name__)


def _batches(order: Sequence[int], sizes: Sequence[int], budget_tokens: int, max_rows: int) -> Iterator[list[int]]:
    """Group indices (in ``order``) so each batch's padded size (rows x largest size) stays under
    ``budget_tokens`` and it holds at most ``max_rows`` rows."""
    batch: list[int] = []
    longest = 0
    for i in order:
        longest_if = max(longest, sizes[i])
        if batch and (longest_if * (len(batch) + 1) > budget_tokens or len(batch) >= max_rows):
            yield batch
            batch, longest_if = [], sizes[i]
        batch.append(i)
        longest = longest_if
    if batch:
        yield batch


class HFEngine:
    """A ``transformers`` causal LM in-process (CPU fp32 by default)."""

    name = "transformers"

    def __init__(
        self,
        model_path: str | Path,
        *,
        seed: int = 0,
        dtype: str = "float32",
        device: str | None = None,
        max_batch_rows: int = 64,
        share_prefix: bool = True,
    ) -> None:
        from transformers import AutoModelForCausalLM

        start = time.perf_counter()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        base_dir, adapter_dir = resolve_checkpoint(model_path)
        self.tokenizer = load_tokenizer(model_path)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, dtype), use_safetensors=True)
        if adapter_dir is not None:  # a LoRA student: merge for plain-speed inference
            model = load_adapter(model, adapter_dir).merge_and_unload()
        self.model = model.to(self.device).eval()
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        )
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else self.tokenizer.eos_token_id])
        self.max_batch_rows = max_batch_rows
        self.share_prefix = share_prefix  # score: compute a batch's common prompt prefix once
        torch.manual_seed(seed)
        self.startup_s = time.perf_counter() - start
        log.info("transformers engine: %s loaded in %.1fs on %s", model_path, self.startup_s, self.device)

    def _left_pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig) -> list[list[Completion]]:
        per_row = sampling.max_tokens * self.vocab_size * 4 * sampling.n
        prompts_per_batch = max(1, min(self.max_batch_rows // sampling.n or 1, LOGITS_BUDGET_BYTES // per_row))
        results: list[list[Completion]] = []
        n_batches = -(-len(prompts) // prompts_per_batch)
        for start in range(0, len(prompts), prompts_per_batch):
            log.info("generate: batch %d/%d", start // prompts_per_batch + 1, n_batches)
            chunk = prompts[start : start + prompts_per_batch]
            ids, mask = self._left_pad(chunk)
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=sampling.temperature > 0,
                # sampling: exactly temperature + top-p (top_k=0 turns off transformers' default top-50)
                temperature=sampling.temperature if sampling.temperature > 0 else None,
                top_p=sampling.top_p if sampling.temperature > 0 else None,
                top_k=0 if sampling.temperature > 0 else None,
                max_new_tokens=sampling.max_tokens,
                num_return_sequences=sampling.n,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self.pad_id,
                eos_token_id=sorted(self.eos_ids),
            )
            new = out.sequences[:, ids.shape[1] :]
            # Raw (temperature-1) logits of each generated position -> log-prob of the sampled token.
            token_lp = torch.stack(
                [
                    torch.log_softmax(step.float(), dim=-1).gather(1, new[:, t : t + 1]).squeeze(1)
                    for t, step in enumerate(out.logits)
                ],
                dim=1,
            )
            for p in range(len(chunk)):
                samples = []
                for j in range(sampling.n):
                    row = p * sampling.n + j
                    tokens = new[row].tolist()
                    stop = next((t for t, tok in enumerate(tokens) if tok in self.eos_ids), None)
                    keep = len(tokens) if stop is None else stop + 1
                    tokens = tokens[:keep]
                    samples.append(
                        Completion(
                            text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                            token_ids=tokens,
                            logprobs=token_lp[row, :keep].tolist(),
                            finish_reason="length" if stop is None else "stop",
                        )
                    )
                results.append(samples)
        return results

    @torch.inference_mode()
    def score(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *, top_k: int
    ) -> list[TokenScores]:
        check_lengths(prompts, completions)
        k = min(top_k, self.vocab_size)
        rows = [list(p) + list(c) for p, c in zip(prompts, completions)]
        sizes = [len(r) for r in rows]
        kept = [len(c) + 1 for c in completions]  # logits are kept at completion positions only
        # Prompts in token order: a batch's rows share a long prefix (template, instruction,
        # example), whose keys and values are computed once per batch, not once per row.
        order = sorted(range(len(rows)), key=lambda i: list(prompts[i]))
        budget = max(max(kept, default=1), LOGITS_BUDGET_BYTES // max(1, 4 * self.vocab_size))
        results: list[TokenScores | None] = [None] * len(rows)
        groups = list(_batches(order, kept, budget, self.max_batch_rows))
        for number, batch in enumerate(groups, start=1):
            shared = shared_prefix_length([prompts[i] for i in batch]) if self.share_prefix else 0
            log.info(
                "score: batch %d/%d (%d sequences, up to %d tokens, %d shared)",
                number, len(groups), len(batch), max(sizes[i] for i in batch), shared,
            )  # fmt: skip
            keep = max(len(completions[i]) for i in batch) + 1
            logits = self._completion_logits([rows[i] for i in batch], shared, keep)
            for b, i in enumerate(batch):
                n = len(completions[i])
                # Left padding aligns every row's end: the logits predicting completion token t of
                # row i sit at kept position keep - n - 1 + t.
                logprobs = torch.log_softmax(logits[b, keep - n - 1 : keep - 1].float(), dim=-1)
                results[i] = _scores_from_logprobs(
                    logprobs, torch.tensor(completions[i], dtype=torch.long, device=logprobs.device), k
                )
        return results  # type: ignore[return-value]  # every index was filled

    def _completion_logits(self, rows: Sequence[Sequence[int]], shared: int, keep: int) -> torch.Tensor:
        """Logits ``[B, keep, V]`` at the last ``keep`` positions of left-padded ``rows``.

        The first ``shared`` tokens (common to every row) run once, and their keys and values are
        repeated for the batch; the rest of each row is left-padded after them.
        """
        if shared == 0:
            ids, mask = self._left_pad(rows)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
        prefix = torch.tensor([list(rows[0][:shared])], dtype=torch.long, device=self.device)
        cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
        cache.batch_repeat_interleave(len(rows))
        ids, mask = self._left_pad([row[shared:] for row in rows])
        positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
        full_mask = torch.cat([torch.ones((len(rows), shared), dtype=mask.dtype, device=mask.device), mask], dim=1)
        return self.model(
            input_ids=ids, attention_mask=full_mask, position_ids=positions, past_key_values=cache, logits_to_keep=keep
        ).logits

    def close(self) -> None:
        del self.model


def shared_prefix_length(prompts: Sequence[Sequence[int]], minimum: int = 16) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own (0 below ``minimum``
    or for a single prompt, where sharing saves nothing)."""
    if len(prompts) < 2:
        return 0
    shortest = min(len(p) for p in prompts) - 1
    n = 0
    while n < shortest and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n if n >= minimum else 0


def _scores_from_logprobs(logprobs: torch.Tensor, targets: torch.Tensor, k: int) -> TokenScores:
    """Top-k, realised-token log-prob and exact tail log-mass from full ``[T, V]`` log-probs."""
    top_lp, top_ids = logprobs.topk(k, dim=-1)
    rest = logprobs.scatter(1, top_ids, float("-inf"))
    return TokenScores(
        topk_ids=top_ids.to(torch.int32).cpu().numpy(),
        topk_logprobs=top_lp.cpu().numpy().astype(np.float32),
        token_logprobs=logprobs.gather(1, targets[:, None]).squeeze(1).cpu().numpy().astype(np.float32),
        tail_logmass=torch.logsumexp(rest, dim=-1).cpu().numpy().astype(np.float32),
    )
