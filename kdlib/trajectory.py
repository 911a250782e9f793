"""Linear prediction of the metaparameter trajectory: eq. (4) and Algorithm 1 of the paper.

After e1 gradient-based iterations the recorded metaparameter values (the authors' code fits values, not
gradients; see the authors-code notes, Sec. 3 and discrepancy 7) are fitted per coordinate by a least-squares
line against the iteration index 0..e1-1, and the line is *extrapolated* for the next e2 iterations,
at indices e1..e1+e2-1 (as the authors' ``np.polyfit(deg=1)`` / ``np.polyval`` with a running index do).

Closed form, tensor in / tensor out on the same device and dtype, no host synchronisation.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _as_2d(history: Tensor) -> tuple[Tensor, bool]:
    if not isinstance(history, Tensor):
        raise TypeError(f"history must be a torch.Tensor, got {type(history).__name__}")
    if history.dim() == 1:
        history, squeeze = history.unsqueeze(1), True
    elif history.dim() == 2:
        squeeze = False
    else:
        raise ValueError(f"history must have shape (n, d) (or (n,)), got {tuple(history.shape)}")
    if history.shape[0] < 2:
        raise ValueError(f"a least-squares line needs at least 2 recorded points, got n={history.shape[0]}; "
                         f"record e1 >= 2 iterations before extrapolating")
    if not history.is_floating_point():
        history = history.to(torch.get_default_dtype())
    return history, squeeze


def fit_line(history: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares line per column of ``history`` (n, d) against z = 0..n-1 (Algorithm 1, step 5).

    Returns ``(slope, intercept)``, each of shape (d,) (or 0-d for a 1-D history), so that
    ``history[z] ~ intercept + slope * z``. Centred closed form: slope = sum (z - zbar)(h - hbar) / sum (z - zbar)^2.
    """
    h, squeeze = _as_2d(history)
    n = h.shape[0]
    z = torch.arange(n, device=h.device, dtype=h.dtype)
    zc = z - (n - 1) / 2.0
    h_mean = h.mean(dim=0)
    slope = (zc.unsqueeze(1) * (h - h_mean)).sum(dim=0) / (zc * zc).sum()
    intercept = h_mean - slope * ((n - 1) / 2.0)
    if squeeze:
        return slope.squeeze(0), intercept.squeeze(0)
    return slope, intercept


def extrapolate(history: Tensor, steps: int) -> Tensor:
    """Predict the next ``steps`` metaparameter values from ``history`` (n, d) by eq. (4).

    The line of :func:`fit_line` (indices 0..n-1) evaluated at n..n+steps-1; shape (steps, d) (or (steps,)
    for a 1-D history). The predictions are raw: project them into the box with
    :func:`kdlib.metaparams.project` if wanted (the authors did not clamp them).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    h, squeeze = _as_2d(history)
    slope, intercept = fit_line(h)
    n = h.shape[0]
    z = torch.arange(n, n + steps, device=h.device, dtype=h.dtype)
    out = intercept.unsqueeze(0) + z.unsqueeze(1) * slope.unsqueeze(0)
    return out.squeeze(1) if squeeze else out


__all__ = ["fit_line", "extrapolate"]
