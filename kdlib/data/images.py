"""The image datasets of Sec. 4.2 (Fashion-MNIST, CIFAR-10 full and reduced) as bundles: normalized
tensors in memory, D split 9:1 into D_train and D_val."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from kdlib.data.bundle import ArraySplit, DataBundle, split_train_val
from kdlib.data.sources import load_raw

# normalization constants from the authors' code (code/cifar_dataset.py, the FMNIST notebook)
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
FMNIST_MEAN = (0.286,)
FMNIST_STD = (0.315,)

CIFAR_REDUCED_SIZE = 12800  # Sec. 4: |D| = 12800 for the reduced CIFAR-10 experiment


def _normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (N,H,W) or (N,H,W,C) -> float32 (N,C,H,W), (x/255 - mean)/std."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    else:
        t = t.permute(0, 3, 1, 2)
    out = t.to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return out.sub_(m).div_(s).contiguous()


def _image_bundle(name: str, root, download: bool, n_train: int | None, n_test: int | None,
                  split_seed: int | None) -> DataBundle:
    t0 = time.perf_counter()
    arrays, source = load_raw(name, root, download)
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    if name == "fashion_mnist":
        mean, std = FMNIST_MEAN, FMNIST_STD
    else:
        mean, std = CIFAR_MEAN, CIFAR_STD
    n_source = len(ytr)
    n_full = n_source
    if name == "cifar10_reduced":
        n_full = min(n_full, CIFAR_REDUCED_SIZE)
    if n_train is not None:
        if n_train < 10:
            raise ValueError(f"n_train={n_train}: need at least 10 examples for the 9:1 split")
        n_full = min(n_full, int(n_train))
    n_te = len(yte) if n_test is None else min(len(yte), int(n_test))
    train_full = ArraySplit(_normalize(xtr[:n_full], mean, std), torch.from_numpy(ytr[:n_full].copy()),
                            torch.arange(n_full, dtype=torch.long))
    test = ArraySplit(_normalize(xte[:n_te], mean, std), torch.from_numpy(yte[:n_te].copy()),
                      torch.arange(n_te, dtype=torch.long))
    tr_pos, va_pos = split_train_val(n_full, split_seed)
    if split_seed is None:
        train, val = train_full.take(slice(0, len(tr_pos))), train_full.take(slice(len(tr_pos), n_full))
    else:
        train, val = train_full.take(tr_pos), train_full.take(va_pos)
    meta = dict(normalization=dict(mean=list(mean), std=list(std)), n_source=n_source, n_train=n_train,
                n_test=n_test, split_seed=split_seed, image_shape=tuple(train_full.x.shape[1:]),
                sizes=dict(train_full=n_full, train=len(train), val=len(val), test=n_te),
                student_cols=None, teacher_cols=None, load_seconds=round(time.perf_counter() - t0, 3))
    return DataBundle(name, train_full, train, val, test, None, 10, source, meta)
