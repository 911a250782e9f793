"""eq. (4) / Algorithm 1: least-squares line per metaparameter, extrapolated forward."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlib.trajectory import extrapolate, fit_line


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_line_is_recovered_exactly(dtype):
    n, steps = 10, 7
    z = torch.arange(n + steps, dtype=dtype)
    slope = torch.tensor([0.125, -0.5], dtype=dtype)
    intercept = torch.tensor([0.25, 3.0], dtype=dtype)
    full = intercept + z.unsqueeze(1) * slope  # (n + steps, 2), exactly representable values
    pred = extrapolate(full[:n], steps)
    assert pred.shape == (steps, 2) and pred.dtype == dtype
    assert torch.equal(pred, full[n:])
    s, c = fit_line(full[:n])
    assert torch.equal(s, slope) and torch.equal(c, intercept)


def test_matches_numpy_polyfit_on_noisy_data():
    rng = np.random.default_rng(0)
    n, d, steps = 25, 3, 12
    hist = rng.normal(size=(n, d)) + np.arange(n)[:, None] * np.array([0.01, -0.2, 0.0])
    pred = extrapolate(torch.from_numpy(hist), steps)
    for j in range(d):
        coef = np.polyfit(np.arange(n), hist[:, j], 1)
        ref = np.polyval(coef, np.arange(n, n + steps))
        np.testing.assert_allclose(pred[:, j].numpy(), ref, rtol=1e-10, atol=1e-12)
        s, c = fit_line(torch.from_numpy(hist))
        np.testing.assert_allclose([s[j].item(), c[j].item()], coef, rtol=1e-10, atol=1e-12)


def test_float32_large_offsets_stay_accurate():
    # centred formula: no catastrophic cancellation for n ~ 1000 and values ~ 10
    n = 1000
    z = torch.arange(n, dtype=torch.float64)
    hist64 = torch.stack([0.3 + 1e-4 * z, 9.5 - 2e-3 * z], 1)
    pred32 = extrapolate(hist64.float(), 5)
    pred64 = extrapolate(hist64, 5)
    assert torch.allclose(pred32.double(), pred64, atol=1e-4)


def test_two_points_and_one_dimensional_history():
    assert torch.equal(extrapolate(torch.tensor([[1.0], [2.0]]), 3), torch.tensor([[3.0], [4.0], [5.0]]))
    out = extrapolate(torch.tensor([0.0, 0.5, 1.0]), 2)
    assert out.shape == (2,) and torch.equal(out, torch.tensor([1.5, 2.0]))
    assert extrapolate(torch.zeros(4, 2), 0).shape == (0, 2)


def test_integer_history_is_promoted():
    out = extrapolate(torch.tensor([[0], [1], [2]]), 1)
    assert out.is_floating_point() and torch.equal(out, torch.tensor([[3.0]]))


@pytest.mark.parametrize("bad", [torch.zeros(1, 2), torch.zeros(0, 2), torch.zeros(1)])
def test_needs_two_points(bad):
    with pytest.raises(ValueError, match="at least 2"):
        extrapolate(bad, 3)
    with pytest.raises(ValueError, match="at least 2"):
        fit_line(bad)


def test_bad_shapes_and_steps():
    with pytest.raises(ValueError, match="shape"):
        extrapolate(torch.zeros(3, 2, 2), 1)
    with pytest.raises(ValueError, match="steps"):
        extrapolate(torch.zeros(3, 2), -1)


def test_device_and_dtype_preserved_and_no_numpy():
    hist = torch.randn(6, 2, dtype=torch.float64)
    out = extrapolate(hist, 4)
    assert out.device == hist.device and out.dtype == hist.dtype
    if torch.cuda.is_available():  # pragma: no cover - GPU only
        out_cuda = extrapolate(hist.cuda(), 4)
        assert out_cuda.is_cuda and torch.allclose(out_cuda.cpu(), out)
