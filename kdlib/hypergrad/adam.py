"""``torch.optim.Adam`` / ``AdamW``'s update rule as a differentiable function (the inner step of eq. (3)).

One step, per parameter, with the state's step count t (torch's ``_single_tensor_adam``; amsgrad and maximize
are not supported):

    t = t + 1
    AdamW: w = w * (1 - lr * weight_decay)          Adam: g = g + weight_decay * w
    m = lerp(m, g, 1 - beta1),   v = beta2 * v + (1 - beta2) * g^2
    w' = w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Elementwise and nonlinear in g; the estimators differentiate it exactly (a vector-Jacobian product for the
reverse estimators, forward-mode through it for ``"forward"``). ``sqrt(v)`` is taken with a zero derivative
where ``v == 0`` (a parameter whose gradient has always been exactly zero: there m == 0 too, so the
derivative of the update, ``(1 - beta1) / bc1 / eps``, is still exact; plain autograd would give 0 * inf = NaN).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

ParamState = dict[str, Tensor]


def _safe_sqrt(v: Tensor) -> Tensor:
    pos = v > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, v, torch.ones_like(v))), torch.zeros_like(v))


def _step_count(step: Any) -> Any:
    """The state's step count as a Python float where that costs no device sync (torch reads it so too)."""
    if step is None:
        return 0.0
    if isinstance(step, Tensor):
        return float(step) if step.device.type == "cpu" else step
    return float(step)


def step(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: Mapping[str, ParamState],
         group: Mapping[str, Any], decoupled: bool = False) -> tuple[dict[str, Tensor], dict[str, ParamState]]:
    """One differentiable Adam (``decoupled=False``) or AdamW (``decoupled=True``) step of one param group.

    ``state[name]`` is ``{"step", "exp_avg", "exp_avg_sq"}`` as in ``optimizer.state[p]`` (empty before the
    first step: zeros); ``group`` holds ``lr, betas, eps, weight_decay``. Returns ``(new params, new state)``;
    nothing is written in place.
    """
    lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    new_params: dict[str, Tensor] = {}
    new_state: dict[str, ParamState] = {}
    for n, w in params.items():
        g = grads[n]
        st = state.get(n, {})
        t = _step_count(st.get("step")) + 1
        m = st.get("exp_avg")
        v = st.get("exp_avg_sq")
        m = torch.zeros_like(w) if m is None else m
        v = torch.zeros_like(w) if v is None else v
        if weight_decay != 0:
            if decoupled:
                w = w * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * w
        m = torch.lerp(m, g, 1 - beta1)
        v = v * beta2 + (1 - beta2) * g * g
        if isinstance(t, Tensor):
            bc1, bc2_sqrt = 1 - beta1 ** t, (1 - beta2 ** t).sqrt()
        else:
            bc1, bc2_sqrt = 1 - beta1 ** t, math.sqrt(1 - beta2 ** t)
        denom = _safe_sqrt(v) / bc2_sqrt + eps
        new_params[n] = w - (lr / bc1) * m / denom
        new_state[n] = {"step": t if isinstance(t, Tensor) else torch.tensor(t), "exp_avg": m, "exp_avg_sq": v}
    return new_params, new_state
