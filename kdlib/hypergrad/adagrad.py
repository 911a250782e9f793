"""``torch.optim.Adagrad``'s update rule as a differentiable function (the inner step of eq. (3)).

One step, per parameter, with the state's step count t (torch's ``_single_tensor_adagrad``, dense gradients):

    t = t + 1
    g = g + weight_decay * w
    clr = lr / (1 + (t - 1) * lr_decay)
    sum = sum + g^2
    w' = w - clr * g / (sqrt(sum) + eps)

Adagrad creates its state (``sum`` = ``initial_accumulator_value``, step 0) in its constructor.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from kdlib.hypergrad.adam import count_tensor, decay, each_param, safe_sqrt

ParamState = dict[str, Tensor]


def step(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: Mapping[str, ParamState],
         group: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, ParamState]]:
    """One differentiable Adagrad step of one param group: ``(new params, new state)``; ``group`` holds
    ``lr, lr_decay, weight_decay, eps, initial_accumulator_value``."""
    lr, lr_decay, weight_decay, eps = group["lr"], group["lr_decay"], group["weight_decay"], group["eps"]

    def update(w: Tensor, g: Tensor, st: ParamState, t: Any) -> tuple[Tensor, ParamState]:
        w, g = decay(w, g, lr, weight_decay, decoupled=False)
        clr = lr / (1 + (t - 1) * lr_decay)
        acc = st.get("sum")
        acc = torch.full_like(w, group["initial_accumulator_value"]) if acc is None else acc
        acc = acc + g * g
        return w - clr * (g / (safe_sqrt(acc) + eps)), {"step": count_tensor(t), "sum": acc}

    return each_param(params, grads, state, update)
