"""The in-memory containers of a dataset (Sec. 4) and the 9:1 split of D into D_train and D_val.

Every split keeps ``index``: the row of each example in its source array (the official training order for
images, the position in the generated array for the synthetic data). Teacher logits are tables indexed by
that number (see :mod:`kdlib.teachers`), exactly as the authors' unshuffled loaders consumed them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor


@dataclass
class ArraySplit:
    """A split held in memory: features ``x``, labels ``y`` and the original row ``index`` of each example.

    ``x`` is float32: normalized images (N, C, H, W), or for the synthetic data (N, 4) =
    [x1, x2, teacher_feature, student_feature]. ``y`` is int64. ``index`` is int64: the row in the source
    array (official training order for images; position in the generated array for synthetic data).
    """

    x: Tensor
    y: Tensor
    index: Tensor

    def __post_init__(self) -> None:
        if not (len(self.x) == len(self.y) == len(self.index)):
            raise ValueError(f"x, y, index lengths differ: {len(self.x)}, {len(self.y)}, {len(self.index)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> "ArraySplit":
        return ArraySplit(self.x.to(device), self.y.to(device), self.index.to(device))

    def take(self, idx: Tensor | Sequence[int] | slice) -> "ArraySplit":
        """Subset by positions in this split (a slice gives views, no copy)."""
        if not isinstance(idx, slice):
            idx = torch.as_tensor(idx, dtype=torch.long, device=self.y.device)
        return ArraySplit(self.x[idx], self.y[idx], self.index[idx])

    def batches(self, batch_size: int | None, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Yield ``(x, y, positions)``; ``positions`` index into this split. ``batch_size=None``: one batch.

        Without shuffling the batches are contiguous slices in order (the authors' ``shuffle=False``
        loaders); the last batch may be smaller.
        """
        n = len(self)
        dev = self.y.device
        if batch_size is None or batch_size >= n:
            batch_size = max(n, 1)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        if shuffle:
            order = torch.randperm(n, generator=generator).to(dev)
            for s in range(0, n, batch_size):
                pos = order[s:s + batch_size]
                yield self.x[pos], self.y[pos], pos
        else:
            for s in range(0, n, batch_size):
                e = min(s + batch_size, n)
                yield self.x[s:e], self.y[s:e], torch.arange(s, e, device=dev)


@dataclass
class DataBundle:
    """All splits of one dataset, as used by the methods of Sec. 4.

    ``train_full`` is D (baselines: no_distillation, naive, random); ``train``/``val`` are D_train/D_val of the
    bi-level problem (gradient, proposed, hyperopt); ``teacher_train`` is the synthetic teacher's 200 points
    (``None`` for images: the teacher trains on ``train_full``).
    """

    name: str
    train_full: ArraySplit
    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    teacher_train: ArraySplit | None
    num_classes: int
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "DataBundle":
        tt = self.teacher_train.to(device) if self.teacher_train is not None else None
        return DataBundle(self.name, self.train_full.to(device), self.train.to(device), self.val.to(device),
                          self.test.to(device), tt, self.num_classes, self.source, dict(self.meta))

    def summary(self) -> str:
        parts = [f"{k}={len(getattr(self, k))}" for k in ("train_full", "train", "val", "test")]
        if self.teacher_train is not None:
            parts.append(f"teacher_train={len(self.teacher_train)}")
        return f"{self.name} ({self.source}): " + ", ".join(parts)


def split_train_val(n: int, split_seed: int | None = None) -> tuple[Tensor, Tensor]:
    """Positions of D_train and D_val in a D of size ``n`` (9:1, ``n // 10`` validation points).

    ``split_seed=None``: train = the first 90 %, val = the last 10 %, as the authors did
    (``split_train_val`` in their code). An int: a seeded random permutation (each part sorted ascending).
    """
    n_val = n // 10
    n_tr = n - n_val
    if split_seed is None:
        return torch.arange(0, n_tr), torch.arange(n_tr, n)
    g = torch.Generator().manual_seed(int(split_seed))
    perm = torch.randperm(n, generator=g)
    return perm[:n_tr].sort().values, perm[n_tr:].sort().values
