"""The inner step of eq. (3) as the optimizer actually used: ``w' = w - u(g, w; state)``, per param group.

:func:`resolve` turns a ``torch.optim.SGD``, ``Adam`` or ``AdamW`` (exact classes) into an :class:`UpdateRule`
reading the optimizer's **current** ``param_groups`` (lr -- so learning-rate schedulers just work -- momentum,
dampening, nesterov, weight decay, betas, eps) and ``state`` (momentum buffers; exp_avg, exp_avg_sq, step).
The optimizer is only read, never written. Any other optimizer raises ``NotImplementedError``: a silent
plain-SGD answer would be wrong (cosine 0.66 for Adam in issue 9). :func:`plain_sgd` is the paper's
``w - lr g`` (the ``lr=`` form).

The update u is elementwise in g for every supported rule, which is what lets the one-step estimators
replace the SGD factor ``-lr`` by one vector-Jacobian product of the step (:meth:`UpdateRule.linearize`).
Trainable parameters the optimizer does not hold are not stepped (as ``optimizer.step()`` would not).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor, nn

from kdlib.hypergrad import adam, sgd

ParamState = dict[str, Tensor]
StepFn = Callable[..., tuple[dict[str, Tensor], dict[str, ParamState]]]
SUPPORTED = ("torch.optim.SGD", "torch.optim.Adam", "torch.optim.AdamW")
_SGD_KEYS = ("lr", "momentum", "dampening", "nesterov", "weight_decay")
_ADAM_KEYS = ("lr", "betas", "eps", "weight_decay")


@dataclass(frozen=True)
class GroupRule:
    """One param group: its step function, the model names it steps, its hyperparameters and state."""

    fn: StepFn
    names: tuple[str, ...]
    hyper: Mapping[str, Any]
    state: Mapping[str, ParamState] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdateRule:
    """One virtual optimizer step. ``plain_lr`` is set iff the step is exactly the paper's ``w - lr g`` for every
    stepped parameter (then the estimators take their original plain-SGD code path, bit-identical)."""

    groups: tuple[GroupRule, ...] = ()
    plain_lr: Any = None

    def initial_state(self) -> dict[str, ParamState]:
        return {n: dict(g.state.get(n, {})) for g in self.groups for n in g.names}

    def step(self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor],
             state: Optional[Mapping[str, ParamState]] = None) -> tuple[dict[str, Tensor], dict[str, ParamState]]:
        """``(w', state')``; parameters of no group are returned unchanged."""
        if self.plain_lr is not None:
            return sgd.plain_step(params, grads, self.plain_lr), {}
        state = self.initial_state() if state is None else state
        new_params = dict(params)
        new_state: dict[str, ParamState] = {}
        for g in self.groups:
            names = [n for n in g.names if n in params]
            p, s = g.fn({n: params[n] for n in names}, {n: grads[n] for n in names},
                        {n: state.get(n, {}) for n in names}, g.hyper)
            new_params.update(p)
            new_state.update(s)
        return new_params, new_state

    def linearize(self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor]
                  ) -> tuple[dict[str, Tensor], Callable[[Mapping[str, Tensor]], dict[str, Tensor]]]:
        """``(w', pullback)`` at the current w, g and state, with ``pullback(c) = (dw'/dg)^T c`` (diagonal: the
        update is elementwise in g). One evaluation of the step serves both."""
        w = {n: p.detach() for n, p in params.items()}
        names = list(w)
        out, fn = torch.func.vjp(lambda g: self.step(w, g)[0], {n: grads[n].detach() for n in names})

        def pullback(cotangent: Mapping[str, Tensor]) -> dict[str, Tensor]:
            (q,) = fn({n: cotangent[n] for n in names})
            return q

        return {n: out[n].detach() for n in names}, pullback

    def with_lr(self, lr: Any) -> "UpdateRule":
        """The same rule with every group's lr replaced (the finite difference's ``fd_virtual_lr``)."""
        if self.plain_lr is not None:
            return UpdateRule(plain_lr=lr)
        return UpdateRule(tuple(GroupRule(g.fn, g.names, {**g.hyper, "lr": lr}, g.state) for g in self.groups))


def plain_sgd(lr: Any) -> UpdateRule:
    """The paper's inner step ``w - lr g`` (``hypergradient(..., lr=...)``)."""
    return UpdateRule(plain_lr=lr)


def _detached_state(st: Mapping[str, Any]) -> ParamState:
    return {k: v.detach() if isinstance(v, Tensor) else v for k, v in st.items() if v is not None}


def resolve(optimizer: torch.optim.Optimizer, model: nn.Module,
            names: Optional[list[str]] = None) -> UpdateRule:
    """The :class:`UpdateRule` of ``optimizer`` for the trainable parameters ``names`` of ``model``."""
    kind = type(optimizer)
    if kind not in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
        raise NotImplementedError(f"hypergradient through {kind.__module__}.{kind.__qualname__} is not "
                                  f"implemented; supported optimizers: {', '.join(SUPPORTED)}")
    by_id = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    wanted = set(by_id.values()) if names is None else set(names)
    groups = []
    for gi, group in enumerate(optimizer.param_groups):
        if group.get("maximize", False):
            raise NotImplementedError(f"{kind.__name__}(maximize=True) is not supported (param group {gi})")
        if kind is torch.optim.SGD:
            fn: StepFn = sgd.step
            keys = _SGD_KEYS
        else:
            if group.get("amsgrad", False):
                raise NotImplementedError(f"{kind.__name__}(amsgrad=True) is not supported (param group {gi})")
            decoupled = bool(group.get("decoupled_weight_decay", kind is torch.optim.AdamW))
            fn = functools.partial(adam.step, decoupled=decoupled)
            keys = _ADAM_KEYS
        hyper = {k: group[k] for k in keys}
        members = [(by_id[id(p)], p) for p in group["params"] if id(p) in by_id and by_id[id(p)] in wanted]
        if not members:
            continue
        state = {n: _detached_state(optimizer.state.get(p, {})) for n, p in members}
        groups.append(GroupRule(fn, tuple(n for n, _ in members), hyper, state))
    stepped = {n for g in groups for n in g.names}
    if not stepped:
        raise ValueError(f"the {kind.__name__} optimizer holds none of the model's trainable parameters; pass "
                         f"the optimizer that trains this model")
    lrs = {id(g.hyper["lr"]) if isinstance(g.hyper["lr"], Tensor) else g.hyper["lr"] for g in groups}
    plain = (kind is torch.optim.SGD and stepped == wanted and len(lrs) == 1
             and all(g.hyper["momentum"] == 0 and g.hyper["weight_decay"] == 0 for g in groups))
    if plain:
        return UpdateRule(plain_lr=groups[0].hyper["lr"])
    return UpdateRule(tuple(groups))
