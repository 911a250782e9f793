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

from kdlib.hypergrad.adam import count_tensor, decay, each_param, moments, safe_sqrt

ParamState = dict[str, Tensor]


def step(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: Mapping[str, ParamState],
         group: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, ParamState]]:
    """One differentiable RAdam step of one param group: ``(new params, new state)``; ``group`` holds
    ``lr, betas, eps, weight_decay, decoupled_weight_decay``."""
    lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    decoupled = group["decoupled_weight_decay"]

    def update(w: Tensor, g: Tensor, st: ParamState, t: Any) -> tuple[Tensor, ParamState]:
        w, g = decay(w, g, lr, weight_decay, decoupled)
        m, v = moments(st, w, g, beta1, beta2)
        bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * (beta2 ** t) / bc2
        plain = (m / bc1) * lr
        if isinstance(t, Tensor):  # a device step count (capturable): select without a host branch, as torch
            rectified = rho_t > 5.0
            rho = torch.where(rectified, rho_t, torch.full_like(rho_t, 6.0))  # the unselected branch stays finite
            rect = ((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)) ** 0.5
            delta = torch.where(rectified, plain * ((bc2 ** 0.5) / (safe_sqrt(v) + eps)) * rect, plain)
        elif rho_t > 5.0:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            delta = plain * ((bc2 ** 0.5) / (safe_sqrt(v) + eps)) * rect
        else:
            delta = plain
        return w - delta, {"step": count_tensor(t), "exp_avg": m, "exp_avg_sq": v}

    return each_param(params, grads, state, update)
