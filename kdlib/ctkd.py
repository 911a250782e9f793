"""Curriculum Temperature for knowledge distillation (CTKD; Li et al., AAAI 2023), the global variant.

One learnable scalar θ gives the temperature ``τ = t_start + t_range * sigmoid(θ)`` (1 + 20·sigmoid(θ): τ in
(1, 21)); θ starts at 1.0. θ is trained by the student's own optimizer on the student's loss, but through a
gradient-reversal layer (Ganin & Lempitsky, 2015) whose weight follows a cosine curriculum from 0 to -1: θ
*ascends* the distillation loss, more and more strongly, so the temperature makes the task harder as training
goes on while the student descends it.

Written after the reference code ``zhengli97/CTKD``:

* ``models/temp_global.py``: ``Global_T`` (``nn.Parameter(torch.ones(1))``) and ``GradientReversalFunction``,
  whose backward returns ``lambda_ * grads``: the weight multiplies the gradient as is, and it is the *schedule*
  that makes it negative (:func:`reverse_gradient`);
* ``train_student.py``: ``CosineDecay(max_value=0, min_value=-1, num_loops=10).get_value(epoch)`` with
  ``epoch`` running over ``range(1, epochs + 1)``: the curriculum is evaluated at the 1-based epoch number, so
  the first epoch already trains at weight cos-decay(1) = -0.0245 and -1 is reached in the 10th epoch
  (:func:`cosine_weight` is ``get_value``; :func:`reversal_weight` maps kdlib's 0-based epochs onto it);
* ``helper/loops.py``: ``temp = t_start + t_end * sigmoid(mlp_net(...))`` with ``t_start=1``, ``t_end=20``
  (the code calls the range ``t_end``).

Where the paper and the code differ, we follow the code. The paper presents the curriculum as a weight λ that
rises from 0 to 1 along a cosine over the first E_loops = 10 epochs, with a reversal layer that multiplies the
gradient by −λ; the code folds the sign into the schedule (a value going from 0 to −1, used as the multiplier
itself): the same curve. What the paper leaves open and the code fixes is the epoch counter: the code starts it
at 1 (above). The code also lets θ share the student's optimizer (momentum, weight decay and the lr schedule
included), which is what kdlib does with the student's own optimizer.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

T_START = 1.0  # the code's t_start
T_RANGE = 20.0  # the code's t_end: tau = T_START + T_RANGE * sigmoid(theta), in (1, 21)
THETA_INIT = 1.0  # Global_T: nn.Parameter(torch.ones(1))
DECAY_LOOPS = 10  # --decay_loops 10: the cosine reaches its end after 10 epochs
DECAY_MAX = 0.0  # --decay_max 0
DECAY_MIN = -1.0  # --decay_min -1


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``weight`` (CTKD's
    ``GradientReversalFunction``: a negative weight reverses it)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: float) -> Tensor:  # type: ignore[override]
        ctx.weight = float(weight)
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.weight, None


def reverse_gradient(x: Tensor, weight: float) -> Tensor:
    """``x`` in the forward pass; ``weight * (incoming gradient)`` in the backward pass."""
    return GradientReversal.apply(x, weight)


def cosine_weight(epoch: float, loops: int = DECAY_LOOPS, max_value: float = DECAY_MAX,
                  min_value: float = DECAY_MIN) -> float:
    """CTKD's ``CosineDecay.get_value``: ``min + (max - min) * (cos(pi * i / loops) + 1) / 2`` with ``i`` the
    epoch clipped to ``[0, loops]``: 0 at epoch 0, -0.5 at 5, -1 from epoch 10 on (defaults)."""
    i = min(max(float(epoch), 0.0), float(loops))
    return min_value + (max_value - min_value) * (math.cos(i * math.pi / loops) + 1.0) * 0.5


def reversal_weight(epoch: int) -> float:
    """The reversal weight of kdlib's 0-based ``epoch``: :func:`cosine_weight` at the reference loop's 1-based
    epoch number, ``epoch + 1``."""
    return cosine_weight(epoch + 1)


def temperature_of(theta: Tensor) -> Tensor:
    """``τ = 1 + 20 * sigmoid(θ)``."""
    return T_START + T_RANGE * torch.sigmoid(theta)


class GlobalTemperature(nn.Module):
    """CTKD's global temperature: one parameter θ (initially :data:`THETA_INIT`); ``forward(weight)`` returns the
    0-d τ with θ's gradient multiplied by ``weight`` (:func:`reverse_gradient`). Add :attr:`theta` to the student's
    optimizer (``optimizer.add_param_group({"params": [module.theta]})``) as the reference code does."""

    def __init__(self, init: float = THETA_INIT) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(float(init)))

    def forward(self, weight: float) -> Tensor:
        return temperature_of(reverse_gradient(self.theta, weight))


__all__ = ["GradientReversal", "reverse_gradient", "cosine_weight", "reversal_weight", "temperature_of",
           "GlobalTemperature", "T_START", "T_RANGE", "THETA_INIT", "DECAY_LOOPS"]
