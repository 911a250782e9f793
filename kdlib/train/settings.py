"""The settings of one student run (a :class:`Settings`), and the optimizer, Tuner and schedule built from them.

:class:`Settings` holds what a run needs, with user defaults (shuffled batches, no lr schedule, plain SGD);
:meth:`Settings.of` reads the same field names from any object (the experiments' config keeps the paper's
values). :func:`make_optimizer`, :func:`make_tuner` and :func:`make_schedule` are the one place a run's student
optimizer and its metaparameter schedule (eq. 3, Algorithm 1) are built from the settings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from kdlib.names import OPTIMIZERS
from kdlib.schedules import Schedule
from kdlib.tuner import Tuner


@dataclass
class Settings:
    """Everything one student run reads; names follow the paper and :class:`kdlib.experiments.config.ExperimentConfig`."""

    seed: int = 0
    # the loop: exactly one of iterations / epochs
    iterations: int | None = None
    epochs: int | None = None
    batch_size: int | None = None  # None: full batch
    shuffle: bool = True
    log_every: int = 1  # iterations (a run counted in iterations) or epochs
    eval_every: int = 1  # epochs: evaluate after epoch 0, after every epoch e with (e + 1) % eval_every == 0, and
    #                      at the end (the authors: 5); 1 = every epoch. Iteration-counted runs use log_every only
    # the student's optimizer
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    lr_step_epochs: int | None = None  # StepLR period in epochs (None: constant lr)
    lr_gamma: float = 0.5
    # the metaparameters (eq. 3, Algorithm 1)
    t_val: float = 1.0
    estimator: str = "unrolled"
    unroll_steps: int = 1
    meta_lr: float = 0.1
    meta_clip: float = 0.01
    e1: int = 10
    e2: int = 10
    proposed_reset: str = "global"
    clamp_extrapolation: bool = True
    fd_virtual_lr: str = "current"
    temperature_param: str = "linear"  # eq. 3's step on T ("linear") or on log T ("log")
    init_law: str = "uniform"
    init_lambda1: float | None = None
    init_temperature: float | None = None
    random_law: str = "uniform"  # "uniform" | "loguniform" | "authors" (kdlib.metaparams.random_baseline)
    hyperopt_evals: int = 5
    loss_form: str = "ce"
    t2_scaling: bool = False
    label: str = "run"

    @classmethod
    def of(cls, obj: Any) -> "Settings":
        """``obj`` itself if a Settings, else a Settings from the attributes of ``obj`` with these names (the
        others keep their defaults); a dict is read by key."""
        if isinstance(obj, cls):
            return obj
        names = [f.name for f in dataclasses.fields(cls)]
        get = obj.get if isinstance(obj, dict) else (lambda k, d: getattr(obj, k, d))
        values = {n: get(n, getattr(cls, n)) for n in names if n != "label"}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        key = getattr(obj, "key", None)
        values["label"] = key() if callable(key) else get("label", "run")
        return cls(**values)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and the fix."""
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError(f"set exactly one of iterations= (steps) or epochs= (passes over the data); got "
                             f"iterations={self.iterations}, epochs={self.epochs}")
        if (self.iterations or self.epochs or 0) < 1:
            raise ValueError("iterations/epochs must be >= 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (full batch), got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if self.optimizer != "sgd" and (self.momentum or self.nesterov):
            raise ValueError(f"momentum/nesterov are SGD settings; optimizer={self.optimizer!r} uses betas")
        if self.nesterov and not self.momentum > 0:
            raise ValueError("nesterov=True needs momentum > 0")
        for name in ("lr", "t_val", "lr_gamma", "meta_lr", "meta_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if not isinstance(self.eval_every, int) or isinstance(self.eval_every, bool) or self.eval_every < 1:
            raise ValueError(f"eval_every must be an integer >= 1 (epochs between test/val evaluations; 1 = every "
                             f"epoch, 5 = the authors' cadence), got {self.eval_every!r}")


def make_optimizer(params, settings: Settings) -> torch.optim.Optimizer:
    """The student's optimizer from ``settings`` (the paper: plain SGD)."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, nesterov=settings.nesterov,
                               weight_decay=settings.weight_decay)
    cls = torch.optim.Adam if settings.optimizer == "adam" else torch.optim.AdamW
    if settings.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {settings.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return cls(params, lr=settings.lr, betas=tuple(settings.betas), weight_decay=settings.weight_decay)


def make_tuner(settings: Settings, optimizer: torch.optim.Optimizer, init: Tensor, schedule: str) -> Tuner:
    """The Tuner of one run: ``schedule`` from ``init`` with the settings' estimator and Algorithm 1 options."""
    return Tuner(optimizer, init=init, schedule=schedule, e1=settings.e1, e2=settings.e2,
                 estimator=settings.estimator, meta_lr=settings.meta_lr, meta_clip=settings.meta_clip,
                 t_val=settings.t_val, steps=settings.unroll_steps, proposed_reset=settings.proposed_reset,
                 clamp_extrapolation=settings.clamp_extrapolation, form=settings.loss_form,
                 t2_scaling=settings.t2_scaling, fd_virtual_lr=settings.fd_virtual_lr,
                 temperature_param=settings.temperature_param, seed=settings.seed)


def make_schedule(settings: Settings, init: Tensor, schedule: str) -> Schedule:
    """The schedule of a stacked backend on (S, 2) values ``init``: ``schedule`` with the settings' Algorithm 1
    options, as :func:`make_tuner`'s Tuner holds it (one hypergradient step per iteration)."""
    return Schedule(init, schedule, settings.e1, settings.e2, settings.meta_lr, settings.meta_clip, 1,
                    settings.proposed_reset, settings.clamp_extrapolation, settings.temperature_param)


__all__ = ["Settings", "make_optimizer", "make_tuner", "make_schedule", "OPTIMIZERS"]
