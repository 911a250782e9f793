"""kdlib.pooling: the no-grad fast path gives F.max_pool2d's values, and the students' logits are unchanged."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdlib.models import CifarStudent, FashionMNISTStudent
from kdlib.pooling import max_pool2x2, max_pool2x2_values


@pytest.mark.parametrize("shape", [(4, 3, 30, 30), (2, 5, 13, 13), (3, 4, 4), (1, 2, 7, 6)])
def test_values_equal_max_pool2d_with_ties_and_nan(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(shape, generator=g))
    x[..., :4, :4] = 1.5  # positive ties
    x.view(-1)[7] = float("nan")
    x.view(-1)[20] = float("inf")
    ref = F.max_pool2d(x, 2)
    got = max_pool2x2_values(x)
    assert got.shape == ref.shape
    assert torch.equal(got.isnan(), ref.isnan())
    assert torch.equal(got.nan_to_num(), ref.nan_to_num())
    with torch.no_grad():
        assert torch.equal(max_pool2x2(x).nan_to_num(), ref.nan_to_num())


def test_autograd_path_is_max_pool2d_gradient_routing():
    """With autograd on, ties send the whole gradient to max_pool2d's pick (torch.maximum would split it)."""
    x = torch.ones(1, 1, 2, 2, requires_grad=True)
    max_pool2x2(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]))


@pytest.mark.parametrize("make,shape", [(CifarStudent, (16, 3, 32, 32)), (FashionMNISTStudent, (16, 1, 28, 28))])
def test_student_logits_bit_identical_with_and_without_grad(make, shape):
    torch.manual_seed(0)
    model = make()
    x = torch.randn(shape)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        torch.manual_seed(1)
        with_grad = model(x).detach()
        torch.manual_seed(1)
        with torch.no_grad():
            without = model(x)
        assert torch.equal(with_grad, without), mode


@pytest.mark.parametrize("shape", [(8, 8, 30, 30), (2, 3, 31, 29)])
def test_autograd_path_is_bit_identical_to_max_pool2d(shape):
    """Values, gradients, double backward (w.r.t. the cotangent) and forward-mode tangents equal
    F.max_pool2d's exactly, ties and odd sizes included."""
    g = torch.Generator().manual_seed(1)
    x = torch.relu(torch.randn(shape, generator=g))
    x[..., :6, :6] = 1.5  # positive ties: the first maximum must receive the gradient
    cot = torch.randn(shape[:2] + (shape[2] // 2, shape[3] // 2), generator=g)
    weights = torch.randn(shape, generator=g)
    tangent = torch.randn(shape, generator=g)
    got = []
    for fn in (lambda t: F.max_pool2d(t, 2), max_pool2x2):
        xr = x.clone().requires_grad_(True)
        cr = cot.clone().requires_grad_(True)
        out = fn(xr)
        (gx,) = torch.autograd.grad(out, xr, cr, create_graph=True)
        (gg,) = torch.autograd.grad((gx * weights).sum(), cr)
        _, jvp_out = torch.func.jvp(fn, (x,), (tangent,))
        got.append((out.detach(), gx.detach(), gg, jvp_out))
    assert got[1][1].abs().sum() > 0 and got[1][2].abs().sum() > 0
    for a, b in zip(*got):
        assert torch.equal(a, b)
