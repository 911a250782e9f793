"""Implicit-function hypergradient (Lorraine et al. 2020; the Theorem 1 proof formula from Pedregosa 2016).

``-(d2 L_train / dlambda dw)^T H^{-1} grad_w L_val`` with ``H^{-1} v ~ alpha * sum_{j=0}^{J} (I - alpha H)^j v``
(J = ``neumann_terms`` >= 0 Hessian-vector products, J + 1 summands; alpha = ``neumann_alpha``, default the
plain-SGD ``lr``; converges iff alpha < 2 / lambda_max(H)). Everything is evaluated **at the current w** (w is
treated as an approximate inner optimum; no virtual step is taken). With H = I and alpha = lr = 1, at the
inner optimum, it coincides with ``"unrolled"``, steps=1 (Theorem 1).

No step, hence no optimizer: its target is the stationary point of L_train, not a step of a particular
optimizer. Passing an ``optimizer=`` that is exactly plain SGD (one lr, no momentum, no weight decay) uses
that lr as the default alpha; any other optimizer raises ``NotImplementedError`` (momentum is irrelevant at
the optimum, but weight decay moves it and Adam's preconditioning is not a Neumann step size -- silently
using its lr as alpha would be a wrong answer).
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from kdlib.hypergrad.rules import UpdateRule
from kdlib.hypergrad.state import Forward, grad, leaves, train_loss, val_loss


def neumann(fwd: Forward, params: Mapping[str, Tensor], batch: tuple, val_batch: tuple, metaparams: Tensor,
            rule: UpdateRule, t_val: Any, loss_opts: Mapping[str, Any], neumann_terms: int = 5,
            neumann_alpha: Any = None) -> Tensor:
    """Implicit hypergradient -(d2L_train/dlambda dw)^T H^{-1} grad_w L_val at the current w."""
    if rule.plain_lr is None:
        raise NotImplementedError("method='neumann' is the implicit (no-step) estimator; it accepts lr= or a "
                                  "plain torch.optim.SGD (one lr, no momentum, no weight decay) whose lr is "
                                  "the default neumann_alpha, not this optimizer; pass lr= and neumann_alpha=")
    alpha = rule.plain_lr if neumann_alpha is None else neumann_alpha
    if neumann_terms < 0:
        raise ValueError("neumann_terms must be >= 0")
    lam = metaparams.detach().clone().requires_grad_(True)
    w = leaves(params)
    names = list(w)
    wl = [w[n] for n in names]
    loss = train_loss(fwd, w, batch, lam, loss_opts)
    g = grad(loss, wl, create_graph=True)
    v = grad(val_loss(fwd, w, val_batch, t_val), wl)
    live = [i for i, gi in enumerate(g) if gi.requires_grad]  # parameters unused by L_train have no graph
    g_live = [g[i] for i in live]
    p = list(v)
    acc = list(v)
    for _ in range(neumann_terms):
        hp = grad(g_live, wl, grad_outputs=[p[i] for i in live], retain_graph=True)
        p = [pi - alpha * hi for pi, hi in zip(p, hp)]
        acc = [ai + pi for ai, pi in zip(acc, p)]
    q = [alpha * ai for ai in acc]  # ~ H^{-1} v
    (mixed,) = grad(g_live, [lam], grad_outputs=[q[i] for i in live])  # (d2 L / dlambda dw)^T q
    return -mixed
