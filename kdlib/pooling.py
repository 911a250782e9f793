"""2x2 max pooling (stride 2) of the students of :mod:`kdlib.models`, with a fast path where no gradient is taken.

``F.max_pool2d(x, 2)`` on a contiguous NCHW CPU tensor runs a per-window scalar loop: it was the largest single
op of the CIFAR-10 student's forward (``benchmarks/hypergrad.py``, ``profile``), ~20x slower than three elementwise
``torch.maximum`` over the four strided views of the windows. :func:`max_pool2x2` takes that path only where
autograd is off (evaluation, the finite difference's perturbed forwards): the values are ``F.max_pool2d``'s
(the maximum is exact and NaN propagates; at most the sign of a zero tied with a zero may differ, which no later
sum, product or comparison can tell apart), so nothing downstream changes. With autograd on, large CPU planes
(the first block) go through :class:`_MaxPool2x2`: the same elementwise forward also replays the kernel's scan
(``val > max || isnan(val)``, row-major) to produce ``max_pool2d``'s own int64 indices, and the backward is
torch's own ``max_pool2d_with_indices_backward`` on them -- so the gradient is ``F.max_pool2d``'s, bit for bit
(double backward and forward mode included); smaller planes use ``F.max_pool2d`` (faster there).
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


_FAST_PLANE = 400  # H*W from which the elementwise forward beats F.max_pool2d's NCHW loop on CPU


def _views(x: Tensor) -> list[Tensor]:
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    return [x[..., i:h:2, j:w:2] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1))]


class _MaxPool2x2(torch.autograd.Function):
    """``F.max_pool2d_with_indices(x, 2)`` by elementwise ops; backward and jvp from the indices."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> tuple[Tensor, Tensor]:
        v = _views(x)
        best = v[0]
        k = torch.zeros(best.shape, dtype=torch.uint8, device=x.device)  # the picked window element, 0..3
        for j in (1, 2, 3):
            take = ((v[j] > best) | torch.isnan(v[j])).view(torch.uint8)
            best = torch.maximum(best, v[j])
            k = k + take * (j - k)  # uint8: k <- j where taken
        w_in = x.shape[-1]
        h2, w2 = best.shape[-2], best.shape[-1]
        rows = torch.arange(h2, device=x.device).view(-1, 1) * (2 * w_in)
        base = rows + torch.arange(w2, device=x.device) * 2  # int64 flat index of each window's top-left
        k32 = k.to(torch.int32)
        return best, base + ((k32 >> 1) * w_in + (k32 & 1))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        ctx.save_for_backward(inputs[0], output[1])
        ctx.save_for_forward(inputs[0], output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, grad: Tensor, _grad_index: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
        x, index = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False,
                                                                index)

    @staticmethod
    def jvp(ctx, tangent: Tensor) -> tuple[Tensor, None]:  # type: ignore[no-untyped-def]
        _, index = ctx.saved_tensors
        flat = tangent.flatten(-2).gather(-1, index.flatten(-2))
        return flat.view(index.shape), None


def max_pool2x2(x: Tensor) -> Tensor:
    """``F.max_pool2d(x, 2)``: :func:`max_pool2x2_values` when autograd is off; with autograd on,
    :class:`_MaxPool2x2` for 4-D CPU input with large planes, else ``F.max_pool2d``."""
    if not torch.is_grad_enabled():
        return max_pool2x2_values(x)
    if x.dim() == 4 and x.device.type == "cpu" and x.shape[-2] * x.shape[-1] >= _FAST_PLANE:
        return _MaxPool2x2.apply(x)[0]
    return F.max_pool2d(x, 2)


__all__ = ["max_pool2x2", "max_pool2x2_values"]
