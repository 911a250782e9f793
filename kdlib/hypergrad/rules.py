"""The inner step of eq. (3) as the loop actually takes it: ``w' = w - u(clip(g), w; state)``, per param group.

:func:`resolve` turns a torch optimizer into an :class:`UpdateRule` reading the optimizer's **current**
``param_groups`` (lr -- so learning-rate schedulers just work -- and every other hyperparameter) and ``state``
(momentum buffers, moments, step counts). One table, :data:`RULES`, maps each supported class (exact class) to
its update rule written once from torch's formulas (:mod:`~kdlib.hypergrad.sgd`, :mod:`~kdlib.hypergrad.adam`,
:mod:`~kdlib.hypergrad.rmsprop`, :mod:`~kdlib.hypergrad.adagrad`, :mod:`~kdlib.hypergrad.nadam`,
:mod:`~kdlib.hypergrad.radam`) and the ``param_groups`` keys it reads. The optimizer is only read, never written.
Any other optimizer, and ``maximize=True``, raise ``NotImplementedError``: a silent plain-SGD answer would be wrong
(cosine 0.66 for Adam in issue 9). :func:`plain_sgd` is the paper's ``w - lr g`` (the ``lr=`` form).

``clip_grad_norm``: the loop's ``torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)`` between
``backward()`` and ``step()``, modelled exactly (:func:`clip_grad_norm`, a differentiable function of all the
gradients together); without it the step is the unclipped one.

Without clipping the update u is elementwise in g for every supported rule; with it, g is first scaled by one
factor of the global norm. Either way the one-step estimators replace the SGD factor ``-lr`` by one
vector-Jacobian product of the step (:meth:`UpdateRule.linearize`).
Trainable parameters the optimizer does not hold are not stepped (as ``optimizer.step()`` would not).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor, nn

from kdlib.hypergrad import adagrad, adam, nadam, radam, rmsprop, sgd

ParamState = dict[str, Tensor]
StepFn = Callable[..., tuple[dict[str, Tensor], dict[str, ParamState]]]
_SGD_KEYS = ("lr", "momentum", "dampening", "nesterov", "weight_decay")
_ADAM_KEYS = ("lr", "betas", "eps", "weight_decay", "amsgrad")
# class -> (update rule, param_groups keys it reads)
RULES: dict[type, tuple[StepFn, tuple[str, ...]]] = {
    torch.optim.SGD: (sgd.step, _SGD_KEYS),
    torch.optim.Adam: (adam.step, _ADAM_KEYS),
    torch.optim.AdamW: (adam.step, _ADAM_KEYS),  # decoupled: read per group in resolve
    torch.optim.RMSprop: (rmsprop.step, ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")),
    torch.optim.Adagrad: (adagrad.step, ("lr", "lr_decay", "weight_decay", "eps", "initial_accumulator_value")),
    torch.optim.NAdam: (nadam.step, ("lr", "betas", "eps", "weight_decay", "momentum_decay",
                                     "decoupled_weight_decay")),
    torch.optim.RAdam: (radam.step, ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay")),
}
SUPPORTED = tuple(f"torch.optim.{k.__name__}" for k in RULES)
_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s


def clip_grad_norm(grads: Mapping[str, Tensor], max_norm: float) -> dict[str, Tensor]:
    """``torch.nn.utils.clip_grad_norm_`` (2-norm) as a function: every gradient times
    ``min(1, max_norm / (||g|| + 1e-6))``, ``||g||`` the norm of all of them together."""
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()]))
    coef = torch.clamp(max_norm / (total + _CLIP_EPS), max=1.0)
    return {n: g * coef.to(g.dtype) for n, g in grads.items()}


def check_clip(max_norm: Any) -> Optional[float]:
    """``clip_grad_norm=``: None, or a finite number > 0 (else ``ValueError`` naming the fix)."""
    if max_norm is None:
        return None
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not 0 < max_norm < float("inf"):
        raise ValueError(f"clip_grad_norm must be None or the max_norm > 0 your loop passes to "
                         f"torch.nn.utils.clip_grad_norm_, got {max_norm!r}")
    return float(max_norm)


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
    stepped parameter (then the estimators take their original plain-SGD code path, bit-identical). ``clip``: the
    loop's ``clip_grad_norm_`` max_norm, applied to all the gradients before the groups' steps."""

    groups: tuple[GroupRule, ...] = ()
    plain_lr: Any = None
    clip: Optional[float] = None

    def initial_state(self) -> dict[str, ParamState]:
        return {n: dict(g.state.get(n, {})) for g in self.groups for n in g.names}

    def step(self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor],
             state: Optional[Mapping[str, ParamState]] = None) -> tuple[dict[str, Tensor], dict[str, ParamState]]:
        """``(w', state')``; parameters of no group are returned unchanged."""
        if self.plain_lr is not None:
            return sgd.plain_step(params, grads, self.plain_lr), {}
        if self.clip is not None:
            grads = clip_grad_norm({n: grads[n] for n in params}, self.clip)
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
        """``(w', pullback)`` at the current w, g and state, with ``pullback(c) = (dw'/dg)^T c`` (diagonal when the
        update is elementwise in g; plus one rank-one term with clipping). One evaluation of the step serves both."""
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
        return UpdateRule(tuple(GroupRule(g.fn, g.names, {**g.hyper, "lr": lr}, g.state) for g in self.groups),
                          clip=self.clip)


def _plain_group(names: list[str], lr: Any) -> GroupRule:
    return GroupRule(sgd.step, tuple(names), dict(lr=lr, momentum=0, dampening=0, nesterov=False, weight_decay=0))


def plain_sgd(lr: Any, names: Optional[list[str]] = None, clip: Optional[float] = None) -> UpdateRule:
    """The paper's inner step ``w - lr g`` (``hypergradient(..., lr=...)``); with ``clip`` the step of the clipped
    gradient of the parameters ``names``."""
    if clip is None:
        return UpdateRule(plain_lr=lr)
    if names is None:
        raise ValueError("plain_sgd(clip=...) needs the names of the stepped parameters")
    return UpdateRule((_plain_group(names, lr),), clip=clip)


def _detached_state(st: Mapping[str, Any]) -> ParamState:
    return {k: v.detach() if isinstance(v, Tensor) else v for k, v in st.items() if v is not None}


def resolve(optimizer: torch.optim.Optimizer, model: nn.Module, names: Optional[list[str]] = None,
            clip: Optional[float] = None) -> UpdateRule:
    """The :class:`UpdateRule` of ``optimizer`` for the trainable parameters ``names`` of ``model`` (all of them by
    default), with the loop's gradient clipping ``clip`` (``clip_grad_norm_``'s max_norm) if given."""
    kind = type(optimizer)
    if kind not in RULES:
        raise NotImplementedError(f"hypergradient through {kind.__module__}.{kind.__qualname__} is not "
                                  f"implemented; supported optimizers: {', '.join(SUPPORTED)}")
    fn, keys = RULES[kind]
    by_id = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    wanted = set(by_id.values()) if names is None else set(names)
    groups = []
    for gi, group in enumerate(optimizer.param_groups):
        if group.get("maximize", False):
            raise NotImplementedError(f"{kind.__name__}(maximize=True) is not supported (param group {gi})")
        step_fn: StepFn = fn
        if kind in (torch.optim.Adam, torch.optim.AdamW):  # Adam(decoupled_weight_decay=True) is AdamW
            decoupled = bool(group.get("decoupled_weight_decay", kind is torch.optim.AdamW))
            step_fn = functools.partial(adam.step, decoupled=decoupled)
        hyper = {k: group[k] for k in keys if k in group}
        members = [(by_id[id(p)], p) for p in group["params"] if id(p) in by_id and by_id[id(p)] in wanted]
        if not members:
            continue
        state = {n: _detached_state(optimizer.state.get(p, {})) for n, p in members}
        groups.append(GroupRule(step_fn, tuple(n for n, _ in members), hyper, state))
    stepped = {n for g in groups for n in g.names}
    if not stepped:
        raise ValueError(f"the {kind.__name__} optimizer holds none of the model's trainable parameters; pass "
                         f"the optimizer that trains this model")
    lrs = {id(g.hyper["lr"]) if isinstance(g.hyper["lr"], Tensor) else g.hyper["lr"] for g in groups}
    plain = (kind is torch.optim.SGD and stepped == wanted and len(lrs) == 1 and clip is None
             and all(g.hyper["momentum"] == 0 and g.hyper["weight_decay"] == 0 for g in groups))
    if plain:
        return UpdateRule(plain_lr=groups[0].hyper["lr"])
    return UpdateRule(tuple(groups), clip=clip)
