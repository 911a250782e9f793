"""One student training run (Sec. 3-4): the student's optimizer on L_train, (lambda1, T) set by a Tuner.

The loop is the paper's, written with the public API: at every iteration :meth:`kdlib.tuner.Tuner.step` first
chooses (lambda1, T) for the current train batch (a hypergradient step through the student's optimizer, eq. 3;
an extrapolated value, eq. 4; or a fixed value), then the student takes one optimizer step on
:meth:`~kdlib.tuner.Tuner.loss` -- both in :meth:`~kdlib.tuner.Tuner.train_step`, which shares the train forward
between the estimator and the real step. Test accuracy and L_val are logged every ``log_every`` iterations (a run
counted in ``iterations``) or epochs (a run counted in ``epochs``) and at the end; a run counted in epochs is
evaluated (and logged) only after epoch 0, after every ``eval_every``-th epoch and at the end
(:func:`evaluates_after`; the authors' cadence is ``eval_every=5``: epochs 0, 4, 9, ..., 49), and so is
hyperopt's objective (the best validation accuracy over those checkpoints).

:class:`Settings` holds what a run needs, with user defaults (shuffled batches, no lr schedule, plain SGD);
:meth:`Settings.of` reads the same field names from any object (the experiments' config keeps the paper's
values). This module knows nothing of datasets or of how a schedule picks its values.

:func:`run_loop` is the one loop; a backend holds the runs it drives: :class:`OneRun` (one student, any Tuner;
:func:`train_student`) or :class:`kdlib.stacked.StackedFixed` (S fixed-metaparameter runs as one vmapped model;
:func:`train_students_stacked`).
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from kdlib.losses import validation_loss
from kdlib.stacked import StackedFixed, StackedTuned
from kdlib.tuner import Tuner

OPTIMIZERS = ("sgd", "adam", "adamw")


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


class single_thread:
    """Run tiny-tensor CPU work on one intra-op thread (restored on exit).

    The engine's tensors hold a few hundred numbers: a second OpenMP thread brings no speed, and on a busy
    machine its barriers spin while the other thread waits for a core (measured: the 10-seed, 200-iteration
    gradient batch took 8 s with 2 threads under load vs 0.2 s with 1). Process-global while active."""

    def __init__(self, device) -> None:
        self.active = torch.device(device).type == "cpu"
        self.saved = torch.get_num_threads()

    def __enter__(self) -> "single_thread":
        if self.active and self.saved != 1:
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc) -> None:
        if self.active and torch.get_num_threads() != self.saved:
            torch.set_num_threads(self.saved)


@dataclass
class Split:
    """Tensors of one data part on the run's device; ``teacher`` is aligned row by row with ``x``."""

    x: Tensor
    y: Tensor
    teacher: Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Problem:
    """What one run trains on: the student's train part (with teacher logits), D_val and the test set."""

    train: Split
    val: Split
    test: Split
    make_student: Callable[[], nn.Module]


def _val_cycle(val: Split, batch_size: int | None) -> Iterator[tuple[Tensor, Tensor]]:
    """Cycle through D_val in order (full batch when ``batch_size`` is None), as the authors did."""
    n = len(val)
    if batch_size is None or batch_size >= n:
        while True:
            yield val.x, val.y
    for start in itertools.cycle(range(0, n, batch_size)):
        yield val.x[start:start + batch_size], val.y[start:start + batch_size]


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, t_val: float, batch_size: int = 1024) -> tuple[float, float]:
    """Accuracy and mean L_val of ``model`` on ``split`` in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=split.y.device)
    loss_sum = torch.zeros((), device=split.y.device)
    for start in range(0, len(split), batch_size):
        xb, yb = split.x[start:start + batch_size], split.y[start:start + batch_size]
        out = model(xb)
        correct += (out.argmax(1) == yb).sum()
        loss_sum += validation_loss(out, yb, t_val) * yb.shape[0]
    model.train(was_training)
    n = max(len(split), 1)
    return float(correct) / n, float(loss_sum) / n


def evaluates_after(epoch: int, total_epochs: int, log_every: int = 1, eval_every: int = 1) -> bool:
    """Whether an epoch-counted run evaluates (and logs a row) after ``epoch`` (0-based): the last epoch always;
    otherwise epochs with ``(epoch + 1) % log_every == 0`` that are epoch 0 or have ``(epoch + 1) % eval_every == 0``
    (``eval_every=1``: every logged epoch)."""
    if epoch >= total_epochs - 1:
        return True
    if (epoch + 1) % log_every:
        return False
    return eval_every == 1 or epoch == 0 or (epoch + 1) % eval_every == 0


@dataclass
class RunOutput:
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = None
    best_val_accuracy: float = float("nan")
    tuner: Tuner | None = None


TunerFactory = Callable[[torch.optim.Optimizer, Settings], Tuner]  # (the student's optimizer, the run's settings)


class OneRun:
    """The reference backend of the loop: one student, its optimizer and its Tuner (any schedule)."""

    def __init__(self, st: Settings, problem: Problem, tuner: TunerFactory) -> None:
        torch.manual_seed(st.seed)
        self.model = problem.make_student().to(problem.train.x.device)
        self.model.train()
        self.optimizer = make_optimizer(self.model.parameters(), st)
        self.tuner = tuner(self.optimizer, st)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def new_epoch(self) -> None:
        self.tuner.new_epoch()

    def step(self, batches: list[tuple[Tensor, Tensor, Tensor]], next_val: Callable[[], Any]) -> None:
        self.tuner.train_step(self.model, batches[0], next_val)  # Tuner.step + the real step, one shared forward

    def rows(self) -> list[dict[str, Any]]:
        """The per-run fields of a history row (values trained at, phase, counts)."""
        lam = self.tuner.metaparams.detach().float().cpu()
        return [dict(lambda1=float(lam[0]), temperature=float(lam[1]), hypergrad_evals=int(self.tuner.hypergrad_evals),
                     nan_skipped=int(self.tuner.nan_skipped), phase=self.tuner.phase)]

    def evaluate(self, split: Split, t_val: float) -> list[tuple[float, float]]:
        return [evaluate(self.model, split, t_val)]

    def finish(self) -> list[RunOutput]:
        self.tuner.check()
        return [RunOutput(model=self.model, tuner=self.tuner)]


def train_student(settings: Any, problem: Problem, tuner: TunerFactory, progress: bool = False,
                  score_on_val: bool = False) -> RunOutput:
    """Train a fresh student (seeded by ``settings.seed``) with the Tuner ``tuner(optimizer, settings)``.

    ``settings``: a :class:`Settings` or any object with its field names (see :meth:`Settings.of`).
    ``score_on_val`` also tracks the best validation accuracy over logged points (hyperopt's objective).
    Batches are taken in order or reshuffled per epoch (``shuffle``, a generator seeded by the seed: the
    global RNG stream is the model's alone); D_val is cycled in order and drawn only when a hypergradient is.
    """
    st = Settings.of(settings)
    st.validate()
    return run_loop([st], problem, lambda: OneRun(st, problem, tuner), progress, score_on_val)[0]


def train_students_stacked(settings: Sequence[Any], problem: Problem, values: Tensor, progress: bool = False,
                           score_on_val: bool = False, schedule: str = "fixed") -> list[RunOutput]:
    """S fixed-metaparameter runs (no distillation, naive, random, hyperopt trials: ``values[s]`` = (lambda1, T)
    of run s, seeds from ``settings[s]``) trained as ONE stacked model per step (:class:`kdlib.stacked.StackedFixed`,
    ``torch.func`` vmap) through the same loop as :func:`train_student`. The runs may differ only in seed, values
    and label. Equal to S calls of :func:`train_student` with fixed Tuners up to float32 rounding
    (``tests/test_stacked.py`` states the tolerance and why). ``schedule="gradient"`` or ``"proposed"``: the
    values are the runs' initial ones and move by the schedule (:class:`kdlib.stacked.StackedTuned`: the
    unrolled hypergradient vmapped over the runs; plain SGD)."""
    sts = [Settings.of(x) for x in settings]
    for st in sts:
        st.validate()
    values = torch.as_tensor(values, dtype=torch.float32)
    if values.shape != (len(sts), 2):
        raise ValueError(f"values must have shape (runs, 2) = ({len(sts)}, 2) (lambda1, T) per run, got "
                         f"{tuple(values.shape)}")
    device = problem.train.x.device
    if schedule == "fixed":
        return run_loop(sts, problem, lambda: StackedFixed(sts, problem.make_student, values, device, make_optimizer),
                        progress, score_on_val)
    return run_loop(sts, problem, lambda: StackedTuned(sts, problem.make_student, values, device, make_optimizer,
                                                       schedule), progress, score_on_val)


_PER_RUN_FIELDS = ("seed", "label")


def run_loop(sts: list[Settings], problem: Problem, backend_factory: Callable[[], Any], progress: bool = False,
             score_on_val: bool = False) -> list[RunOutput]:
    """The one training loop (epochs or iterations, StepLR, per-run shuffles, the evaluation cadence, the history
    rows) over a backend holding ``len(sts)`` runs: :class:`OneRun` or :class:`kdlib.stacked.StackedFixed`."""
    st = sts[0]
    ref = {k: v for k, v in dataclasses.asdict(st).items() if k not in _PER_RUN_FIELDS}
    for other in sts[1:]:
        diff = [k for k, v in dataclasses.asdict(other).items() if k not in _PER_RUN_FIELDS and ref[k] != v]
        if diff:
            raise ValueError(f"stacked runs may differ only in seed, label and metaparameters; they differ in {diff}")
    backend = backend_factory()
    by_iteration = st.iterations is not None
    n_train = len(problem.train)
    bs = st.batch_size if st.batch_size is not None else n_train
    batches_per_epoch = max(1, -(-n_train // bs))
    total = int(st.iterations) if by_iteration else int(st.epochs) * batches_per_epoch
    val_iter = _val_cycle(problem.val, st.batch_size)
    gens = [torch.Generator().manual_seed(s.seed) for s in sts]
    outs = [RunOutput() for _ in sts]
    t0 = time.perf_counter()
    lr = st.lr
    bar = None
    if progress:
        from tqdm.auto import tqdm  # optional dependency, only for the progress bar

        bar = tqdm(total=total, desc=st.label, leave=False)

    def log(step: int, epoch: int) -> None:
        tests = backend.evaluate(problem.test, st.t_val)
        vals = backend.evaluate(problem.val, st.t_val)
        for out, row, (acc, _), (val_acc, val_loss) in zip(outs, backend.rows(), tests, vals):
            if score_on_val:
                out.best_val_accuracy = max(val_acc, out.best_val_accuracy) \
                    if out.best_val_accuracy == out.best_val_accuracy else val_acc
            out.history.append(dict(
                step=step, epoch=epoch, test_accuracy=acc, val_accuracy=val_acc, val_loss=val_loss,
                lambda1=row["lambda1"], temperature=row["temperature"], hypergrad_evals=row["hypergrad_evals"],
                nan_skipped=row["nan_skipped"], wall_time=time.perf_counter() - t0, phase=row["phase"], lr=lr))

    def next_val() -> tuple[Tensor, Tensor]:
        return next(val_iter)

    train = problem.train
    step = 0
    epoch = 0
    while step < total:
        if st.lr_step_epochs:
            lr = st.lr * st.lr_gamma ** (epoch // st.lr_step_epochs)
            backend.set_lr(lr)
        orders = [torch.randperm(n_train, generator=g).to(train.x.device) for g in gens] if st.shuffle else None
        backend.new_epoch()
        for b in range(batches_per_epoch):
            if step >= total:
                break
            sl = slice(b * bs, min((b + 1) * bs, n_train))
            if orders is None:
                batches = [(train.x[sl], train.y[sl], train.teacher[sl])] * len(sts)
            else:
                batches = [(train.x[o[sl]], train.y[o[sl]], train.teacher[o[sl]]) for o in orders]
            backend.step(batches, next_val)
            if by_iteration and (step % st.log_every == 0 or step == total - 1):
                log(step, epoch)
            step += 1
            if bar is not None:
                bar.update(1)
        if not by_iteration and (step >= total or evaluates_after(epoch, int(st.epochs), st.log_every,
                                                                   st.eval_every)):
            log(step - 1, epoch)
        epoch += 1
    if bar is not None:
        bar.close()
    for out, done in zip(outs, backend.finish()):
        out.model, out.tuner = done.model, done.tuner
    return outs
