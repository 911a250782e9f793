"""``torch.optim.Adam`` / ``AdamW``'s update rule as a differentiable function (the inner step of eq. (3)).

One step, per parameter, with the state's step count t (torch's ``_single_tensor_adam``; maximize is not
supported):

    t = t + 1
    AdamW: w = w * (1 - lr * weight_decay)          Adam: g = g + weight_decay * w
    m = lerp(m, g, 1 - beta1),   v = beta2 * v + (1 - beta2) * g^2
    amsgrad: v_max = max(v_max, v), used for v below
    w' = w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Elementwise and nonlinear in g; the estimators differentiate it exactly (a vector-Jacobian product for the
reverse estimators, forward-mode through it for ``"forward"``). ``sqrt(v)`` is taken with a zero derivative
where ``v == 0`` (a parameter whose gradient has always been exactly zero: there m == 0 too, so the
derivative of the update, ``(1 - beta1) / bc1 / eps``, is still exact; plain autograd would give 0 * inf = NaN).
The amsgrad maximum passes its derivative to the new v where v >= v_max (to the old, constant maximum elsewhere).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

ParamState = dict[str, Tensor]


def safe_sqrt(v: Tensor) -> Tensor:
    """``sqrt(v)`` with a zero derivative where ``v <= 0`` (used by every adaptive rule)."""
    pos = v > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, v, torch.ones_like(v))), torch.zeros_like(v))


def step_count(step: Any) -> Any:
    """A 0-d state scalar (the step count, NAdam's mu_product) as a Python float where that costs no device sync
    (torch reads it so too); a device tensor stays a tensor."""
    if step is None:
        return 0.0
    if isinstance(step, Tensor):
        return float(step) if step.device.type == "cpu" else step
    return float(step)


def each_param(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: Mapping[str, ParamState],
               update: Callable[[Tensor, Tensor, ParamState, Any], tuple[Tensor, ParamState]]
               ) -> tuple[dict[str, Tensor], dict[str, ParamState]]:
    """The per-parameter loop of every rule: ``update(w, g, state, t)`` for each parameter of a group, with ``t``
    this step's count (1-based, :func:`step_count`); returns ``(new params, new state)``."""
    new_params: dict[str, Tensor] = {}
    new_state: dict[str, ParamState] = {}
    for n, w in params.items():
        st = state.get(n, {})
        new_params[n], new_state[n] = update(w, grads[n], st, step_count(st.get("step")) + 1)
    return new_params, new_state


def count_tensor(t: Any) -> Tensor:
    """The step count as torch stores it in the optimizer state (a tensor)."""
    return t if isinstance(t, Tensor) else torch.tensor(t)


def decay(w: Tensor, g: Tensor, lr: Any, weight_decay: float, decoupled: bool) -> tuple[Tensor, Tensor]:
    """Weight decay as torch applies it: decoupled (AdamW-style, on the weights) or coupled (into the gradient)."""
    if weight_decay == 0:
        return w, g
    if decoupled:
        return w * (1 - lr * weight_decay), g
    return w, g + weight_decay * w


def moments(st: ParamState, w: Tensor, g: Tensor, beta1: float, beta2: float) -> tuple[Tensor, Tensor]:
    """Adam's first and second moments after this step (zeros before the first step)."""
    m, v = st.get("exp_avg"), st.get("exp_avg_sq")
    m = torch.lerp(torch.zeros_like(w) if m is None else m, g, 1 - beta1)
    v = (torch.zeros_like(w) if v is None else v) * beta2 + (1 - beta2) * g * g
    return m, v


def step(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: Mapping[str, ParamState],
         group: Mapping[str, Any], decoupled: bool = False) -> tuple[dict[str, Tensor], dict[str, ParamState]]:
    """One differentiable Adam (``decoupled=False``) or AdamW (``decoupled=True``) step of one param group.

    ``state[name]`` is ``{"step", "exp_avg", "exp_avg_sq"}`` (and ``"max_exp_avg_sq"`` with amsgrad) as in
    ``optimizer.state[p]`` (empty before the first step: zeros); ``group`` holds ``lr, betas, eps, weight_decay``
    and optionally ``amsgrad``. Returns ``(new params, new state)``; nothing is written in place.
    """
    amsgrad = bool(group.get("amsgrad", False))
    lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]

    def update(w: Tensor, g: Tensor, st: ParamState, t: Any) -> tuple[Tensor, ParamState]:
        w, g = decay(w, g, lr, weight_decay, decoupled)
        m, v = moments(st, w, g, beta1, beta2)
        if isinstance(t, Tensor):
            bc1, bc2_sqrt = 1 - beta1 ** t, (1 - beta2 ** t).sqrt()
        else:
            bc1, bc2_sqrt = 1 - beta1 ** t, math.sqrt(1 - beta2 ** t)
        out = {"step": count_tensor(t), "exp_avg": m, "exp_avg_sq": v}
        if amsgrad:
            v_max = st.get("max_exp_avg_sq")
            v_max = torch.zeros_like(w) if v_max is None else v_max
            v = torch.where(v >= v_max, v, v_max)
            out["max_exp_avg_sq"] = v
        denom = safe_sqrt(v) / bc2_sqrt + eps
        return w - (lr / bc1) * m / denom, out

    return each_param(params, grads, state, update)
