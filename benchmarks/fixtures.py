"""What the benchmarks time: the three students (synthetic logistic regression, the Fashion-MNIST and CIFAR-10
CNNs) with their batches and fabricated teacher logits, the plain distillation step (the floor every ratio is
taken against) and the three forms of a Tuner iteration (the README loop, the after-backward loop and
``Tuner.train_step``)."""
from __future__ import annotations

from typing import Any

import torch

from kdlib.data import load_dataset, synthetic
from kdlib.losses import distillation_loss
from kdlib.models import LogReg, make_student


def image_data(name: str, n: int, device: torch.device, allow_real: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(x, y, source): the first n real training images when kdlib finds them, else random tensors."""
    if allow_real:
        try:
            b = load_dataset(name, n_train=n, n_test=10)
            return b.train_full.x[:n].to(device), b.train_full.y[:n].to(device), f"real ({b.source})"
        except (FileNotFoundError, OSError, ValueError) as exc:  # absent data: fall back, record why
            reason = type(exc).__name__
        else:  # pragma: no cover
            reason = ""
    else:
        reason = "quick mode"
    g = torch.Generator().manual_seed(0)
    shape = (n, 1, 28, 28) if name == "fashion_mnist" else (n, 3, 32, 32)
    x = torch.randn(shape, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x.to(device), y.to(device), f"fabricated random tensors ({reason})"


def fake_teacher(y: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Fabricated teacher logits: confident on the label, with noise (the timings do not depend on them)."""
    g = torch.Generator().manual_seed(1)
    return (torch.randn(len(y), k, generator=g).to(y.device) + 4.0 * torch.nn.functional.one_hot(y, k)).float()


def make_students(device: torch.device, quick: bool, allow_real: bool) -> dict[str, dict[str, Any]]:
    """student name -> ``make`` (a fresh model), a ``train`` batch with teacher logits, a ``val`` batch, ``t_val``
    and ``source`` (what the data is): ``synthetic``, ``fashion_mnist`` and ``cifar10`` (the reduced-CIFAR student)."""
    out: dict[str, dict[str, Any]] = {}
    syn = synthetic()
    tr, te = syn.train, syn.test
    out["synthetic"] = dict(
        make=lambda: LogReg(syn.meta["student_cols"]).to(device), train=(tr.x.to(device), tr.y.to(device),
                                                                        fake_teacher(tr.y.to(device), 2)),
        val=(te.x.to(device), te.y.to(device)), t_val=0.1, source="real synthetic draw; fabricated teacher logits")
    bs = 128
    for name, key in (("fashion_mnist", "fashion_mnist"), ("cifar10_reduced", "cifar10")):
        n = 4 * bs
        x, y, src = image_data(name, n, device, allow_real)
        out[key] = dict(make=lambda name=name: make_student(name).to(device),
                        train=(x[:bs], y[:bs], fake_teacher(y[:bs])), val=(x[bs:2 * bs], y[bs:2 * bs]),
                        batches=[(x[i * bs:(i + 1) * bs], y[i * bs:(i + 1) * bs], fake_teacher(y[i * bs:(i + 1) * bs]))
                                 for i in range(3)],
                        t_val=1.0, source=src + "; fabricated teacher logits", x_all=x, y_all=y)
    return out


def plain_step(model, opt, batch, lam):
    x, y, t = batch
    opt.zero_grad(set_to_none=True)
    distillation_loss(model(x), t, y, lam[0], lam[1]).backward()
    opt.step()


def loop_iteration(model, opt, tuner, s) -> None:
    """One iteration of the README loop: ``tuner.step`` then the loop's own forward and optimizer step."""
    x, y, t = s["train"]
    tuner.step(model, s["train"], s["val"])
    opt.zero_grad(set_to_none=True)
    tuner.loss(model(x), t, y).backward()
    opt.step()


def after_backward_iteration(model, opt, tuner, s) -> None:
    """One iteration of the after-backward loop: loss, backward, ``tuner.step`` from ``.grad``, optimizer step."""
    x, y, t = s["train"]
    loss = tuner.loss(model(x), t, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    tuner.step(model, s["train"], s["val"])
    opt.step()


def train_step_iteration(model, opt, tuner, s) -> None:
    """One iteration of :func:`kdlib.train.train_student`: ``tuner.train_step`` (one forward shared by the
    estimator and the real step)."""
    tuner.train_step(model, s["train"], s["val"])
