"""The data path: ``teacher_s``, a kdlib teacher trained then read from its cache (:func:`bench_teacher`), and
``batches_per_s``, ``ArraySplit.batches`` against a ``DataLoader(TensorDataset)`` on the same tensors
(:func:`bench_batching`)."""
from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.timing import Timer, rounded
from kdlib.data import ArraySplit, DataBundle
from kdlib.teachers import get_teacher


def bench_teacher(quick: bool) -> dict[str, Any]:
    n = 128 if quick else 1024  # (OneCycleLR in kdlib.teachers divides by zero at exactly 4 steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + 64, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n + 64,), generator=g)
    full = ArraySplit(x[:n], y[:n], torch.arange(n))
    tr = full.take(slice(0, n - n // 10))
    va = full.take(slice(n - n // 10, n))
    te = ArraySplit(x[n:], y[n:], torch.arange(64))
    bundle = DataBundle("cifar10_reduced", full, tr, va, te, None, 10, "fabricated benchmark data",
                        dict(n_source=n, n_train=n))
    with tempfile.TemporaryDirectory(prefix="kdlib-bench-cache-") as tmp:
        old = os.environ.get("KDLIB_CACHE")
        os.environ["KDLIB_CACHE"] = tmp
        try:
            t0 = time.perf_counter()
            a = get_teacher(bundle, kind="small_cnn", epochs=1, cache=tmp, progress=False)
            first = time.perf_counter() - t0
            cached = []
            for _ in range(3):
                t0 = time.perf_counter()
                b = get_teacher(bundle, kind="small_cnn", epochs=1, cache=tmp, progress=False)
                cached.append(time.perf_counter() - t0)
            same = bool(torch.equal(a.table, b.table))
        finally:
            if old is None:
                os.environ.pop("KDLIB_CACHE", None)
            else:
                os.environ["KDLIB_CACHE"] = old
    c = statistics.median(cached)
    return dict(first_s=rounded(first), cached_s=rounded(c), ratio=rounded(first / c, 4), identical_logits=same,
                setup=f"small_cnn teacher, 1 epoch on {n} fabricated 32x32 images, temporary KDLIB_CACHE")


def bench_batching(quick: bool) -> dict[str, Any]:


    n = 2560 if quick else 12800
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    split = ArraySplit(x, y, torch.arange(n))
    bs = 128
    timer = Timer(torch.device("cpu"))
    out: dict[str, Any] = {}
    for shuffle in (False, True):
        def kd():
            gen = torch.Generator().manual_seed(0)
            for xb, yb, _ in split.batches(bs, shuffle=shuffle, generator=gen):
                pass

        def dl():
            gen = torch.Generator().manual_seed(0)
            for xb, yb in DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=shuffle, generator=gen,
                                     num_workers=0):
                pass

        nb = math.ceil(n / bs)
        t_kd = timer.median(kd, 3 if quick else 5)
        t_dl = timer.median(dl, 2 if quick else 3)
        key = "shuffled" if shuffle else "in_order"
        out[key] = dict(kdlib=rounded(nb / t_kd), dataloader=rounded(nb / t_dl), ratio=rounded(t_dl / t_kd, 4))
    out["setup"] = (f"{n} CIFAR-shaped float32 images in memory, batch {bs}; baseline DataLoader(TensorDataset, "
                    f"num_workers=0) (no PIL decoding, i.e. faster than a torchvision dataset)")
    return out
