"""One student training run (Sec. 3-4): SGD on L_train with metaparameters set by a controller.

The loop is the paper's: at every iteration the controller first chooses (lambda1, T) for the current train
batch (a hypergradient step, eq. 3; an extrapolated value, eq. 4; or a fixed value), then the student takes
one SGD step on L_train at those values. Test accuracy and L_val are logged every ``log_every`` iterations
(synthetic) or epochs (images) and at the end.

Controllers know nothing of datasets; this module knows nothing of how a controller picks its values.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import torch
from torch import Tensor, nn

from kdlib.experiments.config import ExperimentConfig
from kdlib.losses import distillation_loss, validation_loss


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


@dataclass
class StepInfo:
    """What a controller may use at one iteration."""

    step: int  # global iteration index, from 0
    epoch: int
    batch_in_epoch: int
    lr: float  # the student's current learning rate
    train_batch: tuple[Tensor, Tensor, Tensor]
    next_val_batch: Callable[[], tuple[Tensor, Tensor]]
    model: nn.Module


class Controller(Protocol):
    """Chooses (lambda1, T) at every iteration."""

    hypergrad_evals: int
    nan_skipped: Tensor | int

    def metaparams(self, info: StepInfo) -> Tensor:  # shape (2,)
        ...

    def phase(self, info: StepInfo) -> str:
        ...


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


@dataclass
class RunOutput:
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = None
    best_val_accuracy: float = float("nan")


def train_student(cfg: ExperimentConfig, problem: Problem, controller: Controller,
                  progress: bool = False, score_on_val: bool = False) -> RunOutput:
    """Train a fresh student (seeded by ``cfg.seed``) under ``controller``; return the logged history.

    ``score_on_val`` also tracks the best validation accuracy over logged points (hyperopt's objective).
    """
    torch.manual_seed(cfg.seed)
    model = problem.make_student().to(problem.train.x.device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    images = cfg.dataset != "synthetic"
    n_train = len(problem.train)
    bs = cfg.batch_size if cfg.batch_size is not None else n_train
    batches_per_epoch = max(1, -(-n_train // bs))
    total = cfg.epochs * batches_per_epoch if images else int(cfg.iterations)
    val_iter = _val_cycle(problem.val, cfg.batch_size)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = RunOutput(model=model)
    t0 = time.perf_counter()
    lr = cfg.lr
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"{cfg.dataset}/{cfg.method}/seed{cfg.seed}", leave=False)

    def log(step: int, epoch: int, lam: Tensor, phase: str) -> None:
        acc, _ = evaluate(model, problem.test, cfg.t_val)
        val_acc, val_loss = evaluate(model, problem.val, cfg.t_val)
        if score_on_val:
            out.best_val_accuracy = max(val_acc, out.best_val_accuracy) \
                if out.best_val_accuracy == out.best_val_accuracy else val_acc
        lam_cpu = lam.detach().float().cpu()
        out.history.append(dict(
            step=step, epoch=epoch, test_accuracy=acc, val_accuracy=val_acc, val_loss=val_loss,
            lambda1=float(lam_cpu[0]), temperature=float(lam_cpu[1]),
            hypergrad_evals=int(controller.hypergrad_evals), nan_skipped=int(controller.nan_skipped),
            wall_time=time.perf_counter() - t0, phase=phase, lr=lr))

    step = 0
    epoch = 0
    while step < total:
        if images and cfg.lr_step_epochs:
            lr = cfg.lr * cfg.lr_gamma ** (epoch // cfg.lr_step_epochs)
            for group in opt.param_groups:
                group["lr"] = lr
        if cfg.shuffle:
            order = torch.randperm(n_train, generator=gen).to(problem.train.x.device)
        else:
            order = None
        for b in range(batches_per_epoch):
            if step >= total:
                break
            sl = slice(b * bs, min((b + 1) * bs, n_train))
            if order is None:
                xb, yb, tb = problem.train.x[sl], problem.train.y[sl], problem.train.teacher[sl]
            else:
                idx = order[sl]
                xb, yb, tb = problem.train.x[idx], problem.train.y[idx], problem.train.teacher[idx]
            info = StepInfo(step=step, epoch=epoch, batch_in_epoch=b, lr=lr, train_batch=(xb, yb, tb),
                            next_val_batch=lambda: next(val_iter), model=model)
            lam = controller.metaparams(info)
            phase = controller.phase(info)
            opt.zero_grad(set_to_none=True)
            loss = distillation_loss(model(xb), tb, yb, lam[0], lam[1], form=cfg.loss_form,
                                     t2_scaling=cfg.t2_scaling)
            loss.backward()
            opt.step()
            last = step == total - 1
            if not images and (step % cfg.log_every == 0 or last):
                log(step, epoch, lam, phase)
            step += 1
            if bar is not None:
                bar.update(1)
        if images and ((epoch + 1) % cfg.log_every == 0 or step >= total):
            log(step - 1, epoch, lam, phase)
        epoch += 1
    if bar is not None:
        bar.close()
    return out
