"""The reference implementation of eq. (3) with ``higher`` (``unrolled_impl="higher"``): K differentiable steps
of ``higher``'s copy of the optimizer (``DifferentiableSGD`` / ``DifferentiableAdam``, state and param groups
copied from the real optimizer), exactly the DARTS / ``higher`` recipe; slower than the ``torch.func`` path,
which the tests check against it.

Two adaptations of ``higher`` 0.2.1, whose optimizers predate torch's current ones: ``AdamW`` has no
differentiable twin there (:class:`DifferentiableAdamW` adds the decoupled decay ``w * (1 - lr wd)`` before
``DifferentiableAdam``'s step), and ``DifferentiableAdam`` adds eps outside the bias correction
(``sqrt(v) + eps`` scaled by ``sqrt(bc2) / bc1``, torch < 1.x), where torch divides ``sqrt(v)`` by
``sqrt(bc2)`` first; :class:`TorchAdam` rescales eps per step to torch's placement and reads torch's
float32 tensor step count as a Python number (as torch does; ``beta2 ** step`` in float32 is ~1e-5 off).
``higher`` does not write BatchNorm running statistics back consistently (higher issue #103), so every buffer is saved before and
restored after, leaving the model as found; the optimizer's state is copied by ``higher``, never written.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import higher
import higher.optim
import torch
from torch import Tensor, nn

from kdlib.hypergrad.state import ForwardFn
from kdlib.losses import distillation_loss, validation_loss


class TorchAdam(higher.optim.DifferentiableAdam):
    """``higher``'s differentiable Adam with torch's eps placement and decoupled (AdamW) weight decay."""

    decoupled = False

    def _update(self, grouped_grads, **kwargs) -> None:  # type: ignore[override]
        saved = []
        for gi, group in enumerate(self.param_groups):
            # torch: lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps) == higher's form with eps' = eps * sqrt(bc2)
            for s in self.state[gi].values():  # torch >= 1.12 keeps a float32 tensor; higher would compute
                if "step" in s:                  # beta ** step in float32 (bc2 off by ~1e-5 relative)
                    s["step"] = float(s["step"])
            steps = [s["step"] for s in self.state[gi].values() if "step" in s]
            t = (steps[0] if steps else 0.0) + 1
            if any(s + 1 != t for s in steps):
                raise NotImplementedError("the reference needs one step count per param group")
            saved.append((group["eps"], group["weight_decay"]))
            group["eps"] = group["eps"] * math.sqrt(1 - group["betas"][1] ** t)
            if self.decoupled and group["weight_decay"] != 0:
                lr, wd = group["lr"], group["weight_decay"]
                group["params"] = [None if p is None else p * (1 - lr * wd) for p in group["params"]]
                group["weight_decay"] = 0.0
        try:
            super()._update(grouped_grads, **kwargs)
        finally:
            for group, (eps, wd) in zip(self.param_groups, saved):
                group["eps"], group["weight_decay"] = eps, wd


class DifferentiableAdamW(TorchAdam):
    decoupled = True


_REFERENCE = {torch.optim.SGD: higher.optim.DifferentiableSGD, torch.optim.Adam: TorchAdam,
              torch.optim.AdamW: DifferentiableAdamW}


def _diffopt(optimizer: torch.optim.Optimizer, model: nn.Module, fmodel: Any) -> Any:
    if type(optimizer) not in _REFERENCE or any(g.get("amsgrad", False) for g in optimizer.param_groups):
        raise NotImplementedError(f"the higher reference (unrolled_impl='higher') covers SGD, Adam and AdamW "
                                  f"without amsgrad, not {type(optimizer).__name__}; use unrolled_impl='auto'")
    kind = _REFERENCE[type(optimizer)]
    if kind is TorchAdam and optimizer.param_groups[0].get("decoupled_weight_decay", False):
        kind = DifferentiableAdamW
    return kind(optimizer, model.parameters(), fmodel=fmodel, track_higher_grads=True)


def unrolled_higher(model: nn.Module, batches: Sequence[tuple], val_batch: tuple, metaparams: Tensor,
                    lr: Any, t_val: Any, loss_opts: Mapping[str, Any],
                    optimizer: Optional[torch.optim.Optimizer] = None,
                    forward: Optional[ForwardFn] = None) -> Tensor:
    """Eq. (3) through ``len(batches)`` steps of ``optimizer`` (or plain SGD at ``lr``) with ``higher``."""
    call = (lambda m, x: m(x)) if forward is None else forward
    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    lam = metaparams.detach().clone().requires_grad_(True)
    inner_opt = torch.optim.SGD(model.parameters(), lr=float(lr)) if optimizer is None else optimizer
    try:
        with torch.enable_grad():
            fmodel = higher.monkeypatch(model, copy_initial_weights=True, track_higher_grads=True)
            diffopt = _diffopt(inner_opt, model, fmodel)
            for x, y, t in batches:
                diffopt.step(distillation_loss(call(fmodel, x), t, y, lam[0], lam[1], **loss_opts))
            lv = validation_loss(call(fmodel, val_batch[0]), val_batch[1], t_val)
            (hg,) = torch.autograd.grad(lv, [lam])
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(saved[n])
    return hg.to(metaparams.dtype)
