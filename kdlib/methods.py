"""The six metaparameter strategies of the paper (Sec. 4), as a registry of named methods.

Each method turns a config and a :class:`kdlib.train.Problem` pair (full data for the baselines, the
train/val split for the tuning methods) into a logged run. Methods know nothing of datasets.

- ``no_distillation``: lambda1 = 1 (plain cross-entropy);
- ``naive``: (lambda1, T) = (0.5, 1);
- ``random``: lambda1 ~ U(0,1), T ~ U(0.1,10) (``random_law="uniform"``, the paper's text) or
  log10 T ~ U(-1,1) (``"loguniform"``, the authors' code), fixed for the run;
- ``gradient``: a hypergradient step (eq. 3) every iteration, value clipping, metaparameter SGD, projection;
- ``hyperopt``: TPE with ``hyperopt_evals`` fixed-metaparameter runs scored by best validation accuracy,
  then one run with the best values;
- ``proposed``: Algorithm 1: ``e1`` gradient iterations whose values are recorded, a least-squares line
  (eq. 4), ``e2`` iterations following it, repeated. Counted in global iterations by default
  (``proposed_reset="global"``); ``"epoch"`` restarts the cycle at every epoch as the authors' code did.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from kdlib.experiments.config import ExperimentConfig
from kdlib.hypergrad import hypergradient
from kdlib.metaparams import project, sample_initial, sample_random_baseline
from kdlib.train import Problem, StepInfo, train_student
from kdlib.trajectory import extrapolate


class NonFiniteHypergradient(RuntimeError):
    """Raised when every hypergradient of a run was NaN/inf (nothing could be applied)."""


# ----------------------------------------------------------------------------------------------- controllers
class FixedController:
    """Constant (lambda1, T) for the whole run."""

    def __init__(self, metaparams: Tensor) -> None:
        self.value = project(metaparams.detach().clone())
        self.hypergrad_evals = 0
        self.nan_skipped = 0

    def metaparams(self, info: StepInfo) -> Tensor:
        if self.value.device != info.train_batch[0].device:
            self.value = self.value.to(info.train_batch[0].device)
        return self.value

    def phase(self, info: StepInfo) -> str:
        return "fixed"


class GradientController:
    """Greedy hypergradient descent on (lambda1, T): eq. (3) every iteration.

    A non-finite hypergradient is skipped (never applied) and counted in ``nan_skipped``; the check is a
    tensor ``where`` so that the CUDA path does not synchronise.
    """

    def __init__(self, cfg: ExperimentConfig, init: Tensor) -> None:
        self.cfg = cfg
        self.value = project(init.detach().clone().float())
        self.hypergrad_evals = 0
        self._nan = torch.zeros((), dtype=torch.long)

    @property
    def nan_skipped(self) -> int:
        return int(self._nan)

    def gradient_step(self, info: StepInfo) -> Tensor:
        device = info.train_batch[0].device
        if self.value.device != device:
            self.value = self.value.to(device)
            self._nan = self._nan.to(device)
        steps = self.cfg.unroll_steps if self.cfg.estimator == "unrolled" else 1
        g = hypergradient(info.model, info.train_batch, info.next_val_batch(), self.value, info.lr,
                          t_val=self.cfg.t_val, method=self.cfg.estimator, steps=steps,
                          form=self.cfg.loss_form, t2_scaling=self.cfg.t2_scaling)
        self.hypergrad_evals += 1
        finite = torch.isfinite(g).all()
        self._nan = self._nan + (~finite).long()
        g = torch.where(finite, g, torch.zeros_like(g)).clamp(-self.cfg.meta_clip, self.cfg.meta_clip)
        self.value = project(self.value - self.cfg.meta_lr * g.detach().to(self.value.dtype))
        return self.value

    def metaparams(self, info: StepInfo) -> Tensor:
        return self.gradient_step(info)

    def phase(self, info: StepInfo) -> str:
        return "gradient"


class ProposedController(GradientController):
    """Algorithm 1: e1 gradient iterations, a fitted line (eq. 4), e2 extrapolated iterations, repeated.

    The recorded trajectory is the metaparameter *values* after each gradient step (as in the authors'
    code; the paper's text says "trajectory of nabla lambda"). Extrapolated values continue the line's
    index (e1, e1+1, ...) and are projected into the box (the authors left them unclamped).
    """

    def __init__(self, cfg: ExperimentConfig, init: Tensor) -> None:
        super().__init__(cfg, init)
        self.history: list[Tensor] = []
        self.line: Tensor | None = None  # (e2, 2) extrapolated values of the current cycle
        self._phase = "gradient"

    def _position(self, info: StepInfo) -> int:
        counter = info.step if self.cfg.proposed_reset == "global" else info.batch_in_epoch
        return counter % (self.cfg.e1 + self.cfg.e2)

    def metaparams(self, info: StepInfo) -> Tensor:
        pos = self._position(info)
        if pos < self.cfg.e1:
            if pos == 0:
                self.history = []
            value = self.gradient_step(info)
            self.history.append(value.clone())
            if pos == self.cfg.e1 - 1 and self.cfg.e2 > 0:
                self.line = extrapolate(torch.stack(self.history), self.cfg.e2)
            self._phase = "gradient"
            return value
        if self.line is None:  # an epoch reset cut the gradient phase short: keep optimising
            self._phase = "gradient"
            return self.gradient_step(info)
        value = self.line[pos - self.cfg.e1]
        if self.cfg.clamp_extrapolation:
            value = project(value)
        self.value = value
        self._phase = "extrapolate"
        return value

    def phase(self, info: StepInfo) -> str:
        return self._phase


# ------------------------------------------------------------------------------------------------- methods
@dataclass
class MethodResult:
    history: list[dict]
    full_trainings: int
    extra: dict


class Method:
    """A named strategy. ``uses_val_split``: trains on D_train and tunes on D_val (else trains on all D)."""

    name: ClassVar[str] = ""
    uses_val_split: ClassVar[bool] = False

    def initial(self, cfg: ExperimentConfig, rng: np.random.Generator) -> Tensor:
        return sample_initial(rng)

    def controller(self, cfg: ExperimentConfig, rng: np.random.Generator):
        raise NotImplementedError

    def run(self, cfg: ExperimentConfig, problem: Problem, progress: bool = False) -> MethodResult:
        rng = np.random.default_rng(cfg.seed)
        out = train_student(cfg, problem, self.controller(cfg, rng), progress=progress)
        return MethodResult(out.history, 1, {})


class NoDistillation(Method):
    name = "no_distillation"

    def controller(self, cfg, rng):
        return FixedController(torch.tensor([1.0, 1.0]))


class Naive(Method):
    name = "naive"

    def controller(self, cfg, rng):
        return FixedController(torch.tensor([0.5, 1.0]))


class Random(Method):
    name = "random"

    def controller(self, cfg, rng):
        return FixedController(sample_random_baseline(rng, cfg.random_law))


def _initial(cfg: ExperimentConfig, rng: np.random.Generator) -> Tensor:
    init = sample_initial(rng)
    if cfg.init_lambda1 is not None:
        init[0] = cfg.init_lambda1
    if cfg.init_temperature is not None:
        init[1] = cfg.init_temperature
    return init


class Gradient(Method):
    name = "gradient"
    uses_val_split = True

    def controller(self, cfg, rng):
        return GradientController(cfg, _initial(cfg, rng))


class Proposed(Method):
    name = "proposed"
    uses_val_split = True

    def controller(self, cfg, rng):
        return ProposedController(cfg, _initial(cfg, rng))


class Hyperopt(Method):
    """TPE (hyperopt) over lambda1 ~ U(0,1), log10 T ~ U(-1,1), ``hyperopt_evals`` full runs, then one more."""

    name = "hyperopt"
    uses_val_split = True

    def run(self, cfg: ExperimentConfig, problem: Problem, progress: bool = False) -> MethodResult:
        from hyperopt import STATUS_OK, Trials, fmin, hp, tpe

        trials_log: list[dict] = []

        def objective(point: dict) -> dict:
            lam = torch.tensor([point["lambda1"], 10.0 ** point["log10_temperature"]], dtype=torch.float32)
            out = train_student(cfg, problem, FixedController(lam), score_on_val=True)
            score = out.best_val_accuracy
            trials_log.append(dict(lambda1=float(lam[0]), temperature=float(lam[1]), best_val_accuracy=score))
            loss = -score if math.isfinite(score) else 0.0
            return {"loss": loss, "status": STATUS_OK}

        space = {"lambda1": hp.uniform("lambda1", 0.0, 1.0),
                 "log10_temperature": hp.uniform("log10_temperature", -1.0, 1.0)}
        best = fmin(objective, space, algo=tpe.suggest, max_evals=cfg.hyperopt_evals, trials=Trials(),
                    rstate=np.random.default_rng(cfg.seed), show_progressbar=False)
        lam = torch.tensor([best["lambda1"], 10.0 ** best["log10_temperature"]], dtype=torch.float32)
        out = train_student(cfg, problem, FixedController(lam), progress=progress)
        return MethodResult(out.history, cfg.hyperopt_evals + 1, {"trials": trials_log})


METHODS: dict[str, type[Method]] = {m.name: m for m in
                                    (NoDistillation, Naive, Random, Gradient, Hyperopt, Proposed)}


def get_method(name: str) -> Method:
    """The registered method called ``name``; a clear error lists the valid names."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]()


def register(method: type[Method]) -> type[Method]:
    """Add a user-defined method to the registry (usable as a class decorator)."""
    if not method.name:
        raise ValueError("a method needs a non-empty class attribute `name`")
    METHODS[method.name] = method
    return method

