"""L_train and L_val (Sec. 2) against independent formulas, Lemma 1, and gradcheck in the metaparameters."""
from __future__ import annotations

import math

import pytest
import torch

from kdlib.losses import (distillation_loss, kl_divergence, soft_cross_entropy, teacher_entropy,
                          validation_loss)

B, K = 7, 5




def _data(seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, K, generator=g, dtype=dtype) * 2
    t = torch.randn(B, K, generator=g, dtype=dtype) * 3
    y = torch.randint(0, K, (B,), generator=g)
    return s, t, y


def _softmax_explicit(a):
    e = [[math.exp(v) for v in row] for row in a.tolist()]
    return [[v / sum(row) for v in row] for row in e]


def _reference(s, t, y, lambda1, T, form="ce", t2=False):
    """The paper's L_train written out with explicit exp/sum in plain Python floats."""
    q1 = _softmax_explicit(s)
    qT = _softmax_explicit(s / T)
    pT = _softmax_explicit(t / T)
    total = 0.0
    for i in range(len(q1)):
        ce = -math.log(q1[i][int(y[i])])
        if form == "ce":
            d = -sum(pT[i][k] * math.log(qT[i][k]) for k in range(K))
        else:
            d = sum(pT[i][k] * (math.log(pT[i][k]) - math.log(qT[i][k])) for k in range(K))
        if t2:
            d *= T * T
        total += lambda1 * ce + (1 - lambda1) * d
    return total / len(q1)


@pytest.mark.parametrize("form", ["ce", "kl"])
@pytest.mark.parametrize("t2", [False, True])
@pytest.mark.parametrize("lambda1,T", [(0.3, 2.5), (0.0, 0.1), (1.0, 10.0), (0.77, 0.7)])
def test_distillation_loss_matches_explicit_formula(form, t2, lambda1, T):
    s, t, y = _data()
    got = distillation_loss(s, t, y, lambda1, T, form=form, t2_scaling=t2)
    assert got.shape == ()
    assert got.item() == pytest.approx(_reference(s, t, y, lambda1, T, form, t2), rel=1e-10, abs=1e-12)
    # the same with 0-d tensor metaparameters
    got_t = distillation_loss(s, t, y, torch.tensor(lambda1, dtype=s.dtype), torch.tensor(T, dtype=s.dtype),
                              form=form, t2_scaling=t2)
    assert torch.equal(got, got_t)


def test_lambda1_weights_the_classification_term():
    """Paper convention (not the authors' flipped one): lambda1 = 1 is plain CE on the labels."""
    s, t, y = _data(1)
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(distillation_loss(s, t, y, 1.0, 3.0), ce)
    assert torch.allclose(distillation_loss(s, t, y, 0.0, 3.0), soft_cross_entropy(s, t, 3.0))


def test_kl_matches_kldivloss_batchmean():
    s, t, y = _data(2)
    T = 1.7
    ref = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(s / T, -1), torch.softmax(t / T, -1))
    assert torch.allclose(kl_divergence(s, t, T), ref)
    assert torch.allclose(distillation_loss(s, t, y, 0.0, T, form="kl"), ref)


@pytest.mark.parametrize("T", [0.1, 1.0, 4.0])
def test_lemma1_lambda0_is_kl_distillation(T):
    """At lambda1 = 0 the gradient in the student logits equals that of KL(teacher_T || student_T), and the loss
    exceeds the KL by exactly the teacher's (tempered) entropy, a constant in w."""
    s, t, y = _data(3)
    s1 = s.clone().requires_grad_(True)
    s2 = s.clone().requires_grad_(True)
    loss = distillation_loss(s1, t, y, 0.0, T)
    kl = kl_divergence(s2, t, T)
    (g1,) = torch.autograd.grad(loss, s1)
    (g2,) = torch.autograd.grad(kl, s2)
    assert torch.allclose(g1, g2, rtol=1e-10, atol=1e-13)
    assert torch.allclose(loss - kl, teacher_entropy(t, T), rtol=1e-10, atol=1e-12)
    # per-sample identity CE = KL + H, and the entropy is a real, non-trivial constant
    per = soft_cross_entropy(s, t, T, reduction="none") - kl_divergence(s, t, T, reduction="none")
    assert torch.allclose(per, teacher_entropy(t, T, reduction="none"), rtol=1e-10, atol=1e-12)
    assert teacher_entropy(t, T).item() > 1e-3


@pytest.mark.parametrize("form", ["ce", "kl"])
@pytest.mark.parametrize("t2", [False, True])
def test_gradcheck_in_metaparameters(form, t2):
    s, t, y = _data(4)

    def f(lam: torch.Tensor) -> torch.Tensor:
        return distillation_loss(s, t, y, lam[0], lam[1], form=form, t2_scaling=t2)

    for lam in ([0.3, 2.0], [0.9, 0.3], [0.0, 7.0]):
        lam_t = torch.tensor(lam, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(f, (lam_t,))
    # second order (the hypergradient estimators differentiate dL/dlogits in lambda)
    assert torch.autograd.gradgradcheck(f, (torch.tensor([0.6, 1.3], dtype=torch.float64, requires_grad=True),))
    # and separately as 0-d leaves (both differentiable)
    l1 = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    T = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: distillation_loss(s, t, y, a, b, form=form, t2_scaling=t2),
                                    (l1, T))


def test_gradient_wrt_lambda1_is_ce_minus_distill():
    s, t, y = _data(5)
    lam1 = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(distillation_loss(s, t, y, lam1, 2.0), lam1)
    expected = torch.nn.functional.cross_entropy(s, y) - soft_cross_entropy(s, t, 2.0)
    assert torch.allclose(g, expected)


@pytest.mark.parametrize("t_val", [0.1, 1.0, 3.0])
def test_validation_loss_explicit(t_val):
    s, _, y = _data(6)
    q = _softmax_explicit(s / t_val)
    ref = -sum(math.log(q[i][int(y[i])]) for i in range(B)) / B
    assert validation_loss(s, y, t_val).item() == pytest.approx(ref, rel=1e-10)
    assert validation_loss(s, y).item() == pytest.approx(torch.nn.functional.cross_entropy(s, y).item())


def test_unknown_form_raises():
    s, t, y = _data()
    with pytest.raises(ValueError, match="form"):
        distillation_loss(s, t, y, 0.5, 1.0, form="mse")
