import math

import pytest
import torch

from pipeline.losses import (
    clipped_importance_weight,
    clipped_policy_loss,
    divergence,
    group_advantages,
    k3_kl,
    prefix_importance_weight,
    sharpen,
    supported_logprobs,
)


def full_kl(p_log, q_log):
    return (p_log.exp() * (p_log - q_log)).sum(-1)


@pytest.fixture()
def dists():
    torch.manual_seed(0)
    teacher = torch.randn(5, 11).log_softmax(-1)
    student = torch.randn(5, 11).log_softmax(-1)
    return teacher, student


def stored_topk(teacher_full, k):
    lp, ids = teacher_full.topk(k, dim=-1)
    rest = teacher_full.scatter(-1, ids, float("-inf"))
    return ids, lp, torch.logsumexp(rest, -1)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("support", ["topk", "tail"])
def test_identical_distributions_give_zero(dists, kind, support):
    teacher, _ = dists
    ids, lp, tail = stored_topk(teacher, 4)
    t, s = supported_logprobs(teacher, ids, lp, tail, support)
    assert torch.allclose(divergence(t, s, kind), torch.zeros(5), atol=1e-6)


def test_k_equal_vocab_with_tail_is_the_full_kl(dists):
    teacher, student = dists
    ids, lp, tail = stored_topk(teacher, 11)
    t, s = supported_logprobs(student, ids, lp, tail, "tail")
    assert torch.allclose(divergence(t, s, "forward_kl"), full_kl(teacher, student), atol=1e-5)
    assert torch.allclose(divergence(t, s, "reverse_kl"), full_kl(student, teacher), atol=1e-5)


def test_hand_computed_two_outcome_case():
    # teacher (0.75, 0.25), student (0.5, 0.5) on a 2-token vocabulary, k = 1 with the tail bucket
    teacher_full = torch.tensor([[0.75, 0.25]]).log()
    student_full = torch.tensor([[0.5, 0.5]]).log()
    ids, lp, tail = stored_topk(teacher_full, 1)
    t, s = supported_logprobs(student_full, ids, lp, tail, "tail")
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert divergence(t, s, "forward_kl").item() == pytest.approx(expected, abs=1e-6)
    m = [0.5 * 0.75 + 0.5 * 0.5, 0.5 * 0.25 + 0.5 * 0.5]
    jsd = 0.5 * (0.75 * math.log(0.75 / m[0]) + 0.25 * math.log(0.25 / m[1])) + 0.5 * (
        0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
    )
    assert divergence(t, s, "jsd", beta=0.5).item() == pytest.approx(jsd, abs=1e-6)


def test_topk_support_renormalises(dists):
    teacher, student = dists
    ids, lp, tail = stored_topk(teacher, 3)
    t, s = supported_logprobs(student, ids, lp, tail, "topk")
    assert torch.allclose(t.exp().sum(-1), torch.ones(5)) and torch.allclose(s.exp().sum(-1), torch.ones(5))


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("support", ["topk", "tail"])
def test_gradients_flow_to_the_student_only(dists, kind, support):
    teacher, student = dists
    logits = student.clone().requires_grad_(True)
    ids, lp, tail = stored_topk(teacher, 4)
    t, s = supported_logprobs(logits.log_softmax(-1), ids, lp, tail, support)
    # only: the teacher side on the support is built from the stored teacher alone, no path back to the
    # student's logits (a teacher computed from the student would pull the target along with it)
    assert s.requires_grad and not t.requires_grad
    divergence(t, s, kind).mean().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # to the student
    if (kind, support) == ("forward_kl", "tail"):
        # the exact gradient of -sum_i p_i log q_i over the top-k and the tail bucket, per logit:
        # softmax_j - p_j on the teacher's ids, softmax_j (1 - p_tail / q_tail) on the rest
        q = student.softmax(-1)
        p_tail = tail.exp()
        outside = torch.ones_like(q, dtype=torch.bool).scatter(-1, ids, False)
        q_tail = (q * outside).sum(-1)
        expected = torch.where(outside, q * (1 - p_tail / q_tail)[:, None], q)
        expected = expected.scatter(-1, ids, q.gather(-1, ids) - lp.exp())
        torch.testing.assert_close(logits.grad, expected / len(q), atol=1e-6, rtol=1e-4)


def test_tail_support_stays_finite_where_the_student_is_near_certain():
    # A student that puts all but ~1e-9 of its mass on one token: 1 - sum(top-k q) rounds to 0 in
    # fp32, but the teacher's tail is not empty. The loss and its gradient must stay finite.
    logits = torch.full((2, 50), -25.0)
    logits[:, 3] = 0.0
    logits.requires_grad_(True)
    student = logits.log_softmax(-1)
    teacher_full = torch.randn(2, 50)
    teacher_full[:, 3] += 4.0  # the student's certain token is in the teacher's top-k
    ids, lps, tail = stored_topk(teacher_full.log_softmax(-1), 5)
    teacher, student_s = supported_logprobs(student, ids, lps, tail, "tail")
    assert torch.isfinite(student_s).all()
    loss = divergence(teacher, student_s, "forward_kl").sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # and it equals the exact two-support KL computed in float64
    student64 = logits.detach().double().log_softmax(-1)
    outside = torch.ones(2, 50, dtype=torch.bool).scatter(-1, ids.long(), False)
    q_tail = torch.logsumexp(student64.masked_fill(~outside, float("-inf")), -1)
    p = torch.cat([lps.double(), tail.double()[:, None]], -1)
    q = torch.cat([student64.gather(-1, ids.long()), q_tail[:, None]], -1)
    assert loss.item() == pytest.approx(full_kl(p, q).sum().item(), rel=1e-4)


def test_importance_weight_is_clipped_and_detached():
    current = torch.tensor([0.0, 1.0, -1.0], requires_grad=True)
    w = clipped_importance_weight(current, torch.zeros(3), clip=2.0)
    assert torch.allclose(w, torch.tensor([1.0, 2.0, math.exp(-1.0)]))
    assert not w.requires_grad


def test_group_advantages_hand_made_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    adv = group_advantages(rewards, groups, eps=0.0)
    assert torch.allclose(adv[:4], torch.tensor([1.0, -1.0, -1.0, 1.0]))  # mean 0.5, std 0.5
    assert torch.equal(adv[4:], torch.zeros(2))  # all-equal rewards: no signal, no NaN
    dr = group_advantages(rewards, groups, dr_grpo=True)
    assert torch.allclose(dr[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_clipped_policy_loss():
    lp = torch.log(torch.tensor([1.5, 0.5, 1.0]))
    loss = clipped_policy_loss(lp, torch.zeros(3), torch.tensor([1.0, -1.0, 2.0]), epsilon=0.2)
    # rho 1.5 with A>0 is clipped to 1.2; rho 0.5 with A<0 is clipped to 0.8 -> min picks -0.8
    assert torch.allclose(loss, torch.tensor([-1.2, 0.8, -2.0]), atol=1e-6)


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    assert k3_kl(torch.zeros(2), torch.zeros(2)).abs().max() == 0
    assert (k3_kl(torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -1.0])) > 0).all()


def test_sharpen_on_the_topk_support_is_the_exact_tempered_distribution():
    p = torch.tensor([[0.5, 0.3, 0.2]])
    expected = p**2 / (p**2).sum()
    assert torch.allclose(sharpen(p.log(), 0.5).exp(), expected, atol=1e-6)
    assert torch.equal(sharpen(p.log(), 1.0), p.log())


def test_sharpen_never_lets_the_tail_bucket_outgrow_a_topk_entry():
    # an uncertain position: top-2 0.2 and 0.15, the remaining 0.65 spread over the vocabulary
    p = torch.tensor([[0.2, 0.15, 0.65]])
    bucket_as_a_token = sharpen(p.log(), 0.5)  # the old behaviour: the tail grows to 0.87
    assert bucket_as_a_token.exp()[0, -1] > 0.65
    sharp = sharpen(p.log(), 0.5, tail=True).exp()[0]
    assert sharp[-1] < 0.65  # shrinks
    assert sharp[0] > 0.2 and sharp[0] / sharp[1] == pytest.approx((0.2 / 0.15) ** 2, rel=1e-5)
    assert sharp.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_sharpen_with_tail_is_exact_when_the_tail_tokens_sit_at_the_smallest_topk_probability():
    full = torch.tensor([[0.4, 0.2, 0.1, 0.1, 0.1, 0.1]])  # top-3 stored, the tail is three tokens at 0.1
    tempered = full**2 / (full**2).sum()
    bucketed = torch.cat([full[:, :3], full[:, 3:].sum(-1, keepdim=True)], -1)
    expected = torch.cat([tempered[:, :3], tempered[:, 3:].sum(-1, keepdim=True)], -1)
    assert torch.allclose(sharpen(bucketed.log(), 0.5, tail=True).exp(), expected, atol=1e-6)
    # an empty tail (k = vocabulary) stays empty
    empty = torch.tensor([[0.7, 0.3, 0.0]]).log()
    assert sharpen(empty, 0.5, tail=True).exp()[0, -1] == 0


def test_divergence_entry_clip_caps_each_term_before_the_sum(dists):
    teacher, student = dists
    terms = teacher.exp() * (teacher - student)
    clipped = divergence(teacher, student, "forward_kl", entry_clip=0.05)
    assert torch.allclose(clipped, terms.clamp(max=0.05).sum(-1), atol=1e-6)
    assert (clipped <= 0.05 * teacher.shape[-1]).all()
    assert torch.allclose(divergence(teacher, student, "forward_kl"), full_kl(teacher, student), atol=1e-5)


def test_prefix_importance_weight_is_the_clipped_product_of_earlier_ratios():
    current = torch.tensor([0.0, 0.0, 0.0, 0.0])
    behaviour = torch.tensor([-0.5, 0.2, -1.0, 0.0])  # ratios e^0.5, e^-0.2, e^1.0, 1
    weights = prefix_importance_weight(current, behaviour, clip=2.0)
    expected = torch.tensor([1.0, math.exp(0.5), math.exp(0.3), min(math.exp(1.3), 2.0)])
    assert torch.allclose(weights, expected, atol=1e-6)
