"""``torch.optim.SGD``'s update rule as a differentiable function (the inner step of eq. (3)).

One step, per parameter (torch's ``_single_tensor_sgd``, same order of operations):

    d = g + weight_decay * w
    buf = d                                   (first step: no buffer yet)
    buf = momentum * buf + (1 - dampening) * d
    d = d + momentum * buf   (nesterov)   or   d = buf
    w' = w - lr * d

It is linear in the gradient g, so the hypergradient through it is exact for every estimator.
:func:`plain_step` is the paper's ``w' = w - lr g`` (the ``lr=`` form of :func:`kdlib.hypergrad.hypergradient`).
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

ParamState = dict[str, Tensor]


def plain_step(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], lr: Any) -> dict[str, Tensor]:
    """The paper's inner step ``w - lr * g``."""
    return {n: params[n] - lr * grads[n] for n in params}


def step(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: Mapping[str, ParamState],
         group: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, ParamState]]:
    """One differentiable SGD step of the parameters of one param group: ``(new params, new state)``.

    ``state[name]`` is ``{"momentum_buffer": Tensor}`` (absent or ``None`` before the first step);
    ``group`` holds ``lr, momentum, dampening, nesterov, weight_decay`` as in ``optimizer.param_groups``.
    Nothing is written in place.
    """
    lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
    nesterov, weight_decay = group["nesterov"], group["weight_decay"]
    new_params: dict[str, Tensor] = {}
    new_state: dict[str, ParamState] = {}
    for n, w in params.items():
        d = grads[n]
        if weight_decay != 0:
            d = d + weight_decay * w
        st = dict(state.get(n, {}))
        if momentum != 0:
            buf = st.get("momentum_buffer")
            buf = d if buf is None else momentum * buf + (1 - dampening) * d
            st["momentum_buffer"] = buf
            d = d + momentum * buf if nesterov else buf
        new_params[n] = w - lr * d
        new_state[n] = st
    return new_params, new_state
