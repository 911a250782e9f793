"""The reference backend of the loop: one student, its optimizer and its Tuner (any schedule, any estimator).

:func:`train_student` is the paper's run written with the public API: :meth:`kdlib.tuner.Tuner.train_step` first
chooses (lambda1, T) for the current train batch (eq. 3, eq. 4 or a fixed value), then the student takes one
optimizer step on :meth:`~kdlib.tuner.Tuner.loss`, sharing the train forward between the estimator and the real
step. Every faster backend (:mod:`kdlib.train.stacked`, :mod:`kdlib.train.linear`) is tested equal to it.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from kdlib.losses import validation_loss
from kdlib.train.checkpoint import Checkpoint
from kdlib.train.loop import Batch, RunOutput, run_loop
from kdlib.train.problem import Problem, Split
from kdlib.train.settings import Settings, make_optimizer
from kdlib.tuner import Tuner

TunerFactory = Callable[[torch.optim.Optimizer, Settings], Tuner]  # (the student's optimizer, the run's settings)


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

    def step(self, batches: list[Batch], next_val: Callable[[], Any]) -> None:
        self.tuner.train_step(self.model, batches[0], next_val)  # Tuner.step + the real step, one shared forward

    def rows(self) -> list[dict[str, Any]]:
        """The per-run fields of a history row (values trained at, phase, counts)."""
        lam = self.tuner.metaparams.detach().float().cpu()
        return [dict(lambda1=float(lam[0]), temperature=float(lam[1]), hypergrad_evals=int(self.tuner.hypergrad_evals),
                     nan_skipped=int(self.tuner.nan_skipped), phase=self.tuner.phase)]

    def evaluate(self, split: Split, t_val: float) -> list[tuple[float, float]]:
        return [evaluate(self.model, split, t_val)]

    def state_dict(self) -> dict[str, Any]:
        """The student (parameters and buffers), its optimizer and its Tuner, for a checkpoint of the loop."""
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                    tuner=self.tuner.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.tuner.load_state_dict(state["tuner"])

    def finish(self) -> list[RunOutput]:
        self.tuner.check()
        return [RunOutput(model=self.model, tuner=self.tuner)]


def train_student(settings: Any, problem: Problem, tuner: TunerFactory, progress: bool = False,
                  score_on_val: bool = False, checkpoint: Checkpoint | None = None) -> RunOutput:
    """Train a fresh student (seeded by ``settings.seed``) with the Tuner ``tuner(optimizer, settings)``.

    ``settings``: a :class:`Settings` or any object with its field names (see :meth:`Settings.of`).
    ``score_on_val`` also tracks the best validation accuracy over logged points (hyperopt's objective).
    Batches are taken in order or reshuffled per epoch (``shuffle``, a generator seeded by the seed: the
    global RNG stream is the model's alone); D_val is cycled in order and drawn only when a hypergradient is.
    ``checkpoint``: saved after every epoch, and resumed from if a usable one is there (:func:`run_loop`).
    """
    st = Settings.of(settings)
    Settings.validate(st)  # the run settings (an experiment config's own fields are the runner's to check)
    return run_loop([st], problem, lambda: OneRun(st, problem, tuner), progress, score_on_val, checkpoint)[0]


__all__ = ["OneRun", "TunerFactory", "evaluate", "train_student"]
