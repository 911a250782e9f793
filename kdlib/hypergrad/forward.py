"""Forward-mode hypergradient of eq. (3): two JVPs (one per metaparameter, vmapped by ``torch.func.jacfwd``)
through the ``steps``-step map of the optimizer's update rule (forward-over-reverse). Exact, equal to
``"unrolled"``. Dropout: ``randomness="same"`` (one mask for both tangents, the same as the other estimators').

Warning-free: the only warning seen is a FutureWarning (``torch.jit.script`` deprecated) raised by torch's own
one-time import of its forward-AD decompositions; :func:`prepare_forward_ad` silences exactly that.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from kdlib.hypergrad.rules import UpdateRule
from kdlib.hypergrad.state import Forward, train_loss, val_loss

_JVP_READY = False


def prepare_forward_ad() -> None:
    """Load torch's forward-AD decompositions once, silencing torch's own deprecation warning of that import."""
    global _JVP_READY
    if _JVP_READY:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
        importlib.import_module("torch._decomp.decompositions_for_jvp")
    _JVP_READY = True


def forward_mode(fwd: Forward, params: Mapping[str, Tensor], batches: Sequence[tuple], val_batch: tuple,
                 metaparams: Tensor, rule: UpdateRule, t_val: Any, loss_opts: Mapping[str, Any]) -> Tensor:
    """d/dlambda_i of the K-step map lambda -> L_val(w_K(lambda)), one JVP per metaparameter."""
    prepare_forward_ad()
    w0 = {n: p.detach() for n, p in params.items()}

    def outer(lam: Tensor) -> Tensor:
        w, state = w0, None
        for batch in batches:
            g = torch.func.grad(lambda w_: train_loss(fwd, w_, batch, lam, loss_opts))(w)
            w, state = rule.step(w, g, state)
        return val_loss(fwd, w, val_batch, t_val)

    # jacfwd = both JVPs (tangents e_1, e_2) vmapped in one pass
    return torch.func.jacfwd(outer, randomness="same")(metaparams.detach())
