"""Pure tensor maths shared by distillation, GRPO and the advantage analysis.

Distillation losses compare the stored teacher top-k with the student at each completion token.
Two supports: ``topk`` renormalises both distributions on the teacher's k ids; ``tail`` adds one
bucket holding the rest of the mass (the stored tail log-mass for the teacher, ``1 - sum q_k`` for
the student), which with k = vocabulary size is the exact full-vocabulary divergence. A divergence
can clip each support entry's term (OPSD's and TRL's per-vocabulary-entry clip).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
Support = Literal["topk", "tail"]


def supported_logprobs(
    student_logprobs: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    teacher_tail: torch.Tensor,
    support: Support,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher, student) log-distributions on the shared support, shape [T, k] or [T, k + 1].

    ``student_logprobs`` is the student's full log-softmax ``[T, V]``; teacher tensors are the stored
    top-k ids/log-probs ``[T, k]`` and tail log-mass ``[T]``.
    """
    student_k = student_logprobs.gather(-1, teacher_ids.long())
    teacher_k = teacher_logprobs.float()
    if support == "topk":
        return teacher_k.log_softmax(-1), student_k.log_softmax(-1)
    # The student's tail summed directly over the ids outside the teacher's top-k: 1 - sum q_k would
    # round to 0 (log -> -inf) wherever the student is near-certain, as it is on its own samples.
    student_tail = torch.logsumexp(student_logprobs.scatter(-1, teacher_ids.long(), float("-inf")), dim=-1)
    # An empty teacher tail (k = vocabulary) means the student's is empty too, up to rounding.
    student_tail = torch.where(torch.isneginf(teacher_tail), torch.full_like(student_tail, float("-inf")), student_tail)
    teacher = torch.cat([teacher_k, teacher_tail.float()[..., None]], dim=-1)
    student = torch.cat([student_k, student_tail[..., None]], dim=-1)
    return teacher, student


def sharpen(log_p: torch.Tensor, temperature: float, *, tail: bool = False) -> torch.Tensor:
    """``log_p`` at temperature ``temperature``, renormalised over the last axis (1.0: unchanged).

    Exact on the top-k support. With ``tail`` the last entry is a bucket of many tokens, none more
    likely than the smallest top-k entry ``p_min``; each of its tokens' ``p^(1/T)`` is then at most
    ``p p_min^(1/T - 1)``, and the bucket is sharpened to that bound, ``m p_min^(1/T - 1)``: exact
    when the tail's tokens all sit at ``p_min``, an upper bound otherwise. So, for T < 1, the tail
    shrinks at least as fast as the least likely top-k token and never outgrows a top-k entry
    (treating the bucket as one token would let a 0.3 tail outgrow a 0.2 top-1).
    """
    if temperature == 1.0:
        return log_p
    if not tail:
        return (log_p / temperature).log_softmax(-1)
    top, bucket = log_p[..., :-1], log_p[..., -1:]
    smallest = top.min(-1, keepdim=True).values
    bucket = bucket + (1.0 / temperature - 1.0) * smallest
    return torch.cat([top / temperature, bucket], dim=-1).log_softmax(-1)


def entropy(log_p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) over the last axis of log-probabilities, with 0 * log 0 = 0."""
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(-1)


def _kl_terms(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """The summands ``p (log p - log q)`` of KL(p || q) over the last axis, with 0 * log 0 = 0."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))


def divergence_terms(
    log_teacher: torch.Tensor, log_student: torch.Tensor, kind: Divergence, beta: float = 0.5
) -> torch.Tensor:
    """Each support entry's term of the per-token divergence (same shape as the inputs).

    ``forward_kl`` is KL(teacher || student) (the paper's), ``reverse_kl`` is KL(student || teacher),
    ``jsd`` is the generalised Jensen-Shannon divergence with mixture ``m = beta p + (1 - beta) q``:
    ``beta KL(p || m) + (1 - beta) KL(q || m)``.
    """
    if kind == "forward_kl":
        return _kl_terms(log_teacher, log_student)
    if kind == "reverse_kl":
        return _kl_terms(log_student, log_teacher)
    if kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise ValueError(f"jsd needs 0 < beta < 1, got {beta}")
        log_m = torch.logsumexp(
            torch.stack([log_teacher + torch.log(torch.tensor(beta)), log_student + torch.log(torch.tensor(1 - beta))]),
            dim=0,
        )
        return beta * _kl_terms(log_teacher, log_m) + (1 - beta) * _kl_terms(log_student, log_m)
    raise ValueError(f"unknown divergence {kind!r}")


def divergence(
    log_teacher: torch.Tensor,
    log_student: torch.Tensor,
    kind: Divergence,
    beta: float = 0.5,
    *,
    entry_clip: float | None = None,
) -> torch.Tensor:
    """Per-token divergence (:func:`divergence_terms` summed over the last axis).

    ``entry_clip`` caps each entry's term from above before the sum, as OPSD's ``jsd_token_clip``
    and TRL's ``distillation_kl_clip`` (0.05) do, so that no single vocabulary entry (e.g. a teacher
    sure of ``answer`` where the student is not) dominates a token's loss. A clipped entry passes no
    gradient, and since entries where the student is the surer side are negative and not clipped, a
    token's clipped sum can fall below zero.
    """
    terms = divergence_terms(log_teacher, log_student, kind, beta)
    if entry_clip is not None:
        terms = terms.clamp(max=entry_clip)
    return terms.sum(-1)


def clipped_importance_weight(current: torch.Tensor, behaviour: torch.Tensor, clip: float) -> torch.Tensor:
    """Truncated importance weight ``min(exp(current - behaviour), clip)``, no gradient."""
    return torch.exp(current.detach() - behaviour).clamp(max=clip)


def prefix_importance_weight(current: torch.Tensor, behaviour: torch.Tensor, clip: float) -> torch.Tensor:
    """Truncated weight of each position's *prefix*: ``min(prod_{s<t} exp(current_s - behaviour_s), clip)``.

    A full-distribution divergence at position t depends on the sampled tokens before t, not on
    token t, so the importance weight that corrects its expectation to the current policy is the
    product of the earlier tokens' ratios (1 at t = 0). No gradient.
    """
    log_ratio = current.detach() - behaviour
    before = torch.cumsum(log_ratio, dim=-1) - log_ratio
    return torch.exp(before.clamp(max=math.log(clip)))


def group_advantages(
    rewards: torch.Tensor, groups: torch.Tensor, *, eps: float = 1e-4, dr_grpo: bool = False
) -> torch.Tensor:
    """GRPO advantages: reward minus its group's mean, divided by the group's std unless Dr.GRPO.

    A group whose rewards are all equal gets advantage 0 everywhere.
    """
    advantages = torch.zeros_like(rewards, dtype=torch.float32)
    for g in torch.unique(groups):
        members = groups == g
        r = rewards[members].float()
        centred = r - r.mean()
        std = r.std(unbiased=False)
        if dr_grpo or std == 0:
            advantages[members] = centred  # all-equal rewards: centred is 0 everywhere
        else:
            advantages[members] = centred / (std + eps)
    return advantages


def clipped_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, *, epsilon: float
) -> torch.Tensor:
    """PPO/GRPO per-token loss ``-min(rho A, clip(rho, 1 - eps, 1 + eps) A)``."""
    ratio = torch.exp(logprobs - old_logprobs)
    return -torch.minimum(ratio * advantages, ratio.clamp(1 - epsilon, 1 + epsilon) * advantages)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(policy || reference) on sampled tokens: ``exp(d) - d - 1``, d = ref - cur."""
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1
