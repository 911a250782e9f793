"""Teachers trained here, seeded (``torch.manual_seed(42 + seed)``): ``small_cnn``/``resnet18`` on an image
bundle's ``train_full``, and the synthetic LogReg of Sec. 4.1 on the 200 teacher points. A trained teacher is
stored in the cache (:mod:`kdlib.teachers.cache`); a second call with the same inputs loads it and never
retrains."""
from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from kdlib.data.bundle import DataBundle
from kdlib.data.synthetic_xor import AUTHORS_SEED
from kdlib.models import LogReg, make_teacher
from kdlib.teachers.cache import entry_dir, read_entry, teacher_cache_key, write_entry
from kdlib.teachers.logits import TeacherLogits, _agreement, _log

# every actual training run increments this (a cache hit does not): timing-free evidence for tests
TRAIN_CALLS = 0

# default epoch budget for trained image teachers: about SAMPLE_BUDGET image passes (clipped to
# [1, MAX_EPOCHS]), i.e. ~2-3 CPU minutes for small_cnn on 2 cores; see get_teacher
SAMPLE_BUDGET = {"fashion_mnist": 100_000, "cifar10": 80_000, "cifar10_reduced": 80_000}
MAX_EPOCHS = 30
SYNTHETIC_TEACHER_STEPS = 20_000
SYNTHETIC_TEACHER_LR = 1e-2


def default_epochs(bundle: DataBundle, kind: str) -> int:
    """Default teacher epochs: ``ceil(SAMPLE_BUDGET / |train_full|)`` clipped to [1, MAX_EPOCHS]
    (Fashion-MNIST 100k image passes, CIFAR-10 80k); 1 epoch for resnet18 (GPU-sized, slow on CPU).

    At the quick profile (Fashion-MNIST n_train=6400 -> 16 epochs; CIFAR-10 n_train=12800 -> 7 epochs;
    reduced CIFAR-10 n_train=6400 -> 13 epochs) this is about 1-3 minutes on 2 idle CPU cores."""
    if kind == "logreg":
        return SYNTHETIC_TEACHER_STEPS
    if kind == "resnet18":
        return 1
    n = max(len(bundle.train_full), 1)
    return int(min(MAX_EPOCHS, max(1, math.ceil(SAMPLE_BUDGET.get(bundle.name, 60_000) / n))))


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor, batch_size: int = 1000, device: str | torch.device = "cpu") -> Tensor:
    """Eval-mode logits of ``model`` on ``x`` in batches, returned on the CPU as float32."""
    model.eval()
    outs = [model(x[s:s + batch_size].to(device)).float().cpu() for s in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0)


def _augment(x: Tensor, gen: torch.Generator, pad: int, flip: bool) -> Tensor:
    """Random crop with zero padding ``pad`` and random horizontal flip, per sample, on a batch."""
    b, c, h, w = x.shape
    if flip:
        m = torch.rand(b, generator=gen) < 0.5
        x = torch.where(m.view(b, 1, 1, 1).to(x.device), x.flip(3), x)
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))
        oh = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        ow = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        ih = (oh[:, None] + torch.arange(h, device=x.device)[None, :])  # (b, h)
        iw = (ow[:, None] + torch.arange(w, device=x.device)[None, :])  # (b, w)
        bi = torch.arange(b, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[bi, ih[:, :, None], iw[:, None, :]].permute(0, 3, 1, 2).contiguous()
    return x


def _train_image_teacher(bundle: DataBundle, kind: str, epochs: int, seed: int, device, progress: bool,
                         batch_size: int = 128) -> tuple[nn.Module, dict[str, Any]]:
    """Adam (lr 2e-3, weight decay 5e-4) with a one-cycle schedule, batch 128, shuffled; CIFAR-10 gets
    random crops (pad 4) and flips, Fashion-MNIST random crops (pad 2)."""
    torch.manual_seed(AUTHORS_SEED + seed)
    gen = torch.Generator().manual_seed(AUTHORS_SEED + seed)
    model = make_teacher(kind, bundle.name).to(device)
    data = bundle.train_full.to(device)
    steps = epochs * math.ceil(len(data) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    # one-cycle needs a few steps per phase; very short (smoke-scale) trainings keep a constant lr
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.25)
             if steps >= 8 else None)
    pad, flip = (4, True) if bundle.name.startswith("cifar") else (2, False)
    t0 = time.perf_counter()
    for ep in range(epochs):
        model.train()
        tot, correct, n = 0.0, 0, 0
        for xb, yb, _ in data.batches(batch_size, shuffle=True, generator=gen):
            xb = _augment(xb, gen, pad, flip)
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            tot += float(loss.detach()) * len(yb)
            correct += int((out.argmax(1) == yb).sum())
            n += len(yb)
        _log(progress, f"{kind} on {bundle.name}: epoch {ep + 1}/{epochs} loss {tot / max(n, 1):.4f} "
                       f"train acc {correct / max(n, 1):.4f} ({time.perf_counter() - t0:.0f}s)")
    return model, dict(train_seconds=round(time.perf_counter() - t0, 2), optimizer="AdamW one-cycle 2e-3",
                       batch_size=batch_size, augment=dict(pad=pad, flip=flip))


def _train_logreg_teacher(bundle: DataBundle, steps: int, seed: int, device) -> tuple[nn.Module, dict[str, Any]]:
    """The authors' synthetic teacher (code/synthetic_funcs.py ``net_training``): LogReg on the teacher
    columns, full-batch SGD (lr 1e-2) on the 200 teacher points, cross-entropy, ``steps`` iterations."""
    torch.manual_seed(AUTHORS_SEED + seed)
    cols = bundle.meta.get("teacher_cols", [0, 1, 2])
    model = LogReg(cols, bundle.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=SYNTHETIC_TEACHER_LR)
    x, y = bundle.teacher_train.x.to(device), bundle.teacher_train.y.to(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, dict(train_seconds=round(time.perf_counter() - t0, 2), optimizer=f"SGD lr {SYNTHETIC_TEACHER_LR}",
                       steps=steps, cols=list(cols))


def _trained_teacher(bundle: DataBundle, kind: str, cache, device, seed: int, epochs: int | None,
                     progress: bool) -> TeacherLogits:
    global TRAIN_CALLS
    if kind == "logreg" and bundle.name != "synthetic":
        raise ValueError("teacher 'logreg' is for the synthetic dataset only")
    if kind != "logreg" and bundle.name == "synthetic":
        raise ValueError(f"teacher {kind!r} is for image datasets; use 'logreg' for synthetic")
    epochs = int(epochs) if epochs is not None else default_epochs(bundle, kind)
    key, inputs = teacher_cache_key(bundle, kind, epochs, seed)
    folder = entry_dir(cache, key)
    model = make_teacher(kind, bundle.name)
    hit = read_entry(folder, model)
    if hit is not None:
        table, meta = hit
        _log(progress, f"{kind} teacher loaded from cache {folder}")
        return TeacherLogits(table.to(device), meta["test_accuracy"], meta["train_agreement"], kind,
                             f"trained {kind}, cached at {folder}", meta=meta, model=model.to(device))

    TRAIN_CALLS += 1
    _log(progress, f"training {kind} teacher on {bundle.summary()} ({epochs} {'steps' if kind == 'logreg' else 'epochs'})")
    if kind == "logreg":
        model, info = _train_logreg_teacher(bundle, epochs, seed, device)
        everything = bundle.meta.get("all")
        n_rows = int(bundle.meta.get("n_source", 0))
        splits = [everything] if everything is not None else [
            s for s in (bundle.teacher_train, bundle.train_full, bundle.val, bundle.test) if s is not None]
        train_split = bundle.teacher_train
    else:
        model, info = _train_image_teacher(bundle, kind, epochs, seed, device, progress)
        n_rows = int(bundle.meta.get("n_source", 0))
        splits = [bundle.train_full]
        train_split = bundle.train_full
    n_rows = max(n_rows, max(int(s.index.max()) + 1 for s in splits if len(s)))
    table = torch.full((n_rows, bundle.num_classes), float("nan"), dtype=torch.float32)
    for s in splits:
        table[s.index.cpu()] = predict_logits(model, s.x, device=device)
    test_logits = predict_logits(model, bundle.test.x, device=device)
    test_acc = _agreement(test_logits, bundle.test.y)
    train_agree = _agreement(table[bundle.train_full.index.cpu()], bundle.train_full.y)
    meta = dict(inputs, **info, test_accuracy=test_acc, train_agreement=train_agree,
                teacher_train_accuracy=_agreement(table[train_split.index.cpu()], train_split.y), key=key)
    write_entry(folder, model, table, meta)
    _log(progress, f"{kind} teacher: test accuracy {test_acc:.4f}, train agreement {train_agree:.4f}, "
                   f"{info['train_seconds']}s; cached at {folder}")
    return TeacherLogits(table.to(device), test_acc, train_agree, kind, f"trained {kind}, cached at {folder}",
                         meta=meta, model=model)
