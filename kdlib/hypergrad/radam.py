"""``torch.optim.RAdam``'s update rule as a differentiable function (the inner step of eq. (3)).

One step, per parameter, with the state's step count t (torch's ``_single_tensor_radam``):

    t = t + 1
    decoupled: w = w * (1 - lr * weight_decay)        else: g = g + weight_decay * w
    m = lerp(m, g, 1 - beta1),   v = beta2 * v + (1 - beta2) * g^2
    rho_inf = 2 / (1 - beta2) - 1,   rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
    rho_t > 5:  w' = w - lr m / (1 - beta1^t) * sqrt(1 - beta2^t) / (sqrt(v) + eps) * r_t,
                r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
    else:       w' = w - lr m / (1 - beta1^t)                       (the first steps: SGD with momentum)
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from kdlib.hypergrad.adam import safe_sqrt, step_count

ParamState = dict[str, Tensor]


def step(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: Mapping[str, ParamState],
         group: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, ParamState]]:
    """One differentiable RAdam step of one param group: ``(new params, new state)``; ``group`` holds
    ``lr, betas, eps, weight_decay, decoupled_weight_decay``."""
    lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    decoupled = group["decoupled_weight_decay"]
    new_params: dict[str, Tensor] = {}
    new_state: dict[str, ParamState] = {}
    for n, w in params.items():
        g = grads[n]
        st = state.get(n, {})
        t = step_count(st.get("step")) + 1
        if weight_decay != 0:
            if decoupled:
                w = w * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * w
        m = st.get("exp_avg")
        v = st.get("exp_avg_sq")
        m = torch.lerp(torch.zeros_like(w) if m is None else m, g, 1 - beta1)
        v = (torch.zeros_like(w) if v is None else v) * beta2 + (1 - beta2) * g * g
        bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * (beta2 ** t) / bc2
        plain = (m / bc1) * lr
        if isinstance(t, Tensor):  # a device step count (capturable): select without a host branch, as torch
            rectified = rho_t > 5.0
            rho = torch.where(rectified, rho_t, torch.full_like(rho_t, 6.0))  # the unselected branch stays finite
            rect = ((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)) ** 0.5
            update = torch.where(rectified, plain * ((bc2 ** 0.5) / (safe_sqrt(v) + eps)) * rect, plain)
        elif rho_t > 5.0:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            update = plain * ((bc2 ** 0.5) / (safe_sqrt(v) + eps)) * rect
        else:
            update = plain
        new_params[n] = w - update
        new_state[n] = {"step": t if isinstance(t, Tensor) else torch.tensor(t), "exp_avg": m, "exp_avg_sq": v}
    return new_params, new_state
