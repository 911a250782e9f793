"""The two losses of the bi-level problem (Sec. 2 of the paper).

* :func:`distillation_loss` is L_train(w, lambda) with lambda = (lambda1, T):
  ``lambda1 * CE(student, y) + (1 - lambda1) * CE(softmax(teacher / T), log_softmax(student / T))``,
  averaged over the batch. ``lambda1`` weights the **classification** term as in the paper's text (the authors'
  ``param_loss`` put it on the distillation term; see the authors-code notes, discrepancy 1).
* :func:`validation_loss` is L_val(w): the batch mean of CE(student / T_val, y); T_val is fixed, not optimised.

Logit standardisation (Sun et al., CVPR 2024): :func:`standardize_logits` z-scores each sample's logits; the
forms ``"ce_std"`` / ``"kl_std"`` of :func:`distillation_loss` take D_T on the standardised teacher and student
logits (the classification term stays on the raw logits), and :func:`weighted_kd_loss` is the loss of the
2023-24 reference codes, ``ce_weight * CE + kd_weight * T^2 * KL`` with free weights.

Helpers :func:`soft_cross_entropy`, :func:`kl_divergence` and :func:`teacher_entropy` satisfy, per sample,
``soft_cross_entropy = kl_divergence + teacher_entropy`` (Lemma 1: at lambda1 = 0 the paper's loss is the
KL D-distillation up to a w-independent constant, the teacher's tempered entropy).

Every function is differentiable in ``lambda1`` and ``temperature`` (floats or 0-d tensors) and contains no
host synchronisation (no ``.item()``, no branching on tensor values).
"""
from __future__ import annotations

from typing import Union

import torch.nn.functional as F
from torch import Tensor

from kdlib.names import LOSS_FORMS as _FORMS

Scalar = Union[float, Tensor]

LOSS_FORMS = _FORMS + tuple(f"{form}_std" for form in _FORMS)  # and on standardised logits
STD_EPS = 1e-7


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"unknown reduction {reduction!r}; choose 'mean', 'sum' or 'none'")


def standardize_logits(logits: Tensor, eps: float = STD_EPS) -> Tensor:
    """Each row z-scored: ``(z - mean(z)) / (eps + std(z))`` over the classes, ``std`` unbiased (divisor K - 1).

    This is ``normalize`` of the reference code of Sun et al. (CVPR 2024,
    ``sunshangquan/logit-standardization-KD``, ``mdistiller/distillers/KD.py``): ``torch.std``'s default
    (unbiased) with ``eps`` added to the standard deviation, not under the square root. Differentiable through
    the mean and the standard deviation (nothing is detached)."""
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (eps + std)


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: Scalar = 1.0,
                       reduction: str = "mean") -> Tensor:
    """CE(softmax(teacher / T), log_softmax(student / T)) = -sum_k p_k log q_k, per sample then reduced.

    This is the paper's distillation term (Sec. 2) with its sign, i.e. a non-negative quantity.
    """
    p_teacher = F.softmax(teacher_logits / temperature, dim=-1)
    log_q_student = F.log_softmax(student_logits / temperature, dim=-1)
    return _reduce(-(p_teacher * log_q_student).sum(dim=-1), reduction)


def teacher_entropy(teacher_logits: Tensor, temperature: Scalar = 1.0, reduction: str = "mean") -> Tensor:
    """H(softmax(teacher / T)) = -sum_k p_k log p_k, per sample then reduced (the Lemma 1 constant)."""
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    return _reduce(-(log_p.exp() * log_p).sum(dim=-1), reduction)


def kl_divergence(student_logits: Tensor, teacher_logits: Tensor, temperature: Scalar = 1.0,
                  reduction: str = "mean") -> Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) per sample then reduced.

    With ``reduction="mean"`` this equals ``torch.nn.KLDivLoss(reduction="batchmean")`` applied to
    ``(log_softmax(student / T), softmax(teacher / T))``, the authors' distillation term.
    """
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    return _reduce((log_p.exp() * (log_p - log_q)).sum(dim=-1), reduction)


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, lambda1: Scalar,
                      temperature: Scalar, *, form: str = "ce", t2_scaling: bool = False) -> Tensor:
    """L_train of Sec. 2: batch mean of ``lambda1 * CE(student, y) + (1 - lambda1) * D_T(teacher, student)``.

    Args:
        student_logits: (B, K) student logits g(x, w).
        teacher_logits: (B, K) teacher logits f(x) (treated as constants; detach them upstream if needed).
        targets: (B,) class indices (or (B, K) class probabilities, as accepted by ``F.cross_entropy``).
        lambda1: weight of the classification term (float or 0-d tensor).
        temperature: T (float or 0-d tensor).
        form: ``"ce"`` (paper): D_T is the soft cross-entropy ``-sum_k softmax(f/T)_k log softmax(g/T)_k``;
            ``"kl"`` (authors' code): D_T = KL(softmax(f/T) || softmax(g/T)), ``KLDivLoss(batchmean)``.
            The two differ by the teacher's tempered entropy, constant in w (Lemma 1) but not in T.
            ``"ce_std"`` / ``"kl_std"``: the same D_T on :func:`standardize_logits` of both logits (Sun et al.,
            2024); the classification term stays on the raw student logits.
        t2_scaling: multiply D_T by T^2 (Hinton et al.); off in the paper and in the authors' code.

    Returns:
        0-d tensor.
    """
    if form not in LOSS_FORMS:
        raise ValueError(f"unknown loss form {form!r}; choose one of: {', '.join(LOSS_FORMS)}")
    s, t = student_logits, teacher_logits
    if form.endswith("_std"):
        s, t = standardize_logits(s), standardize_logits(t)
    if form.startswith("ce"):
        distill = soft_cross_entropy(s, t, temperature)
    else:
        distill = kl_divergence(s, t, temperature)
    if t2_scaling:
        distill = distill * (temperature * temperature)
    classification = F.cross_entropy(student_logits, targets)
    return lambda1 * classification + (1 - lambda1) * distill


def weighted_kd_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, ce_weight: float,
                     kd_weight: float, temperature: Scalar, standardize: bool = False) -> Tensor:
    """``ce_weight * CE(student, y) + kd_weight * T^2 * KL(softmax(f/T) || softmax(g/T))``, batch means.

    The loss of the 2023-24 reference codes: CTKD (``zhengli97/CTKD``: ``gamma * loss_cls + alpha * loss_div``,
    ``DistillKL`` = ``KLDivLoss(batchmean) * T * T``) and logit standardisation
    (``sunshangquan/logit-standardization-KD``: ``CE_WEIGHT * CE + KD_WEIGHT * kd_loss``, ``kd_loss`` the KL
    summed over classes, averaged over the batch, times ``T**2``, on :func:`standardize_logits` of both logits when
    ``standardize``). The weights need not sum to 1; with ``ce_weight + kd_weight = c`` it is ``c`` times
    :func:`distillation_loss` at ``lambda1 = ce_weight / c`` with ``form="kl"`` and ``t2_scaling=True``
    (``"kl_std"`` when ``standardize``). CE is always on the raw student logits."""
    s, t = (standardize_logits(student_logits), standardize_logits(teacher_logits)) if standardize \
        else (student_logits, teacher_logits)
    distill = kl_divergence(s, t, temperature) * (temperature * temperature)
    return ce_weight * F.cross_entropy(student_logits, targets) + kd_weight * distill


def validation_loss(student_logits: Tensor, targets: Tensor, t_val: Scalar = 1.0) -> Tensor:
    """L_val of Sec. 2: batch mean of CE(student / T_val, y). T_val is set by hand (0.1 synthetic, 1 images)."""
    return F.cross_entropy(student_logits / t_val, targets)


__all__ = ["distillation_loss", "validation_loss", "soft_cross_entropy", "kl_divergence", "teacher_entropy",
           "standardize_logits", "weighted_kd_loss", "LOSS_FORMS", "STD_EPS"]
