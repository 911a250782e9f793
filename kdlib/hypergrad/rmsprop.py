"""``torch.optim.RMSprop``'s update rule as a differentiable function (the inner step of eq. (3)).

One step, per parameter (torch's ``_single_tensor_rmsprop``, same order of operations):

    g = g + weight_decay * w
    sq = alpha * sq + (1 - alpha) * g^2
    centered:  ga = lerp(ga, g, 1 - alpha),  avg = sqrt(sq - ga^2) + eps      else  avg = sqrt(sq) + eps
    momentum > 0:  buf = momentum * buf + g / avg,  w' = w - lr * buf         else  w' = w - lr * g / avg

Elementwise and nonlinear in g. ``sqrt`` has a zero derivative where its argument is 0 (a coordinate whose
gradient has always been exactly zero; see :func:`kdlib.hypergrad.adam.safe_sqrt`).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from kdlib.hypergrad.adam import safe_sqrt

ParamState = dict[str, Tensor]


def step(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: Mapping[str, ParamState],
         group: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, ParamState]]:
    """One differentiable RMSprop step of one param group: ``(new params, new state)``.

    ``state[name]`` holds ``square_avg`` (and ``momentum_buffer``, ``grad_avg``) as in ``optimizer.state[p]``
    (zeros before the first step); ``group`` holds ``lr, alpha, eps, weight_decay, momentum, centered``.
    """
    lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
    weight_decay, momentum, centered = group["weight_decay"], group["momentum"], group["centered"]
    new_params: dict[str, Tensor] = {}
    new_state: dict[str, ParamState] = {}
    for n, w in params.items():
        g = grads[n]
        st = state.get(n, {})
        if weight_decay != 0:
            g = g + weight_decay * w
        sq = st.get("square_avg")
        sq = torch.zeros_like(w) if sq is None else sq
        sq = sq * alpha + (1 - alpha) * g * g
        out: ParamState = {"square_avg": sq}
        if centered:
            ga = st.get("grad_avg")
            ga = torch.lerp(torch.zeros_like(w) if ga is None else ga, g, 1 - alpha)
            out["grad_avg"] = ga
            avg = safe_sqrt(sq - ga * ga) + eps
        else:
            avg = safe_sqrt(sq) + eps
        if momentum > 0:
            buf = st.get("momentum_buffer")
            buf = (torch.zeros_like(w) if buf is None else buf) * momentum + g / avg
            out["momentum_buffer"] = buf
            new_params[n] = w - lr * buf
        else:
            new_params[n] = w - lr * (g / avg)
        new_state[n] = out
    return new_params, new_state
