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

Beyond the paper (:data:`kdlib.names.BEYOND_METHOD_NAMES`), 2023-24 adaptive-temperature distillation at the same
protocol and budget, each after its reference code:

- ``ctkd``: Curriculum Temperature KD (Li et al., AAAI 2023), a learned global temperature trained adversarially
  through a gradient-reversal layer (:mod:`kdlib.ctkd`, :class:`kdlib.weighted_kd.WeightedKD`);
- ``logit_std``: logit standardisation (Sun et al., CVPR 2024), KD on z-scored logits at a base temperature;
- ``gradient_std``: the paper's gradient-based tuning of (lambda1, T) with D_T on z-scored logits.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe
from torch import Tensor, nn

from kdlib.ctkd import THETA_INIT, GlobalTemperature, temperature_of
from kdlib.metaparams import initial_metaparams, project, random_baseline
from kdlib.train import (Problem, Settings, TunerFactory, make_tuner, search_together, train_student,
                         train_students_stacked)
from kdlib.train.checkpoint import Checkpoints
from kdlib.tuner import NonFiniteHypergradient
from kdlib.weighted_kd import WeightedKD

__all__ = ["Method", "MethodResult", "METHODS", "get_method", "register", "fixed_tuner", "hyperopt_space",
           "hyperopt_point", "NonFiniteHypergradient", "NoDistillation", "Naive", "Random", "Gradient",
           "Hyperopt", "Proposed", "CTKD", "LogitStd", "GradientStd"]


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

    def run(self, settings: Any, problem: Problem, progress: bool = False,
            checkpoints: Checkpoints | None = None) -> MethodResult:
        """Train one student under this method; the result holds the history and the trained model.
        ``checkpoints``: where its training saves and resumes (:mod:`kdlib.train.checkpoint`)."""
        out = train_student(settings, problem, self.tuner(settings), progress=progress,
                            checkpoint=None if checkpoints is None else checkpoints.next())
        return MethodResult(out.history, 1, {}, out.model)

    def run_together(self, settings: Sequence[Any], problem: Problem, backend: str) -> list[MethodResult]:
        """:meth:`run` for runs that differ only in the seed, trained together by the stacking ``backend``
        (:func:`kdlib.train.train_students_stacked`): the runs of :attr:`schedule` from their :meth:`initial`
        values."""
        values = torch.stack([self.initial(s).detach().float().cpu() for s in settings])
        outs = train_students_stacked(settings, problem, values, schedule=self.schedule, backend=backend)
        return [MethodResult(o.history, 1, {}, o.model) for o in outs]

    @classmethod
    def together(cls) -> str | None:
        """How this method's runs train together on a stacking backend (:func:`kdlib.train.select_backend`):
        ``"schedule"`` (plain runs of :attr:`schedule` from :meth:`initial`: the base :meth:`run_together`),
        ``"trials"`` (a :meth:`run_together` of its own, e.g. hyperopt's trials), or None when the method
        overrides :meth:`run` or :meth:`tuner` below the class that wrote its :meth:`run_together` (that code
        would not train what :meth:`run` trains)."""
        def owner(name: str) -> type:
            return next(k for k in cls.__mro__ if name in vars(k))

        writer = owner("run_together")
        if not all(issubclass(writer, owner(name)) for name in ("run", "tuner")):
            return None
        return "schedule" if writer is Method else "trials"


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

    def run(self, settings: Any, problem: Problem, progress: bool = False,
            checkpoints: Checkpoints | None = None) -> MethodResult:
        st = Settings.of(settings)
        runs: list[tuple[Tensor, Any]] = []

        def next_checkpoint():  # the k-th training of the run (TPE's proposals are fixed by the seed and the scores)
            return None if checkpoints is None else checkpoints.next()

        def score(lam: Tensor) -> float:
            out = train_student(st, problem, fixed_tuner(lam), progress=progress, score_on_val=True,
                                checkpoint=next_checkpoint())
            runs.append((lam, out))
            return out.best_val_accuracy

        lam, trials = hyperopt_search(st.hyperopt_evals, st.seed, score)
        out = next((o for trial_lam, o in runs if torch.equal(trial_lam, lam)), None)
        trainings = st.hyperopt_evals
        if out is None:
            out = train_student(st, problem, fixed_tuner(lam), progress=progress, checkpoint=next_checkpoint())
            trainings += 1
        return MethodResult(out.history, trainings, {"trials": trials}, out.model)

    def run_together(self, settings: Sequence[Any], problem: Problem, backend: str) -> list[MethodResult]:
        """:meth:`run` for runs that differ only in the seed: one TPE search per seed, the k-th trials of all seeds
        trained as one group by the stacking ``backend`` (:func:`kdlib.train.search_together`); each seed's final
        run is its best trial's own run, as in :meth:`run` (a seed whose best point matches no trial bit for bit
        is trained once more, with the others in the same case)."""
        sts = [Settings.of(s) for s in settings]
        runs: list[list[tuple[Tensor, Any]]] = [[] for _ in sts]

        def train(idx: list[int], lams: list[Tensor]) -> list[float]:
            outs = train_students_stacked([sts[i] for i in idx], problem, project(torch.stack(lams)),
                                          score_on_val=True, backend=backend)
            for i, lam, out in zip(idx, lams, outs):
                runs[i].append((lam, out))
            return [out.best_val_accuracy for out in outs]

        searches = [lambda score, st=st: hyperopt_search(st.hyperopt_evals, st.seed, score) for st in sts]
        found = search_together(searches, train)
        picked = [next((o for trial_lam, o in runs[i] if torch.equal(trial_lam, found[i][0])), None)
                  for i in range(len(sts))]
        again = [i for i, o in enumerate(picked) if o is None]
        if again:
            outs = train_students_stacked([sts[i] for i in again], problem,
                                          project(torch.stack([found[i][0] for i in again])), backend=backend)
            for i, out in zip(again, outs):
                picked[i] = out
        return [MethodResult(out.history, st.hyperopt_evals + int(i in again), {"trials": found[i][1]}, out.model)
                for i, (st, out) in enumerate(zip(sts, picked))]


# ------------------------------------------------------------------------------------------ beyond the paper
class CTKD(Method):
    """Curriculum Temperature KD (Li et al., "Curriculum Temperature for Knowledge Distillation", AAAI 2023), the
    global variant, after the reference code ``zhengli97/CTKD`` (``models/temp_global.py``, ``train_student.py``,
    ``helper/loops.py``, ``distiller_zoo/KD.py``, ``scripts/run_cifar_distill.sh``).

    Loss ``0.1 * CE + 0.9 * τ² * KL(softmax(f/τ) || softmax(g/τ))`` (``-r 0.1 -a 0.9 -b 0``; ``DistillKL`` is
    ``KLDivLoss(batchmean) * T * T``) with ``τ = 1 + 20 * sigmoid(θ)``, θ one parameter starting at 1.0, trained by
    the student's own optimizer through a gradient-reversal layer whose weight is CTKD's cosine from 0 to -1 over
    the first 10 epochs, then -1 (:mod:`kdlib.ctkd`, which says where the code and the paper differ: the code
    evaluates the curriculum at 1-based epochs). Trains on all of D (no validation split, no hypergradient).
    The records' λ1 is 0.1 (the CE weight) and T the τ of the latest step, which leaves the paper's box (τ up to
    21). ``loss_form``, ``t2_scaling`` and the metaparameter fields of the config are not used."""

    name = "ctkd"
    ce_weight: ClassVar[float] = 0.1  # -r / --gamma
    kd_weight: ClassVar[float] = 0.9  # -a / --alpha

    def initial(self, settings):
        """(0.1, τ(θ0) = 1 + 20 sigmoid(1)): not projected (τ is outside the paper's box by design)."""
        return torch.tensor([self.ce_weight, float(temperature_of(torch.tensor(THETA_INIT)))])

    def tuner(self, settings: Any) -> TunerFactory:
        return lambda optimizer, st: WeightedKD(optimizer, self.ce_weight, self.kd_weight, GlobalTemperature())


class LogitStd(Method):
    """Logit standardisation (Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024), after the
    reference code ``sunshangquan/logit-standardization-KD`` (``mdistiller/distillers/KD.py``: ``normalize`` and
    ``kd_loss``; ``tools/train.py``: ``--logit-stand --base-temp 2 --kd-weight 9``; ``mdistiller/engine/cfg.py``:
    ``CE_WEIGHT = 0.1``).

    Loss ``0.1 * CE(g, y) + 9 * τ² * KL(softmax(z(f)/τ) || softmax(z(g)/τ))`` at the base temperature τ = 2, with
    ``z`` the per-sample z-score of :func:`kdlib.losses.standardize_logits`; CE on the raw logits. We follow the
    code where it is more specific than the paper's formulas: the standard deviation is ``torch.std``'s unbiased
    one (divisor K - 1) with 1e-7 added to it (not under the square root), the KL term keeps plain KD's ``τ²``
    factor, and the weights and the base temperature are the training script's flags. The weights 0.1 and 9 do not sum to 1: the loss is 9.1 times the paper's form
    at λ1 = 0.1 / 9.1, the λ1 the records show. Trains on all of D (no validation split, no hypergradient);
    ``loss_form``, ``t2_scaling`` and the metaparameter fields of the config are not used."""

    name = "logit_std"
    ce_weight: ClassVar[float] = 0.1  # CFG.KD.LOSS.CE_WEIGHT
    kd_weight: ClassVar[float] = 9.0  # --kd-weight 9
    base_temperature: ClassVar[float] = 2.0  # --base-temp 2

    def initial(self, settings):
        """(0.1 / 9.1, 2): the records' λ1 in the paper's convention and the base temperature."""
        return torch.tensor([self.ce_weight / (self.ce_weight + self.kd_weight), self.base_temperature])

    def tuner(self, settings: Any) -> TunerFactory:
        return lambda optimizer, st: WeightedKD(optimizer, self.ce_weight, self.kd_weight, self.base_temperature,
                                                standardize=True)


class GradientStd(Gradient):
    """The paper's gradient-based tuning (eq. 3 every iteration, the ``"gradient"`` schedule, the same estimator,
    clip, box and start as ``gradient``) with the distillation term on standardised logits: ``loss_form`` "ce" or
    "kl" of the config becomes "ce_std" / "kl_std" (:func:`kdlib.losses.distillation_loss`: both logits z-scored as
    in Sun et al., CVPR 2024, ``sunshangquan/logit-standardization-KD``; CE on the raw logits), in the student's
    loss and in the hypergradient's inner step alike. A combination neither paper ran."""

    name = "gradient_std"

    def tuner(self, settings: Any) -> TunerFactory:
        init = self.initial(settings)
        return lambda optimizer, st: make_tuner(dataclasses.replace(st, loss_form=f"{st.loss_form}_std"),
                                                optimizer, init, self.schedule)


METHODS: dict[str, type[Method]] = {m.name: m for m in
                                    (NoDistillation, Naive, Random, Gradient, Hyperopt, Proposed,
                                     CTKD, LogitStd, GradientStd)}


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
