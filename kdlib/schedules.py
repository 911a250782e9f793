"""Metaparameter schedules: how (lambda1, T) moves from one iteration to the next (Sec. 3 of the paper).

* ``"fixed"``: constant values;
* ``"gradient"``: a hypergradient step (eq. 3) at every iteration (or every ``every``-th one);
* ``"proposed"``: Algorithm 1: ``e1`` gradient iterations whose post-step *values* are recorded (as in the
  authors' code; the paper's text says "trajectory of nabla lambda"), the least-squares line of eq. 4
  (:func:`kdlib.trajectory.extrapolate`), ``e2`` iterations following it at indices e1..e1+e2-1, repeated.
  The cycle counts global iterations (``reset="global"``) or restarts at every epoch (``"epoch"``, the authors'
  code). Extrapolated values are projected into the box unless ``clamp_extrapolation=False`` (the authors').

Everything here is written once, on tensors of shape (..., 2): the :class:`kdlib.tuner.Tuner` holds (2,) and
the stacking backends (:mod:`kdlib.train.stacked`, :mod:`kdlib.train.linear`) hold (S, 2); both call :class:`Schedule`.
The metaparameter update (:func:`meta_update`) skips a non-finite hypergradient by ``torch.where`` (no host
synchronisation) and counts it per row.

``temperature_param`` says on which coordinate the step of eq. (3) is taken for T: ``"linear"`` (the paper: on T
itself) or ``"log"`` (on log T, with the chain rule dL_val/d(log T) = T * dL_val/dT; the same value clip and
meta_lr, then T = exp(log T - meta_lr * clip(T * g_T)) is projected into the box). lambda1's step is the same
under both. A step of fixed size in log T moves T by a fixed *ratio*, so that a start at T = 0.2 is not 50 times
slower, relative to its scale, than one at T = 10.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from kdlib.metaparams import project
from kdlib.names import PROPOSED_RESETS, SCHEDULES, TEMPERATURE_PARAMS
from kdlib.trajectory import extrapolate



class NonFiniteHypergradient(RuntimeError):
    """Raised at the end of a run when every hypergradient it took was NaN/inf (nothing was applied)."""
RESETS = PROPOSED_RESETS


def meta_update(value: Tensor, hypergrad: Tensor, meta_lr: float, meta_clip: float,
                temperature_param: str = "linear") -> tuple[Tensor, Tensor]:
    """One metaparameter SGD step of eq. (3) on (..., 2) values: a row whose hypergradient holds NaN/inf is
    left unchanged; the others are value-clipped to ``[-meta_clip, meta_clip]``, stepped by ``meta_lr`` and
    projected into the box. Returns ``(new value, non-finite mask of shape value.shape[:-1])``.

    ``temperature_param="log"``: T's step is taken on log T -- its hypergradient becomes T * dL_val/dT (chain
    rule), is clipped the same way, and T becomes exp(log T - meta_lr * clip(T * dL_val/dT)) before projection."""
    if temperature_param not in TEMPERATURE_PARAMS:
        raise ValueError(f"unknown temperature_param {temperature_param!r}; choose one of: "
                         f"{', '.join(TEMPERATURE_PARAMS)}")
    finite = torch.isfinite(hypergrad).all(-1, keepdim=True)
    g = torch.where(finite, hypergrad, torch.zeros_like(hypergrad)).detach().to(value.dtype)
    if temperature_param == "linear":
        return project(value - meta_lr * g.clamp(-meta_clip, meta_clip)), ~finite[..., 0]
    lam, t = value[..., 0], value[..., 1]
    g_log_t = (t * g[..., 1]).clamp(-meta_clip, meta_clip)  # dL/dlogT = T dL/dT
    new_lam = lam - meta_lr * g[..., 0].clamp(-meta_clip, meta_clip)
    new_t = torch.exp(torch.log(t) - meta_lr * g_log_t)
    return project(torch.stack([new_lam, new_t], -1)), ~finite[..., 0]


def extrapolate_rows(recorded: Tensor, steps: int) -> Tensor:
    """Eq. (4) per row: ``recorded`` (e1, ..., 2) -> (steps, ..., 2).

    A (e1, 2) history is extrapolated as is; a stacked one row by row (one :func:`extrapolate` call per seed),
    so that a seed's line never depends on the other seeds of a batch."""
    if recorded.dim() == 2:
        return extrapolate(recorded, steps)
    lead = recorded.shape[1:-1]
    flat = recorded.reshape(recorded.shape[0], -1, recorded.shape[-1])
    rows = [extrapolate(flat[:, i].contiguous(), steps) for i in range(flat.shape[1])]
    return torch.stack(rows, 1).reshape(steps, *lead, recorded.shape[-1])


def check_schedule(schedule: str, e1: int, e2: int, meta_lr: float, meta_clip: float, every: int,
                   reset: str, temperature_param: str = "linear") -> None:
    """Raise ``ValueError`` naming the fix for a bad schedule setting (before any compute)."""
    if temperature_param not in TEMPERATURE_PARAMS:
        raise ValueError(f"unknown temperature_param {temperature_param!r}; choose one of: "
                         f"{', '.join(TEMPERATURE_PARAMS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if reset not in RESETS:
        raise ValueError(f"unknown proposed_reset {reset!r}; choose one of: {', '.join(RESETS)}")
    if schedule == "proposed" and int(e1) < 2:
        raise ValueError(f"e1={e1}: the line of eq. 4 needs at least 2 recorded points; set e1 >= 2")
    if int(e2) < 0:
        raise ValueError(f"e2={e2}: set e2 >= 0")
    if int(every) < 1:
        raise ValueError(f"every={every}: take a hypergradient step every k >= 1 iterations")
    if not meta_lr > 0:
        raise ValueError(f"meta_lr must be > 0, got {meta_lr}")
    if not meta_clip > 0:
        raise ValueError(f"meta_clip must be > 0, got {meta_clip}")


class Schedule:
    """The state of one schedule on (..., 2) metaparameters.

    :meth:`step` advances one training iteration; it calls ``hypergradient(value) -> (..., 2)`` only when the
    schedule takes a gradient step, so that the caller computes nothing (and draws no validation batch)
    otherwise. ``evals`` counts hypergradient evaluations, ``nonfinite`` (shape ``value.shape[:-1]``) the
    skipped non-finite ones per row, ``phase`` is ``"fixed"``, ``"gradient"`` or ``"extrapolate"``.
    """

    def __init__(self, init: Tensor, schedule: str = "gradient", e1: int = 10, e2: int = 10, meta_lr: float = 0.1,
                 meta_clip: float = 0.01, every: int = 1, reset: str = "global",
                 clamp_extrapolation: bool = True, temperature_param: str = "linear") -> None:
        check_schedule(schedule, e1, e2, meta_lr, meta_clip, every, reset, temperature_param)
        if init.shape[-1:] != (2,):
            raise ValueError(f"init must have shape (..., 2) = (lambda1, T), got {tuple(init.shape)}")
        self.kind = schedule
        self.e1, self.e2, self.every = int(e1), int(e2), int(every)
        self.meta_lr, self.meta_clip = float(meta_lr), float(meta_clip)
        self.reset = reset
        self.clamp_extrapolation = bool(clamp_extrapolation)
        self.temperature_param = temperature_param
        self.value = project(init.detach().clone())
        self.nonfinite = torch.zeros(self.value.shape[:-1], dtype=torch.long, device=self.value.device)
        self.evals = 0
        self.recorded: list[Tensor] = []
        self.line: Tensor | None = None  # (e2, ..., 2): the extrapolated values of the current cycle
        self.phase = "fixed" if schedule == "fixed" else "gradient"

    def to(self, device: torch.device | str) -> "Schedule":
        """Move the state to ``device`` (the tuner follows the model's batches)."""
        self.value = self.value.to(device)
        self.nonfinite = self.nonfinite.to(device)
        self.recorded = [r.to(device) for r in self.recorded]
        self.line = None if self.line is None else self.line.to(device)
        return self

    def _gradient(self, hypergradient: Callable[[Tensor], Tensor]) -> None:
        g = hypergradient(self.value)
        self.evals += 1
        self.value, bad = meta_update(self.value, g, self.meta_lr, self.meta_clip, self.temperature_param)
        self.nonfinite = self.nonfinite + bad.long()

    def step(self, iteration: int, in_epoch: int, hypergradient: Callable[[Tensor], Tensor]) -> Tensor:
        """Advance one iteration (global index ``iteration``, ``in_epoch``-th batch of its epoch); return the
        (..., 2) values the student trains at in this iteration."""
        if self.kind == "fixed":
            return self.value
        counter = iteration if self.reset == "global" else in_epoch
        if self.kind == "gradient":
            if counter % self.every == 0:
                self._gradient(hypergradient)
            return self.value
        pos = counter % (self.e1 + self.e2)
        if pos < self.e1:
            if pos == 0:
                self.recorded = []
            if pos % self.every == 0:
                self._gradient(hypergradient)
            self.recorded.append(self.value.clone())
            if pos == self.e1 - 1 and self.e2 > 0:
                self.line = extrapolate_rows(torch.stack(self.recorded), self.e2)
            self.phase = "gradient"
            return self.value
        if self.line is None:  # an epoch reset cut the gradient phase short: keep optimising
            self.phase = "gradient"
            if counter % self.every == 0:
                self._gradient(hypergradient)
            return self.value
        value = self.line[pos - self.e1]
        self.value = project(value) if self.clamp_extrapolation else value
        self.phase = "extrapolate"
        return self.value

    def check(self, what: str = "this run") -> None:
        """Raise :class:`NonFiniteHypergradient` if hypergradients were taken and, for some row, every one was
        NaN/inf (its values never moved from the initial ones). Reads the counts (synchronises a device)."""
        if self.evals == 0:
            return
        dead = (self.nonfinite >= self.evals).reshape(-1).nonzero().flatten().tolist()
        if dead:
            rows = "" if self.nonfinite.dim() == 0 else f" (rows {dead})"
            raise NonFiniteHypergradient(
                f"all {self.evals} hypergradients of {what}{rows} were NaN/inf, so (lambda1, T) never moved from "
                f"its initial value; lower the student's lr or the estimator's step, or check the teacher logits")

    def state_dict(self) -> dict[str, Any]:
        return dict(value=self.value.clone(), nonfinite=self.nonfinite.clone(), evals=self.evals,
                    recorded=[r.clone() for r in self.recorded],
                    line=None if self.line is None else self.line.clone(), phase=self.phase)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["value"].shape != self.value.shape:
            raise ValueError(f"state holds metaparameters of shape {tuple(state['value'].shape)}, this schedule "
                             f"{tuple(self.value.shape)}")
        self.value = state["value"].clone()
        self.nonfinite = state["nonfinite"].clone()
        self.evals = int(state["evals"])
        self.recorded = [r.clone() for r in state["recorded"]]
        self.line = None if state["line"] is None else state["line"].clone()
        self.phase = str(state["phase"])


__all__ = ["Schedule", "NonFiniteHypergradient", "meta_update", "extrapolate_rows", "check_schedule", "SCHEDULES",
           "RESETS", "TEMPERATURE_PARAMS"]
