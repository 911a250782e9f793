"""Exact reverse-mode hypergradient of eq. (3) through ``steps`` virtual optimizer steps.

``steps=1`` is the paper's greedy step; ``steps=K>1`` is truncated reverse mode over K batches (or one batch
reused K times), the optimizer state evolving through the K virtual steps as the real optimizer's would.
Two evaluations: :func:`unrolled_reverse` (double backprop through the step(s), the ``higher``-style
computation) and :func:`unrolled_one_step` (``"cotangent"``: algebraically identical for steps=1, cheaper).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor

from kdlib.hypergrad.distributed import RankMean
from kdlib.hypergrad.rules import UpdateRule
from kdlib.hypergrad.state import Forward, grad, leaves, train_loss, val_loss
from kdlib.losses import distillation_loss


def unrolled_reverse(fwd: Forward, params: Mapping[str, Tensor], batches: Sequence[tuple], val_batch: tuple,
                     metaparams: Tensor, rule: UpdateRule, t_val: Any, loss_opts: Mapping[str, Any]) -> Tensor:
    """Build w_K(lambda) with ``create_graph`` through K steps of ``rule``, then backprop L_val to lambda."""
    lam = metaparams.detach().clone().requires_grad_(True)
    w = leaves(params)
    names = list(w)
    state = None
    for batch in batches:
        loss = train_loss(fwd, w, batch, lam, loss_opts)
        grads = grad(loss, [w[n] for n in names], create_graph=True)
        w, state = rule.step(w, dict(zip(names, grads)), state)
    lv = val_loss(fwd, w, val_batch, t_val)
    (hg,) = grad(lv, [lam])
    return hg


def unrolled_one_step(fwd: Forward, params: Mapping[str, Tensor], batch: tuple, val_batch: tuple,
                      metaparams: Tensor, rule: UpdateRule, t_val: Any, loss_opts: Mapping[str, Any],
                      shared: Optional[tuple[Tensor, Mapping[str, Tensor]]] = None,
                      train_grad: Optional[Mapping[str, Tensor]] = None, val_mean: Optional[RankMean] = None) -> Tensor:
    """Exact one-step hypergradient of eq. (3), evaluated without differentiating twice through the network.

    Let z = g(x, w) be the train logits (they do not depend on lambda), J = dz/dw, s(lambda) = dL_train/dz,
    g = J^T s, w' = w - u(g) and v = grad_{w'} L_val(w'). Then
        dL_val(w')/dlambda_i = v . dw'/dg . J^T c_i = q . J^T c_i,   c_i = ds/dlambda_i (B, K),  q = (dw'/dg)^T v.
    For plain SGD q = -lr v (computed as ``-lr * (v . J^T c_i)``, the original arithmetic); for any other rule
    q is one vector-Jacobian product of the elementwise update (:meth:`UpdateRule.linearize`). The c_i come from the
    tiny (B, K) loss head; J^T s and J^T c_1, J^T c_2 come from ONE backward through the saved train graph with
    three batched cotangents (``is_grads_batched``). Identical (up to rounding) to :func:`unrolled_reverse`.

    ``shared=(z, w)``: the train logits z of the real training step with their graph to the trainable
    parameters ``w`` (the real step's own forward, :meth:`kdlib.tuner.Tuner.train_step`); z is then not
    recomputed and its graph is retained for the real step's backward.

    ``train_grad``: J^T s already taken by the loop's backward (the gradient in ``.grad``): only J^T c_1, J^T c_2
    are taken here; with ``shared`` too (that backward's graph, retained), through it, which is then freed.
    ``val_mean``: v is averaged over the data-parallel ranks before it is pulled back.
    """
    x, y, t = batch
    lam = metaparams.detach().clone().requires_grad_(True)
    if shared is None:
        w = leaves(params)
        z = fwd(w, x)
    else:
        z, w = shared[0], dict(shared[1])
        if train_grad is not None:  # the parameters the loop's gradient steps (those without one are held)
            w = {n: w[n] for n in params}
    names = list(w)
    wl = [w[n] for n in names]
    z_det = z.detach().requires_grad_(True)
    loss = distillation_loss(z_det, t, y, lam[0], lam[1], **loss_opts)
    (s,) = grad(loss, [z_det], create_graph=True)  # (B, K), with a graph to lambda
    # c_i = ds/dlambda_i by the double-backward trick on the loss head only: d/dr [ (ds/dlambda)^T r ]_i
    r = torch.zeros_like(s, requires_grad=True)
    (s_vjp,) = grad(s, [lam], grad_outputs=r, create_graph=True)
    cots = [s.detach()] + [grad(s_vjp[i], [r], retain_graph=i + 1 < lam.numel())[0] for i in range(lam.numel())]
    if train_grad is not None:
        cots = cots[1:]
    # three backwards through the saved train graph (one per cotangent): faster on CPU than one
    # ``is_grads_batched`` (vmapped) backward, and the same products up to rounding
    last = len(cots) - 1
    keep = shared is not None and train_grad is None  # the real step's backward still needs the shared graph
    per = [grad(z, wl, grad_outputs=c.to(z.dtype), retain_graph=keep or i < last) for i, c in enumerate(cots)]
    if train_grad is not None:
        per = [tuple(train_grad[n] for n in names)] + per
    jt = [torch.stack(gs) for gs in zip(*per)]
    if rule.plain_lr is not None:
        lr = rule.plain_lr
        w_new = {n: (w[n].detach() - lr * g[0]).requires_grad_(True) for n, g in zip(names, jt)}
        lv = val_loss(fwd, w_new, val_batch, t_val)
        v = grad(lv, [w_new[n] for n in names])
        if val_mean is not None:
            v = val_mean(v)
        mixed = torch.stack([(g[1:].flatten(1) * vi.reshape(1, -1)).sum(1) for g, vi in zip(jt, v)]).sum(0)
        return (-lr * mixed).to(metaparams.dtype)
    g0 = {n: g[0] for n, g in zip(names, jt)}
    stepped, pullback = rule.linearize(w, g0)
    w_new = {n: stepped[n].requires_grad_(True) for n in names}
    lv = val_loss(fwd, w_new, val_batch, t_val)
    v = grad(lv, [w_new[n] for n in names])
    q = pullback(dict(zip(names, v if val_mean is None else val_mean(v))))
    mixed = torch.stack([(g[1:].flatten(1) * q[n].reshape(1, -1)).sum(1) for n, g in zip(names, jt)]).sum(0)
    return mixed.to(metaparams.dtype)
