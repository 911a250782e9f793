"""The paper's finite-difference hypergradient (DARTS central difference; authors' ``hyperparams.py``).

Plain SGD (the paper): ``w' = w - lr g``, ``dw = grad L_val(w')``, ``eps = fd_eps_scale / ||dw||``,
``hess = (grad_lambda L_train(w + eps dw) - grad_lambda L_train(w - eps dw)) / (2 eps)``, result ``-lr * hess``.
The authors used the *initial* lr for the virtual step and the *current* (StepLR-decayed) lr for the scale;
here ``lr`` is used for both unless ``fd_virtual_lr`` is given. The perturbation has norm exactly
``fd_eps_scale`` (0.01), so the error is curvature-dominated and the same in float32 and float64.

Through another optimizer's step w' = w - u(g): the exact value is ``q . dg/dlambda`` with
``q = (dw'/dg)^T dw`` (for plain SGD q = -lr dw), so the difference is taken along q instead:
``eps = fd_eps_scale / ||q||``, result ``(grad_lambda L_train(w + eps q) - grad_lambda L_train(w - eps q)) / (2 eps)``.
``fd_virtual_lr`` then replaces every group's lr in the virtual step only (q uses the current lr).
Coordinates whose train gradient is exactly zero (dead units, structurally independent of lambda) are dropped
from q: they add nothing to the exact value, but Adam's derivative there is lr / eps.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from kdlib.hypergrad.distributed import RankMean
from kdlib.hypergrad.rules import UpdateRule
from kdlib.hypergrad.state import Forward, grad, leaves, train_loss, val_loss
from kdlib.losses import distillation_loss


def _norm(ts) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d) for d in ts]))


def finite_difference(fwd: Forward, params: Mapping[str, Tensor], batch: tuple, val_batch: tuple,
                      metaparams: Tensor, rule: UpdateRule, t_val: Any, loss_opts: Mapping[str, Any],
                      fd_eps_scale: float = 0.01, fd_virtual_lr: Any = None,
                      shared: Optional[tuple[Tensor, Mapping[str, Tensor]]] = None,
                      train_grad: Optional[Mapping[str, Tensor]] = None, val_mean: Optional[RankMean] = None) -> Tensor:
    """Central difference of grad_lambda L_train along the step's pulled-back validation gradient.

    ``shared=(z, w)``: the real training step's train logits with their graph to the trainable parameters
    ``w`` (:meth:`kdlib.tuner.Tuner.train_step`): the train gradient is taken from them (graph retained for
    the real step's backward) instead of a second forward. ``train_grad``: the train gradient already taken by
    the loop's backward (no train forward here but the two perturbed ones). ``val_mean``: the validation
    gradient is averaged over the data-parallel ranks before it becomes the direction."""
    x, y, t = batch
    lam_c = metaparams.detach()
    if train_grad is not None:
        w = {n: p.detach() for n, p in params.items()}
        names = list(w)
        gw = tuple(train_grad[n] for n in names)
    elif shared is None:
        w = leaves(params)
        names = list(w)
        loss = train_loss(fwd, w, batch, lam_c, loss_opts)
        gw = grad(loss, [w[n] for n in names])
    else:
        z, w = shared[0], dict(shared[1])
        names = list(w)
        loss = distillation_loss(z, t, y, lam_c[0], lam_c[1], **loss_opts)
        gw = grad(loss, [w[n] for n in names], retain_graph=True)
    if rule.plain_lr is not None:
        lr = rule.plain_lr
        virtual_lr = lr if fd_virtual_lr is None else fd_virtual_lr
        w_new = {n: (w[n].detach() - virtual_lr * gi).requires_grad_(True) for n, gi in zip(names, gw)}
        lv = val_loss(fwd, w_new, val_batch, t_val)
        direction = grad(lv, [w_new[n] for n in names])
        if val_mean is not None:
            direction = tuple(val_mean(direction))
        scale = -lr
    else:
        g0 = dict(zip(names, gw))
        stepped, pullback = rule.linearize(w, g0)
        if fd_virtual_lr is not None:
            stepped, _ = rule.with_lr(fd_virtual_lr).step({n: w[n].detach() for n in names}, g0)
        w_new = {n: stepped[n].detach().requires_grad_(True) for n in names}
        lv = val_loss(fwd, w_new, val_batch, t_val)
        v = grad(lv, [w_new[n] for n in names])
        q = pullback(dict(zip(names, v if val_mean is None else val_mean(v))))
        # a coordinate with an exactly zero train gradient (a dead unit: its column of J is zero) has
        # dg/dlambda == 0, so it adds nothing to q . dg/dlambda; Adam's du/dg there is lr/eps (huge), which would
        # otherwise dominate ||q||, shrink eps for the live coordinates and push dead units across their kink
        direction = tuple(torch.where(g0[n] == 0, torch.zeros_like(q[n]), q[n]) for n in names)
        scale = 1.0
    eps = fd_eps_scale / _norm(direction)
    lam_grads = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            w_pm = {n: params[n] + (sign * eps) * d for n, d in zip(names, direction)}
            z = fwd(w_pm, x)
        lam = lam_c.clone().requires_grad_(True)
        (gl,) = grad(distillation_loss(z, t, y, lam[0], lam[1], **loss_opts), [lam])
        lam_grads.append(gl)
    hess = (lam_grads[0] - lam_grads[1]) / (2 * eps)
    return scale * hess
