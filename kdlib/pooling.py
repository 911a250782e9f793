"""2x2 max pooling (stride 2) of the students of :mod:`kdlib.models`, with a fast path where no gradient is taken.

``F.max_pool2d(x, 2)`` on a contiguous NCHW CPU tensor runs a per-window scalar loop: it was the largest single
op of the CIFAR-10 student's forward (``benchmarks/run.py``, ``profile``), ~20x slower than three elementwise
``torch.maximum`` over the four strided views of the windows. :func:`max_pool2x2` takes that path only where
autograd is off (evaluation, the finite difference's perturbed forwards): the values are ``F.max_pool2d``'s
(the maximum is exact and NaN propagates; at most the sign of a zero tied with a zero may differ, which no later
sum, product or comparison can tell apart), so nothing downstream changes. With autograd on it is
``F.max_pool2d`` itself: the gradient (and forward-mode tangent) goes to the element ``max_pool2d`` picks, where
``torch.maximum``'s derivative would split ties.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def max_pool2x2_values(x: Tensor) -> Tensor:
    """The values of ``F.max_pool2d(x, 2)`` (floor mode) by elementwise maxima of the four window views."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    top = torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2])
    return torch.maximum(top, torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]))


def max_pool2x2(x: Tensor) -> Tensor:
    """``F.max_pool2d(x, 2)``: :func:`max_pool2x2_values` when autograd is off, ``F.max_pool2d`` otherwise."""
    if torch.is_grad_enabled():
        return F.max_pool2d(x, 2)
    return max_pool2x2_values(x)


__all__ = ["max_pool2x2", "max_pool2x2_values"]
