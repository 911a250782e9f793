"""The six metaparameter strategies of the paper (Sec. 4), as a registry of named methods.

Each method is a :class:`kdlib.tuner.Tuner` schedule from an initial value (hyperopt: fixed Tuners inside
TPE's outer loop) and turns settings (a :class:`kdlib.train.Settings` or any object with its field names) and
a :class:`kdlib.train.Problem` into a logged run and the trained model. Methods know nothing of datasets.

- ``no_distillation``: lambda1 = 1 (plain cross-entropy);
- ``naive``: (lambda1, T) = (0.5, 1);
- ``random``: lambda1 ~ U(0,1), T ~ U(0.1,10) (``random_law="uniform"``, the paper's text) or
  log10 T ~ U(-1,1) (``"loguniform"``), drawn from the run's seed, or the authors' draw of the run
  (``"authors"``: the start of their tuned run of the same index), fixed for the run;
- ``gradient``: the Tuner's ``"gradient"`` schedule (eq. 3 every iteration, clipping, NaN skip, projection);
- ``hyperopt``: TPE with ``hyperopt_evals`` fixed-metaparameter runs scored by best validation accuracy,
  then one run with the best values;
- ``proposed``: Algorithm 1: ``e1`` gradient iterations whose values are recorded, a least-squares line
  (eq. 4), ``e2`` iterations following it, repeated. Counted in global iterations by default
  (``proposed_reset="global"``); ``"epoch"`` restarts the cycle at every epoch as the authors' code did.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe
from torch import Tensor, nn

from kdlib.metaparams import initial_metaparams, project, random_baseline
from kdlib.train import Problem, Settings, TunerFactory, make_tuner, train_student
from kdlib.tuner import NonFiniteHypergradient

__all__ = ["Method", "MethodResult", "METHODS", "get_method", "register", "fixed_tuner", "hyperopt_space",
           "hyperopt_point", "NonFiniteHypergradient", "NoDistillation", "Naive", "Random", "Gradient",
           "Hyperopt", "Proposed"]


def fixed_tuner(metaparams: Tensor) -> TunerFactory:
    """A factory of ``"fixed"`` Tuners at ``metaparams`` (projected into the box) for :func:`train_student`."""
    value = project(torch.as_tensor(metaparams, dtype=torch.float32).detach().clone())
    return lambda optimizer, settings: make_tuner(settings, optimizer, value, "fixed")


# the name the experiments' fixed grid (kdlib.experiments.runner.fixed_grid) uses: FixedController(lam) is a tuner factory
FixedController = fixed_tuner


# ------------------------------------------------------------------------------------------------- methods
@dataclass
class MethodResult:
    history: list[dict]
    full_trainings: int
    extra: dict
    model: nn.Module | None = None


class Method:
    """A named strategy: a Tuner ``schedule`` from an initial value. ``uses_val_split``: trains on D_train and
    tunes on D_val (else trains on all D)."""

    name: ClassVar[str] = ""
    uses_val_split: ClassVar[bool] = False
    schedule: ClassVar[str] = "fixed"

    def initial(self, settings: Any) -> Tensor:
        """The run's initial (lambda1, T), projected into the box, float32."""
        raise NotImplementedError

    def tuner(self, settings: Any) -> TunerFactory:
        """The factory of this method's Tuner for :func:`kdlib.train.train_student`."""
        init = self.initial(settings)
        return lambda optimizer, st: make_tuner(st, optimizer, init, self.schedule)

    def run(self, settings: Any, problem: Problem, progress: bool = False) -> MethodResult:
        """Train one student under this method; the result holds the history and the trained model."""
        out = train_student(settings, problem, self.tuner(settings), progress=progress)
        return MethodResult(out.history, 1, {}, out.model)


class NoDistillation(Method):
    name = "no_distillation"

    def initial(self, settings):
        return torch.tensor([1.0, 1.0])


class Naive(Method):
    name = "naive"

    def initial(self, settings):
        return torch.tensor([0.5, 1.0])


class Random(Method):
    name = "random"

    def initial(self, settings):
        st = Settings.of(settings)
        return project(random_baseline(st.random_law, st.seed))


def _tuned_initial(settings: Any) -> Tensor:
    """The tuning methods' start: the initial law (``init_law``) of run ``seed``, then the explicit
    ``init_lambda1`` / ``init_temperature`` overrides."""
    st = Settings.of(settings)
    init = initial_metaparams(st.init_law, st.seed)
    if st.init_lambda1 is not None:
        init[0] = st.init_lambda1
    if st.init_temperature is not None:
        init[1] = st.init_temperature
    return project(init.float())


class Gradient(Method):
    """Eq. (3) every iteration: the ``"gradient"`` schedule."""

    name = "gradient"
    uses_val_split = True
    schedule = "gradient"

    def initial(self, settings):
        return _tuned_initial(settings)


class Proposed(Method):
    """Algorithm 1: the ``"proposed"`` schedule."""

    name = "proposed"
    uses_val_split = True
    schedule = "proposed"

    def initial(self, settings):
        return _tuned_initial(settings)


def hyperopt_space() -> dict:
    """TPE's search space: lambda1 ~ U(0, 1), log10 T ~ U(-1, 1)."""
    return {"lambda1": hp.uniform("lambda1", 0.0, 1.0),
            "log10_temperature": hp.uniform("log10_temperature", -1.0, 1.0)}


def hyperopt_point(point: dict) -> Tensor:
    """(lambda1, T) of a point of :func:`hyperopt_space`."""
    return torch.tensor([point["lambda1"], 10.0 ** point["log10_temperature"]], dtype=torch.float32)


def hyperopt_search(evals: int, seed: int, score: Callable[[Tensor], float]) -> tuple[Tensor, list[dict]]:
    """Hyperopt's outer loop: TPE over :func:`hyperopt_space` with ``evals`` calls of ``score(lam)`` (best
    validation accuracy of a fixed-metaparameter run); returns the best (lambda1, T) and the trials."""
    trials_log: list[dict] = []

    def objective(point: dict) -> dict:
        lam = hyperopt_point(point)
        value = score(lam)
        trials_log.append(dict(lambda1=float(lam[0]), temperature=float(lam[1]), best_val_accuracy=value))
        return {"loss": -value if math.isfinite(value) else 0.0, "status": STATUS_OK}

    best = fmin(objective, hyperopt_space(), algo=tpe.suggest, max_evals=evals, trials=Trials(),
                rstate=np.random.default_rng(seed), show_progressbar=False)
    return hyperopt_point(best), trials_log


class Hyperopt(Method):
    """TPE (hyperopt) over lambda1 ~ U(0, 1), log10 T ~ U(-1, 1): ``hyperopt_evals`` full runs, then the run at the
    best point.

    The authors' final run (one more training at the best point, same seed) repeats the best trial exactly, so the
    trial's own run (history and model) is returned instead of training it again: ``hyperopt_evals`` trainings,
    not ``hyperopt_evals + 1``. Should no trial match the best point bit for bit, the run is trained once more."""

    name = "hyperopt"
    uses_val_split = True

    def run(self, settings: Any, problem: Problem, progress: bool = False) -> MethodResult:
        st = Settings.of(settings)
        runs: list[tuple[Tensor, Any]] = []

        def score(lam: Tensor) -> float:
            out = train_student(st, problem, fixed_tuner(lam), progress=progress, score_on_val=True)
            runs.append((lam, out))
            return out.best_val_accuracy

        lam, trials = hyperopt_search(st.hyperopt_evals, st.seed, score)
        out = next((o for trial_lam, o in runs if torch.equal(trial_lam, lam)), None)
        trainings = st.hyperopt_evals
        if out is None:
            out = train_student(st, problem, fixed_tuner(lam), progress=progress)
            trainings += 1
        return MethodResult(out.history, trainings, {"trials": trials}, out.model)


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
