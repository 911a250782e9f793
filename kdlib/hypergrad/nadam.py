"""``torch.optim.NAdam``'s update rule as a differentiable function (the inner step of eq. (3)).

One step, per parameter, with the state's step count t and momentum product (torch's ``_single_tensor_nadam``):

    t = t + 1
    decoupled: w = w * (1 - lr * weight_decay)        else: g = g + weight_decay * w
    mu = beta1 * (1 - 0.5 * 0.96^(t psi)),  mu_next = beta1 * (1 - 0.5 * 0.96^((t + 1) psi))   (psi = momentum_decay)
    mu_product = mu_product * mu
    m = lerp(m, g, 1 - beta1),   v = beta2 * v + (1 - beta2) * g^2,   denom = sqrt(v / (1 - beta2^t)) + eps
    w' = w - lr (1 - mu) / (1 - mu_product) * g / denom - lr mu_next / (1 - mu_product * mu_next) * m / denom

``mu_product`` is kept, as torch keeps it, as a 0-d tensor of the default scalar dtype (float32), and read as a
Python number where it lives on the CPU.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from kdlib.hypergrad.adam import count_tensor, decay, each_param, moments, safe_sqrt, step_count

ParamState = dict[str, Tensor]


def _scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def step(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: Mapping[str, ParamState],
         group: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, ParamState]]:
    """One differentiable NAdam step of one param group: ``(new params, new state)``; ``group`` holds
    ``lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay``."""
    lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    psi, decoupled = group["momentum_decay"], group["decoupled_weight_decay"]

    def update(w: Tensor, g: Tensor, st: ParamState, t: Any) -> tuple[Tensor, ParamState]:
        w, g = decay(w, g, lr, weight_decay, decoupled)
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (t * psi)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * psi)))
        prod = st.get("mu_product")
        prod = (torch.tensor(1.0, dtype=_scalar_dtype()) if prod is None else prod) * mu
        prod_value = step_count(prod)  # a Python float on the CPU, as torch's _get_value
        m, v = moments(st, w, g, beta1, beta2)
        denom = safe_sqrt(v / (1 - beta2 ** t)) + eps
        new_w = (w - (lr * (1.0 - mu) / (1.0 - prod_value)) * (g / denom)
                 - (lr * mu_next / (1.0 - prod_value * mu_next)) * (m / denom))
        return new_w, {"step": count_tensor(t), "mu_product": prod, "exp_avg": m, "exp_avg_sq": v}

    return each_param(params, grads, state, update)
