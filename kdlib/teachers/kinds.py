"""The teacher kinds and the one entry point, :func:`get_teacher` (see :mod:`kdlib.teachers` for the kinds)."""
from __future__ import annotations

import os

import torch

from kdlib.data.bundle import DataBundle
from kdlib.names import TEACHER_KINDS, TRAINED_TEACHERS
from kdlib.teachers.authors import AUTHORS_LOGITS, _authors_teacher, _find_authors_file
from kdlib.teachers.logits import TeacherLogits
from kdlib.teachers.trained import _trained_teacher
from kdlib.teachers.user import _file_teacher

_AUTO_AUTHORS = {"fashion_mnist": "authors_resnet_fmnist", "cifar10": "authors_resnet",
                 "cifar10_reduced": "authors_resnet"}
TRAINED_KINDS = TRAINED_TEACHERS
KINDS = TEACHER_KINDS  # plus "file:PATH.npy": a user's own logits


def resolve_kind(bundle: DataBundle, kind: str = "auto", root=None, cache=None) -> str:
    """The concrete kind ``"auto"`` stands for: synthetic -> logreg; images -> the authors' logits when their
    file is present locally (no fetch), else small_cnn."""
    if kind != "auto":
        return kind
    if bundle.name == "synthetic":
        return "logreg"
    authors = _AUTO_AUTHORS[bundle.name]
    return authors if _find_authors_file(authors, root, cache) is not None else "small_cnn"


def get_teacher(bundle: DataBundle, kind: str = "auto", root: str | os.PathLike | None = None,
                cache: str | os.PathLike | None = None, device: str | torch.device = "cpu", seed: int = 0,
                epochs: int | None = None, progress: bool = True, download: bool = False) -> TeacherLogits:
    """Teacher logits for every training example of ``bundle`` (see :mod:`kdlib.teachers` for the kinds).

    ``epochs``: for ``small_cnn``/``resnet18`` the training epochs over ``train_full`` (default
    :func:`default_epochs`: ~100k image passes for Fashion-MNIST, ~80k for CIFAR-10, i.e. about 1-3 CPU
    minutes for small_cnn on 2 idle cores; much longer on a loaded machine), for ``logreg`` the number of SGD steps (default 20,000 as the authors).
    ``seed``: the teacher is trained under ``torch.manual_seed(42 + seed)``. ``download``: fetch the authors'
    logits when they are missing locally (never without it). ``kind="file:PATH.npy"``: a user's own logits.
    Every table is verified before it is returned (:func:`check_logits`; the authors' files by SHA-256 too).
    """
    if isinstance(kind, str) and kind.startswith("file:"):
        return _file_teacher(bundle, kind, device)
    if kind not in KINDS:
        raise ValueError(f"unknown teacher kind {kind!r}; choose one of: {', '.join(KINDS)} or 'file:PATH.npy'")
    concrete = resolve_kind(bundle, kind, root, cache)
    if concrete in AUTHORS_LOGITS:
        return _authors_teacher(bundle, concrete, root, cache, device, download=download, progress=progress)
    return _trained_teacher(bundle, concrete, cache, device, seed, epochs, progress)
