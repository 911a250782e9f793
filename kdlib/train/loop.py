"""The one training loop (Sec. 3-4): epochs or iterations, StepLR, per-run shuffles, the evaluation cadence and the
history rows, over a *backend* that holds the runs it drives.

At every iteration the backend first chooses (lambda1, T) for the current train batch (a hypergradient step
through the student's optimizer, eq. 3; an extrapolated value, eq. 4; or a fixed value), then takes one optimizer
step on L_train. Test accuracy and L_val are logged every ``log_every`` iterations (a run counted in
``iterations``) or epochs (a run counted in ``epochs``) and at the end; a run counted in epochs is evaluated (and
logged) only after epoch 0, after every ``eval_every``-th epoch and at the end (:func:`evaluates_after`; the
authors' cadence is ``eval_every=5``: epochs 0, 4, 9, ..., 49), and so is hyperopt's objective (the best
validation accuracy over those checkpoints).

A backend (:class:`Backend`) holds S >= 1 runs that share everything but the seed and (lambda1, T):
:class:`kdlib.train.one_by_one.OneRun` (one student, any Tuner), :class:`kdlib.train.stacked.StackedFixed` /
:class:`~kdlib.train.stacked.StackedTuned` (S students as one vmapped model; :mod:`kdlib.train.stacked_graph`: the
same with its step in CUDA graphs) and
:class:`kdlib.train.linear.Linear` (S logistic regressions in closed form). The loop owns the data order, the
lr, the cadence and the rows; a backend owns the students, their metaparameters and their arithmetic.
This module knows nothing of datasets, methods or how a schedule picks its values.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
from torch import Tensor, nn

from kdlib.errors import ConfigError
from kdlib.train.checkpoint import Checkpoint
from kdlib.train.problem import Problem, Split
from kdlib.train.settings import Settings
from kdlib.tuner import Tuner

Batch = tuple[Tensor, Tensor, Tensor]  # (x, y, teacher logits) of one run's train batch


class single_thread:
    """Run tiny-tensor CPU work on one intra-op thread (restored on exit).

    The closed-form backend's tensors hold a few hundred numbers: a second OpenMP thread brings no speed, and on
    a busy machine its barriers spin while the other thread waits for a core. Process-global while active."""

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


def _val_cycle(val: Split, batch_size: int | None, drawn: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """Cycle through D_val in order (full batch when ``batch_size`` is None), as the authors did, from where a
    run that has already drawn ``drawn`` batches is (a resumed run)."""
    n = len(val)
    if batch_size is None or batch_size >= n:
        while True:
            yield val.x, val.y
    starts = list(range(0, n, batch_size))
    for start in itertools.islice(itertools.cycle(starts), drawn % len(starts), None):
        yield val.x[start:start + batch_size], val.y[start:start + batch_size]


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


class Backend(Protocol):
    """What :func:`run_loop` calls on the S runs it drives (run s trains on ``batches[s]``)."""

    def set_lr(self, lr: float) -> None:
        """The student's lr from now on (StepLR)."""

    def new_epoch(self) -> None:
        """A new pass over D_train starts (Algorithm 1's epoch reset)."""

    def step(self, batches: list[Batch], next_val: Callable[[], tuple[Tensor, Tensor]]) -> None:
        """One iteration of every run: its metaparameter step (drawing D_val batches by ``next_val`` only when a
        hypergradient is taken) and its optimizer step on L_train."""

    def rows(self) -> list[dict[str, Any]]:
        """Per run: lambda1, temperature, hypergrad_evals, nan_skipped, phase of the values trained at."""

    def evaluate(self, split: Split, t_val: float) -> list[tuple[float, float]]:
        """Per run: accuracy and mean L_val on ``split`` (eval mode); with ``split.per_run``, run s on
        ``split.x[s]`` (its own augmented D_val)."""

    def finish(self) -> list[RunOutput]:
        """Per run: the trained model (or None) and its Tuner (or None); raises if every hypergradient of a run
        was non-finite."""

    # a backend that can be checkpointed (:mod:`kdlib.train.checkpoint`) also has
    # state_dict() -> dict and load_state_dict(state): its students, optimizers and Tuners, restored bit for bit


_PER_RUN_FIELDS = ("seed",)
AUGMENT_SEED_OFFSET = 2 ** 31  # a run's augmentation stream: seed + this (its shuffle stream is the seed itself)
# with augment_val: the stream of the hypergradient's D_val batches, and that of the logged validation (D_val drawn
# afresh at every evaluation), apart from the training stream, so that neither moves the other
AUGMENT_VAL_SEED_OFFSET = 3 * 2 ** 30
AUGMENT_VAL_LOG_SEED_OFFSET = 2 ** 32


def run_loop(sts: Sequence[Settings], problem: Problem, backend_factory: Callable[[], Backend], progress: bool = False,
             score_on_val: bool = False, checkpoint: Checkpoint | None = None) -> list[RunOutput]:
    """The one training loop over a backend holding ``len(sts)`` runs (settings that differ only in the seed);
    one :class:`RunOutput` per run.

    ``checkpoint`` (epoch-counted runs): the loop's state is saved there after every epoch, and a run that finds
    a usable one there goes on from it, bit for bit as if it had not stopped (:mod:`kdlib.train.checkpoint`)."""
    st = sts[0]
    ref = {k: v for k, v in dataclasses.asdict(st).items() if k not in _PER_RUN_FIELDS}
    for other in sts[1:]:
        diff = [k for k, v in dataclasses.asdict(other).items() if k not in _PER_RUN_FIELDS and ref[k] != v]
        if diff:
            raise ValueError(f"stacked runs may differ only in seed and metaparameters; they differ in {diff}")
    if st.augment != "none" and problem.augment is None:
        raise ConfigError(f"config field 'augment': {st.augment!r} needs image data, and this problem has no "
                          f"augmentation; fix: set augment=none")
    backend = backend_factory()
    by_iteration = st.iterations is not None
    if checkpoint is not None and by_iteration:
        checkpoint = None  # an iteration-counted run is small: nothing to resume
    if checkpoint is not None and not hasattr(backend, "state_dict"):
        raise TypeError(f"run_loop: the {type(backend).__name__} backend cannot be checkpointed (it has no "
                        f"state_dict); train it without a checkpoint")
    n_train = len(problem.train)
    bs = st.batch_size if st.batch_size is not None else n_train
    batches_per_epoch = max(1, -(-n_train // bs))
    total = int(st.iterations) if by_iteration else int(st.epochs) * batches_per_epoch
    val_iter = _val_cycle(problem.val, st.batch_size)
    val_drawn = 0
    gens = [torch.Generator().manual_seed(s.seed) for s in sts]
    augment_gens = ([torch.Generator().manual_seed(s.seed + AUGMENT_SEED_OFFSET) for s in sts]
                    if st.augment != "none" else None)
    val_gens = ([(torch.Generator().manual_seed(s.seed + AUGMENT_VAL_SEED_OFFSET),
                  torch.Generator().manual_seed(s.seed + AUGMENT_VAL_LOG_SEED_OFFSET)) for s in sts]
                if st.augment_val else None)
    outs = [RunOutput() for _ in sts]
    t0 = time.perf_counter()
    lr = st.lr
    bar = None
    if progress:
        from tqdm.auto import tqdm  # optional dependency, only for the progress bar

        key = getattr(st, "key", None)
        bar = tqdm(total=total, desc=key() if callable(key) else "run", leave=False)

    def log(step: int, epoch: int) -> None:
        tests = backend.evaluate(problem.test, st.t_val)
        vals = backend.evaluate(problem.val if val_gens is None else augmented_val(), st.t_val)
        for out, row, (acc, test_loss), (val_acc, val_loss) in zip(outs, backend.rows(), tests, vals):
            if score_on_val:
                out.best_val_accuracy = max(val_acc, out.best_val_accuracy) \
                    if out.best_val_accuracy == out.best_val_accuracy else val_acc
            out.history.append(dict(
                step=step, epoch=epoch, test_accuracy=acc, test_loss=test_loss, val_accuracy=val_acc, val_loss=val_loss,
                lambda1=row["lambda1"], temperature=row["temperature"], hypergrad_evals=row["hypergrad_evals"],
                nan_skipped=row["nan_skipped"], wall_time=time.perf_counter() - t0, phase=row["phase"], lr=lr))

    def next_val() -> tuple[Tensor, Tensor]:
        nonlocal val_drawn
        val_drawn += 1
        x, y = next(val_iter)
        if val_gens is None:
            return x, y
        xs = [problem.augment(x, g) for g, _ in val_gens]  # each run's own draw; stacked: a leading run axis
        return (xs[0] if len(xs) == 1 else torch.stack(xs)), y

    def augmented_val() -> Split:
        assert val_gens is not None
        xs = [problem.augment(problem.val.x, g) for _, g in val_gens]
        return Split(xs[0], problem.val.y) if len(xs) == 1 else Split(torch.stack(xs), problem.val.y, per_run=True)

    train = problem.train
    step = 0
    epoch = 0
    saved = None if checkpoint is None else checkpoint.load(st)
    if saved is not None:
        backend.load_state_dict(saved["backend"])  # type: ignore[attr-defined]
        torch.set_rng_state(saved["rng"])
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        for g, state in zip(gens, saved["gens"]):
            g.set_state(state)
        for g, state in zip(augment_gens or [], saved["augment_gens"] or []):
            g.set_state(state)
        val_states = saved.get("val_gens") or []
        if val_states and isinstance(val_states[0], torch.Tensor):  # e9dab33 saved its one run's pair flat
            val_states = [val_states]
        for gs, states in zip(val_gens or [], val_states):
            for g, state in zip(gs, states):
                g.set_state(state)
        val_drawn = int(saved["val_drawn"])
        val_iter = _val_cycle(problem.val, st.batch_size, val_drawn)
        for out, (history, best) in zip(outs, saved["outs"]):
            out.history, out.best_val_accuracy = history, best
        step, epoch, lr = int(saved["step"]), int(saved["epoch"]), float(saved["lr"])
        t0 -= float(saved["elapsed"])
        if bar is not None:
            bar.update(step)

    def save() -> None:
        assert checkpoint is not None
        checkpoint.save(st, backend=backend.state_dict(), rng=torch.get_rng_state(),  # type: ignore[attr-defined]
                        cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
                        gens=[g.get_state() for g in gens],
                        augment_gens=None if augment_gens is None else [g.get_state() for g in augment_gens],
                        val_gens=None if val_gens is None else [[g.get_state() for g in gs] for gs in val_gens],
                        val_drawn=val_drawn, outs=[(out.history, out.best_val_accuracy) for out in outs],
                        step=step, epoch=epoch + 1, lr=lr, elapsed=time.perf_counter() - t0)

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
            if augment_gens is not None:
                batches = [(problem.augment(x, g), y, t) for (x, y, t), g in zip(batches, augment_gens)]
            backend.step(batches, next_val)
            if by_iteration and (step % st.log_every == 0 or step == total - 1):
                log(step, epoch)
            step += 1
            if bar is not None:
                bar.update(1)
        if not by_iteration and (step >= total or evaluates_after(epoch, int(st.epochs), st.log_every,
                                                                   st.eval_every)):
            log(step - 1, epoch)
        if checkpoint is not None:
            save()
        epoch += 1
    if bar is not None:
        bar.close()
    for out, done in zip(outs, backend.finish()):
        out.model, out.tuner = done.model, done.tuner
    return outs


__all__ = ["Backend", "Batch", "RunOutput", "run_loop", "evaluates_after", "single_thread"]
