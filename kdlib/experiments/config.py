"""The schema of one experiment run and its validation.

A run is fully described by an :class:`ExperimentConfig`. Names follow the paper: ``lambda1`` weights the
classification term of L_train (eq. of Sec. 2), ``temperature`` is T, ``t_val`` is T_val of L_val, ``e1``/``e2``
are the gradient and extrapolation iteration counts of Algorithm 1 (eq. 4).

:func:`validate` checks every field's type and range before any compute and raises :class:`ConfigError`, whose
message names the field, what was expected, what was found and the fix. How a config is built from the
paper's protocol and a profile is :mod:`kdlib.experiments.profiles`.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from kdlib.errors import ConfigError
from kdlib.metaparams import LAMBDA1_RANGE, RANDOM_LAWS, TEMPERATURE_RANGE
from kdlib.names import ALL_METHOD_NAMES, DATASETS, ESTIMATORS, OPTIMIZERS, PROFILES, TEACHER_KINDS


@dataclass
class ExperimentConfig:
    """Everything that determines one (dataset, method, seed) run."""

    dataset: str = "synthetic"
    method: str = "gradient"
    seed: int = 0
    profile: str = "quick"
    device: str = "cpu"

    # data
    variant: str = "paper"  # synthetic only: "paper" or "authors" (see kdlib.data.synthetic)
    holdout: bool = False  # synthetic: tune on a separate validation draw instead of the test set
    n_train: int | None = None  # subset of the student's training data (None = all)
    n_test: int | None = None
    split_seed: int | None = None  # None: ordered 9:1 split as the authors did; int: seeded permutation
    shuffle: bool = False  # the authors' loaders did not shuffle
    data_root: str | None = None
    download: bool = False

    # teacher
    teacher: str = "auto"  # "auto", an authors' kind, "small_cnn", "resnet18", "logreg" or "file:PATH.npy"
    teacher_epochs: int | None = None

    # student optimisation
    iterations: int | None = None  # synthetic: full-batch steps
    epochs: int | None = None  # images: epochs
    batch_size: int | None = None  # None = full batch
    lr: float = 1.0
    lr_step_epochs: int | None = 10  # StepLR period in epochs (None: constant)
    lr_gamma: float = 0.5
    t_val: float = 1.0
    log_every: int = 1  # synthetic: iterations between logged points; images: epochs
    eval_every: int = 1  # images: evaluate after epoch 0, every eval_every-th epoch and at the end (authors: 5)
    optimizer: str = "sgd"  # "sgd" | "adam" | "adamw" (the paper: plain SGD)
    momentum: float = 0.0  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)  # Adam/AdamW

    # metaparameters
    meta_lr: float = 0.1
    meta_clip: float = 0.01  # value clipping of the hypergradient, as the authors did
    estimator: str = "finite_difference"
    unroll_steps: int = 1
    e1: int = 10
    e2: int = 10
    proposed_reset: str = "global"  # "global" (our default) or "epoch" (authors' per-epoch reset)
    clamp_extrapolation: bool = True
    # random baseline: "uniform" (paper text: T ~ U(0.1, 10)), "loguniform" (log10 T ~ U(-1, 1)), each drawn from
    # default_rng(seed), or "authors" (the authors' image runs: run i fixed at their i-th draw, the start of their
    # tuned run i; kdlib.metaparams.random_baseline)
    random_law: str = "uniform"
    hyperopt_evals: int = 5
    init_lambda1: float | None = None  # None: draw lambda1 ~ U(0,1)
    init_temperature: float | None = None  # None: draw log10 T ~ U(-1,1)
    # "uniform": lambda1 ~ U(0,1), log10 T ~ U(-1,1) from default_rng(seed); "authors": the authors' sequence,
    # np.random.seed(42), run index = seed
    init_law: str = "uniform"
    fd_virtual_lr: str = "current"  # finite-difference virtual step at the "current" or the "initial" lr
    temperature_param: str = "linear"  # eq. 3's step on T ("linear", the paper) or on log T ("log")
    # "one": each run on its own; "stacked": the seeds of one image (dataset, method) as one vmapped model
    # (kdlib.train.stacked; equal to "one" within float32 rounding; for GPUs), where
    # kdlib.train.select_backend allows it, else one by one
    engine: str = "one"

    # loss form
    loss_form: str = "ce"  # "ce" (paper) or "kl" (authors' code)
    t2_scaling: bool = False  # Hinton's T^2 factor on the distillation term

    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(d["betas"])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def key(self) -> str:
        """The (dataset, method, seed) cell; the store adds the config hash (:mod:`kdlib.experiments.store`)."""
        return f"{self.dataset}__{self.method}__seed{self.seed}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        """The config of a stored record (unknown keys are an error: the record is of another schema)."""
        names = field_names()
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"config has unknown field(s) {sorted(unknown)}; valid fields: {sorted(names)}")
        cfg = cls(**d)
        if isinstance(cfg.betas, list):
            cfg.betas = tuple(cfg.betas)
        return cfg


def field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(ExperimentConfig)}


# ------------------------------------------------------------------------------------------------ validation
# fields that count things: integers >= the bound (None allowed where the default is None)
_COUNTS: dict[str, int] = dict(n_train=1, n_test=1, teacher_epochs=1, iterations=1, epochs=1, batch_size=1,
                               lr_step_epochs=1, log_every=1, eval_every=1, unroll_steps=1, e1=2, e2=0,
                               hyperopt_evals=1)
_NONNEG_INTS = ("seed", "split_seed")
_POSITIVE_FLOATS = ("lr", "lr_gamma", "t_val", "meta_lr", "meta_clip")
_BOOLS = ("holdout", "shuffle", "download", "nesterov", "clamp_extrapolation", "t2_scaling")
_CHOICES: dict[str, tuple[str, ...]] = dict(
    dataset=DATASETS, profile=PROFILES, estimator=ESTIMATORS, optimizer=OPTIMIZERS,
    variant=("paper", "authors"), random_law=RANDOM_LAWS, loss_form=("ce", "kl"),
    proposed_reset=("global", "epoch"), init_law=("uniform", "authors"), fd_virtual_lr=("current", "initial"),
    temperature_param=("linear", "log"), engine=("one", "stacked"))
_OPTIONAL = {"n_train", "n_test", "split_seed", "teacher_epochs", "iterations", "epochs", "batch_size",
             "lr_step_epochs", "init_lambda1", "init_temperature", "data_root"}


def _fail(name: str, expected: str, found: Any, fix: str | None = None) -> ConfigError:
    fix = fix or f"set {name} to {expected} (CLI: --set {name}=VALUE)"
    return ConfigError(f"config field {name!r}: expected {expected}, found {found!r} "
                       f"({type(found).__name__}); fix: {fix}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_choice(what: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")


def normalize(cfg: ExperimentConfig) -> ExperimentConfig:
    """Canonical types in place (ints given for float fields become floats, ``betas`` a tuple), so that two
    equal configs hash equally (``lr=1`` and ``lr=1.0`` are one config). Wrong types are left for
    :func:`validate` to report."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.type in ("float", "float | None") and _is_int(v):
            setattr(cfg, f.name, float(v))
    if isinstance(cfg.betas, list):
        cfg.betas = tuple(cfg.betas)
    if isinstance(cfg.betas, tuple):
        cfg.betas = tuple(float(b) if _is_int(b) else b for b in cfg.betas)
    return cfg


def validate(cfg: ExperimentConfig, known_methods: Iterable[str] = ALL_METHOD_NAMES) -> None:
    """Raise :class:`ConfigError` naming the field, the expected and found value and the fix, for any field of
    the wrong type or out of range. ``known_methods``: the method names the caller can run (kdlib's own,
    :data:`kdlib.names.ALL_METHOD_NAMES`, plus any registered by the user)."""
    normalize(cfg)
    for name, choices in _CHOICES.items():
        _check_choice(name if name != "variant" else "variant", getattr(cfg, name), choices)
    known = tuple(known_methods)
    if not isinstance(cfg.method, str) or cfg.method not in known:
        raise ConfigError(f"unknown method {cfg.method!r}; choose one of: {', '.join(known)}")
    teacher = cfg.teacher
    if not isinstance(teacher, str) or not (teacher in TEACHER_KINDS or
                                            (teacher.startswith("file:") and len(teacher) > 5)):
        raise _fail("teacher", f"one of {', '.join(TEACHER_KINDS)} or 'file:PATH.npy'", teacher)
    if not isinstance(cfg.device, str) or not cfg.device:
        raise _fail("device", "a torch device string such as 'cpu' or 'cuda'", cfg.device, "--device cpu")
    for name, low in _COUNTS.items():
        v = getattr(cfg, name)
        if v is None and name in _OPTIONAL:
            continue
        if not _is_int(v) or v < low:
            what = f"an integer >= {low}" + (" or None" if name in _OPTIONAL else "")
            raise _fail(name, what, v)
    for name in _NONNEG_INTS:
        v = getattr(cfg, name)
        if v is None and name in _OPTIONAL:
            continue
        if not _is_int(v) or v < 0:
            raise _fail(name, "an integer >= 0" + (" or None" if name in _OPTIONAL else ""), v)
    for name in _POSITIVE_FLOATS:
        v = getattr(cfg, name)
        if not _is_number(v) or not math.isfinite(v) or v <= 0:
            raise _fail(name, "a finite number > 0", v)
    for name in _BOOLS:
        if not isinstance(getattr(cfg, name), bool):
            raise _fail(name, "True or False", getattr(cfg, name))
    if not _is_number(cfg.momentum) or not 0 <= cfg.momentum < 1:
        raise _fail("momentum", "a number in [0, 1)", cfg.momentum)
    if not _is_number(cfg.weight_decay) or not math.isfinite(cfg.weight_decay) or cfg.weight_decay < 0:
        raise _fail("weight_decay", "a finite number >= 0", cfg.weight_decay)
    if (not isinstance(cfg.betas, tuple) or len(cfg.betas) != 2
            or not all(_is_number(b) and 0 <= b < 1 for b in cfg.betas)):
        raise _fail("betas", "two numbers in [0, 1), e.g. (0.9, 0.999)", cfg.betas)
    if cfg.optimizer != "sgd" and (cfg.momentum != 0 or cfg.nesterov):
        raise ConfigError(f"config fields 'momentum'/'nesterov' apply to optimizer 'sgd' only, found optimizer "
                          f"{cfg.optimizer!r} with momentum={cfg.momentum}, nesterov={cfg.nesterov}; fix: drop "
                          f"them or set optimizer=sgd")
    if cfg.nesterov and cfg.momentum <= 0:
        raise _fail("nesterov", "False when momentum is 0 (Nesterov needs momentum > 0)", cfg.nesterov,
                    "set momentum > 0 or nesterov=False")
    for name, (lo, hi) in (("init_lambda1", LAMBDA1_RANGE), ("init_temperature", TEMPERATURE_RANGE)):
        v = getattr(cfg, name)
        if v is not None and not _is_number(v):
            raise _fail(name, f"None or a number in [{lo}, {hi}] (the metaparameter box)", v)
        if v is not None and not lo <= v <= hi:
            raise ConfigError(f"config field {name!r}: {v} is outside the metaparameter box [{lo}, {hi}]; "
                              f"fix: set {name} inside [{lo}, {hi}] or None to draw it")
    if cfg.data_root is not None and not isinstance(cfg.data_root, str):
        raise _fail("data_root", "a folder path (string) or None", cfg.data_root, "--data-root DIR")
    if not isinstance(cfg.extra, dict):
        raise _fail("extra", "a dict", cfg.extra)
    if cfg.dataset == "synthetic":
        if cfg.iterations is None:
            raise _fail("iterations", "an integer >= 1 (synthetic runs count full-batch iterations)", None)
    elif cfg.epochs is None:
        raise _fail("epochs", f"an integer >= 1 ({cfg.dataset} runs count epochs)", None)
    if cfg.dataset != "synthetic" and cfg.n_train is not None and cfg.n_train < 10:
        raise _fail("n_train", "an integer >= 10 (the 9:1 train/validation split needs 10 examples)", cfg.n_train)
