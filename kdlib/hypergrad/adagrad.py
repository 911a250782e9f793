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

from kdlib.hypergrad.adam import safe_sqrt, step_count

ParamState = dict[str, Tensor]


def step(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: Mapping[str, ParamState],
         group: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, ParamState]]:
    """One differentiable Adagrad step of one param group: ``(new params, new state)``; ``group`` holds
    ``lr, lr_decay, weight_decay, eps, initial_accumulator_value``."""
    lr, lr_decay, weight_decay, eps = group["lr"], group["lr_decay"], group["weight_decay"], group["eps"]
    new_params: dict[str, Tensor] = {}
    new_state: dict[str, ParamState] = {}
    for n, w in params.items():
        g = grads[n]
        st = state.get(n, {})
        t = step_count(st.get("step")) + 1
        if weight_decay != 0:
            g = g + weight_decay * w
        clr = lr / (1 + (t - 1) * lr_decay)
        acc = st.get("sum")
        acc = torch.full_like(w, group["initial_accumulator_value"]) if acc is None else acc
        acc = acc + g * g
        new_params[n] = w - clr * (g / (safe_sqrt(acc) + eps))
        new_state[n] = {"step": t if isinstance(t, Tensor) else torch.tensor(t), "sum": acc}
    return new_params, new_state
