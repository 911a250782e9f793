"""What a run trains on: the student's train part (with the teacher's logits), D_val and the test set (Sec. 4)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn


@dataclass
class Split:
    """Tensors of one data part on the run's device; ``teacher`` is aligned row by row with ``x``."""

    x: Tensor
    y: Tensor
    teacher: Tensor | None = None
    # x holds one copy of the images per run on a leading axis (S, N, ...): each stacked run's own augmented D_val
    per_run: bool = False

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Problem:
    """What one run trains on: the student's train part (with teacher logits), D_val and the test set.

    ``augment(x, generator)``: a freshly augmented copy of a train batch (the teacher's logits stay those of the
    un-augmented image, as the authors' precomputed logits were); None if the data has none
    (:class:`kdlib.data.augment.FlipCrop` for images). The loop calls it only for runs with ``augment != "none"``.
    """

    train: Split
    val: Split
    test: Split
    make_student: Callable[[], nn.Module]
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None


__all__ = ["Split", "Problem"]
