"""A teacher's logits as a table indexed by original row, and its check against a dataset before any training
step: shape, exact row count, finite rows, and an argmax agreement with the training labels (a misalignment,
shifted rows or another dataset's logits, shows as an agreement far below the stated one)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from kdlib.data.bundle import ArraySplit, DataBundle
from kdlib.data.readers import CORRUPT_FILE_ERRORS, damaged_file_error
from kdlib.errors import TeacherError

# a train-label agreement this far below the teacher's stated one means the rows do not match the images
AGREEMENT_MARGIN = 0.25


@dataclass
class TeacherLogits:
    """Teacher outputs as a table: row ``i`` holds f(x_i) for ORIGINAL training index ``i``.

    For images the rows follow the official training order (rows outside the bundle's ``train_full`` are
    NaN for kdlib-trained teachers; the authors' tables are complete); for synthetic data every generated
    point has a row. ``test_accuracy`` is None when unknown (the authors' logits); ``train_agreement`` is the
    argmax agreement with the labels of ``train_full``.
    """

    table: Tensor
    test_accuracy: float | None
    train_agreement: float | None
    name: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def for_split(self, split: ArraySplit) -> Tensor:
        """Logits of the examples of ``split``, aligned with it: ``table[split.index]``."""
        idx = split.index.to(self.table.device)
        return self.table[idx]

    def to(self, device: torch.device | str) -> "TeacherLogits":
        return TeacherLogits(self.table.to(device), self.test_accuracy, self.train_agreement, self.name,
                             self.source, dict(self.meta), self.model)


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[kdlib.teachers] {msg}", file=sys.stderr, flush=True)


def _agreement(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1).cpu() == labels.cpu()).float().mean()) if len(labels) else float("nan")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except CORRUPT_FILE_ERRORS as e:
        raise damaged_file_error(path, e, "a float array (N, classes) in .npy format",
                                 "replace it with an intact copy") from e


def check_logits(table: Tensor, bundle: DataBundle, path: str | os.PathLike, rows: int | None,
                 stated_agreement: float | None) -> float:
    """Check a logits table against ``bundle`` before any training step; return its train-label agreement.

    ``rows``: the exact row count (one row per training example of the source set, official order); the
    rows of ``train_full`` must be finite; an agreement with the training labels more than
    :data:`AGREEMENT_MARGIN` below ``stated_agreement`` (or, without one, near chance) is a misalignment."""
    n_source = int(bundle.meta.get("n_source") or len(bundle.train_full))
    rows = n_source if rows is None else rows
    if table.ndim != 2 or table.shape[1] != bundle.num_classes:
        raise TeacherError(f"{path}: expected an ({rows}, {bundle.num_classes}) array of logits for "
                           f"{bundle.name}, found shape {tuple(table.shape)}; fix: use the logits of a "
                           f"{bundle.num_classes}-class {bundle.name} teacher")
    if table.shape[0] != rows:
        raise TeacherError(f"{path}: expected exactly {rows} rows (one per {bundle.name} training example, "
                           f"official order), found {table.shape[0]}: the file is truncated or for another "
                           f"dataset; fix: use the complete logits of a {bundle.name} teacher")
    part = table[bundle.train_full.index.cpu()]
    bad = ~torch.isfinite(part).all(1)
    if bool(bad.any()):
        first = int(bundle.train_full.index[bad.nonzero()[0, 0]])
        raise TeacherError(f"{path}: expected finite logits, found {int(bad.sum())} row(s) with NaN/inf (first: "
                           f"row {first}); they would poison every method; fix: recompute the teacher's logits")
    agree = _agreement(part, bundle.train_full.y)
    floor = (stated_agreement - AGREEMENT_MARGIN) if stated_agreement is not None \
        else 1.5 / bundle.num_classes
    if agree < floor:
        where = (f"far below its stated {stated_agreement:.4f}" if stated_agreement is not None else
                 f"about chance level (1/{bundle.num_classes} = {1 / bundle.num_classes:.2f}; a trained teacher "
                 f"agrees on far more)")
        raise TeacherError(
            f"{path}: the teacher's argmax agrees with the {bundle.name} training labels on {agree:.3f} of "
            f"{len(bundle.train_full)} examples, {where}: the rows are likely misaligned with the images "
            f"(shifted by some rows, or in another order) or are another dataset's logits; fix: row i must "
            f"hold the logits of training example i in the official order")
    return agree
