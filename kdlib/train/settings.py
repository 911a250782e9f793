"""The run settings: the one schema of what a student run reads, its one validator, and the optimizer, Tuner and
schedule built from it.

:class:`Settings` holds every knob of a run (the loop, the student's optimizer, the metaparameters of eq. 3 and
Algorithm 1), with user defaults (shuffled batches, no lr schedule, plain SGD, the exact one-step estimator).
The experiments' :class:`kdlib.experiments.config.ExperimentConfig` extends it (the dataset, method, data and
teacher of a run) and keeps the paper's values where they differ. :meth:`Settings.validate` checks every field
before any compute, from the rule tables below (a subclass extends them), and raises
:class:`kdlib.errors.ConfigError` naming the field, what was expected, what was found and the fix.
:meth:`Settings.of` reads the same field names from any object or dict. Every choice list comes from
:mod:`kdlib.names`. :func:`make_optimizer`, :func:`make_tuner` and :func:`make_schedule` are the one place a
run's student optimizer and its metaparameter schedule are built from the settings.

A new knob is one field here with its rule (and, for a new choice list, one tuple in :mod:`kdlib.names`); the
store keys it only when it differs from its default (:data:`kdlib.experiments.store.STORE_V2_FIELDS`), so the
records made before it keep their keys.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import torch
from torch import Tensor

from kdlib.errors import ConfigError
from kdlib.metaparams import LAMBDA1_RANGE, TEMPERATURE_RANGE
from kdlib.names import (AUGMENTS, ESTIMATORS, FD_VIRTUAL_LRS, INIT_LAWS, LOSS_FORMS, OPTIMIZERS, PLACEMENTS,
                         PROPOSED_RESETS, RANDOM_LAWS, TEMPERATURE_PARAMS)
from kdlib.schedules import Schedule
from kdlib.tuner import Tuner


@dataclass
class Settings:
    """Everything one student run reads; names follow the paper (lambda1, T, t_val, e1, e2)."""

    seed: int = 0
    # the loop: exactly one of iterations / epochs
    iterations: int | None = None  # full-batch steps (the synthetic problem) or batches
    epochs: int | None = None  # passes over D_train (the image datasets)
    batch_size: int | None = None  # None: full batch
    shuffle: bool = True  # reshuffle D_train every epoch (a generator seeded by the seed)
    # "none", or "flip_crop": every train batch flipped and padded-cropped afresh (the authors' use_aug=True;
    # the problem supplies it, kdlib.data.augment; a generator of its own per run)
    augment: str = "none"
    # D_val augmented too (needs augment): the D_val batches the hypergradient draws and the logged validation
    # accuracy and loss (hyperopt's score) are on freshly flipped and cropped images, as in the authors' loaders,
    # whose D_val is a Subset of the augmented training set; each from a generator of its own per run
    augment_val: bool = False
    log_every: int = 1  # iterations (a run counted in iterations) or epochs between logged points
    eval_every: int = 1  # epochs: evaluate after epoch 0, after every epoch e with (e + 1) % eval_every == 0, and
    #                      at the end (the authors: 5); 1 = every epoch. Iteration-counted runs use log_every only
    # the student's optimizer
    optimizer: str = "sgd"  # "sgd" | "adam" | "adamw" (the paper: plain SGD)
    lr: float = 0.1
    momentum: float = 0.0  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)  # Adam/AdamW
    lr_step_epochs: int | None = None  # StepLR period in epochs (None: constant lr)
    lr_gamma: float = 0.5
    # the metaparameters (eq. 3, Algorithm 1)
    t_val: float = 1.0  # T_val of L_val
    estimator: str = "unrolled"  # the hypergradient estimator of eq. (3)
    unroll_steps: int = 1
    meta_lr: float = 0.1
    meta_clip: float = 0.01  # value clipping of the hypergradient, as the authors did
    e1: int = 10  # Algorithm 1: gradient iterations per cycle
    e2: int = 10  # Algorithm 1: extrapolated iterations per cycle (eq. 4)
    proposed_reset: str = "global"  # "global" (our default) or "epoch" (authors' per-epoch reset)
    clamp_extrapolation: bool = True
    fd_virtual_lr: str = "current"  # finite-difference virtual step at the "current" or the "initial" lr
    temperature_param: str = "linear"  # eq. 3's step on T ("linear", the paper) or on log T ("log")
    # where the Tuner's step sits: "before_backward" (the paper: the new values act on this very step) or
    # "after_backward" (from the loop's own .grad, one forward and backward fewer; the values act one step late;
    # one-step "unrolled" / "finite_difference" only)
    placement: str = "before_backward"
    # "uniform": lambda1 ~ U(0,1), log10 T ~ U(-1,1) from default_rng(seed); "authors": the authors' sequence,
    # np.random.seed(42), run index = seed
    init_law: str = "uniform"
    init_lambda1: float | None = None  # None: from init_law
    init_temperature: float | None = None  # None: from init_law
    # random baseline: "uniform" (paper text: T ~ U(0.1, 10)), "loguniform" (log10 T ~ U(-1, 1)), each drawn from
    # default_rng(seed), or "authors" (the authors' image runs: run i fixed at their i-th draw, the start of their
    # tuned run i; kdlib.metaparams.random_baseline)
    random_law: str = "uniform"
    hyperopt_evals: int = 5
    # the loss
    loss_form: str = "ce"  # "ce" (paper) or "kl" (authors' code)
    t2_scaling: bool = False  # Hinton's T^2 factor on the distillation term

    # the validator's rules, one per field (a subclass extends each table with its own fields)
    COUNTS: ClassVar[dict[str, int]] = dict(iterations=1, epochs=1, batch_size=1, lr_step_epochs=1, log_every=1,
                                            eval_every=1, unroll_steps=1, e1=2, e2=0, hyperopt_evals=1)
    NONNEG_INTS: ClassVar[tuple[str, ...]] = ("seed",)
    POSITIVE_FLOATS: ClassVar[tuple[str, ...]] = ("lr", "lr_gamma", "t_val", "meta_lr", "meta_clip")
    BOOLS: ClassVar[tuple[str, ...]] = ("shuffle", "nesterov", "clamp_extrapolation", "t2_scaling", "augment_val")
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = dict(
        estimator=ESTIMATORS, optimizer=OPTIMIZERS, random_law=RANDOM_LAWS, loss_form=LOSS_FORMS,
        proposed_reset=PROPOSED_RESETS, init_law=INIT_LAWS, fd_virtual_lr=FD_VIRTUAL_LRS,
        temperature_param=TEMPERATURE_PARAMS, placement=PLACEMENTS, augment=AUGMENTS)
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"iterations", "epochs", "batch_size", "lr_step_epochs",
                                                    "init_lambda1", "init_temperature"})

    @classmethod
    def of(cls, obj: Any) -> "Settings":
        """``obj`` itself if a Settings (an experiment config is one), else a Settings from the attributes of
        ``obj`` with these names (the others keep their defaults); a dict is read by key."""
        if isinstance(obj, cls):
            return obj
        names = [f.name for f in dataclasses.fields(cls)]
        get = obj.get if isinstance(obj, dict) else (lambda k, d: getattr(obj, k, d))
        values = {n: get(n, getattr(cls, n)) for n in names}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    def normalize(self) -> "Settings":
        """Canonical types in place (ints given for float fields become floats, ``betas`` a tuple), so that two
        equal settings hash equally (``lr=1`` and ``lr=1.0`` are one config). Wrong types are left for
        :meth:`validate` to report."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("float", "float | None") and _is_int(v):
                setattr(self, f.name, float(v))
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)
        if isinstance(self.betas, tuple):
            self.betas = tuple(float(b) if _is_int(b) else b for b in self.betas)
        return self

    def validate(self) -> None:
        """Raise :class:`kdlib.errors.ConfigError` (a ``ValueError``) naming the field, the expected and found
        value and the fix, for any field of the wrong type or out of range (after :meth:`normalize`)."""
        self.normalize()
        for name, choices in self.CHOICES.items():
            check_choice(name, getattr(self, name), choices)
        for name, low in self.COUNTS.items():
            v = getattr(self, name)
            if v is None and name in self.OPTIONAL:
                continue
            if not _is_int(v) or v < low:
                raise fail(name, f"an integer >= {low}" + (" or None" if name in self.OPTIONAL else ""), v)
        for name in self.NONNEG_INTS:
            v = getattr(self, name)
            if v is None and name in self.OPTIONAL:
                continue
            if not _is_int(v) or v < 0:
                raise fail(name, "an integer >= 0" + (" or None" if name in self.OPTIONAL else ""), v)
        for name in self.POSITIVE_FLOATS:
            v = getattr(self, name)
            if not _is_number(v) or not math.isfinite(v) or v <= 0:
                raise fail(name, "a finite number > 0", v)
        for name in self.BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise fail(name, "True or False", getattr(self, name))
        if (self.iterations is None) == (self.epochs is None):
            raise ConfigError(f"config fields 'iterations'/'epochs': set exactly one of iterations= (steps) or "
                              f"epochs= (passes over the data); got iterations={self.iterations}, "
                              f"epochs={self.epochs}")
        if not _is_number(self.momentum) or not 0 <= self.momentum < 1:
            raise fail("momentum", "a number in [0, 1)", self.momentum)
        if not _is_number(self.weight_decay) or not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise fail("weight_decay", "a finite number >= 0", self.weight_decay)
        if (not isinstance(self.betas, tuple) or len(self.betas) != 2
                or not all(_is_number(b) and 0 <= b < 1 for b in self.betas)):
            raise fail("betas", "two numbers in [0, 1), e.g. (0.9, 0.999)", self.betas)
        if self.optimizer != "sgd" and (self.momentum != 0 or self.nesterov):
            raise ConfigError(f"config fields 'momentum'/'nesterov': momentum/nesterov are SGD settings, they apply "
                              f"to optimizer 'sgd' only; found optimizer {self.optimizer!r} with "
                              f"momentum={self.momentum}, nesterov={self.nesterov} ({self.optimizer!r} uses betas); "
                              f"fix: drop them or set optimizer=sgd")
        if self.augment_val and self.augment == "none":
            raise fail("augment_val", "False when augment is 'none' (D_val is augmented as the training batches are)",
                       self.augment_val, "set augment=flip_crop, or augment_val=False")
        if self.nesterov and self.momentum <= 0:
            raise fail("nesterov", "False when momentum is 0 (Nesterov needs momentum > 0)", self.nesterov,
                       "set momentum > 0 or nesterov=False")
        if self.placement == "after_backward" and (self.estimator not in ("unrolled", "finite_difference")
                                                   or self.unroll_steps != 1):
            raise ConfigError(f"config field 'placement': 'after_backward' steps from the gradient in .grad, which "
                              f"the one-step 'unrolled' and 'finite_difference' estimators take; found estimator="
                              f"{self.estimator!r}, unroll_steps={self.unroll_steps}; fix: set "
                              f"placement=before_backward, or estimator=unrolled/finite_difference with "
                              f"unroll_steps=1")
        for name, (lo, hi) in (("init_lambda1", LAMBDA1_RANGE), ("init_temperature", TEMPERATURE_RANGE)):
            v = getattr(self, name)
            if v is not None and not _is_number(v):
                raise fail(name, f"None or a number in [{lo}, {hi}] (the metaparameter box)", v)
            if v is not None and not lo <= v <= hi:
                raise ConfigError(f"config field {name!r}: {v} is outside the metaparameter box [{lo}, {hi}]; "
                                  f"fix: set {name} inside [{lo}, {hi}] or None to draw it")


def fail(name: str, expected: str, found: Any, fix: str | None = None) -> ConfigError:
    """The error of field ``name``: what was expected, what was found (and its type) and the fix."""
    fix = fix or f"set {name} to {expected} (CLI: --set {name}=VALUE)"
    return ConfigError(f"config field {name!r}: expected {expected}, found {found!r} "
                       f"({type(found).__name__}); fix: {fix}")


def check_choice(what: str, value: Any, choices: Iterable[str]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices`` (listed in the message)."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def make_optimizer(params, settings: Settings) -> torch.optim.Optimizer:
    """The student's optimizer from ``settings`` (the paper: plain SGD)."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, nesterov=settings.nesterov,
                               weight_decay=settings.weight_decay)
    cls = torch.optim.Adam if settings.optimizer == "adam" else torch.optim.AdamW
    if settings.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {settings.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return cls(params, lr=settings.lr, betas=tuple(settings.betas), weight_decay=settings.weight_decay)


def schedule_options(settings: Settings) -> dict[str, Any]:
    """The schedule's options of eq. (3) and Algorithm 1 from the settings (the one place they are read)."""
    return dict(e1=settings.e1, e2=settings.e2, meta_lr=settings.meta_lr, meta_clip=settings.meta_clip,
                proposed_reset=settings.proposed_reset, clamp_extrapolation=settings.clamp_extrapolation,
                temperature_param=settings.temperature_param)


def make_tuner(settings: Settings, optimizer: torch.optim.Optimizer, init: Tensor, schedule: str) -> Tuner:
    """The Tuner of one run: ``schedule`` from ``init`` with the settings' estimator and Algorithm 1 options."""
    return Tuner(optimizer, init=init, schedule=schedule, estimator=settings.estimator, t_val=settings.t_val,
                 steps=settings.unroll_steps, form=settings.loss_form, t2_scaling=settings.t2_scaling,
                 fd_virtual_lr=settings.fd_virtual_lr, seed=settings.seed, placement=settings.placement,
                 **schedule_options(settings))


def make_schedule(settings: Settings, init: Tensor, schedule: str) -> Schedule:
    """The schedule of a stacking backend on (S, 2) values ``init``: ``schedule`` with the settings' Algorithm 1
    options, as :func:`make_tuner`'s Tuner holds it (one hypergradient step per iteration)."""
    options = schedule_options(settings)
    return Schedule(init, schedule, every=1, reset=options.pop("proposed_reset"), **options)


__all__ = ["Settings", "make_optimizer", "make_tuner", "make_schedule", "schedule_options", "check_choice", "fail",
           "OPTIMIZERS"]
