"""The authors' precomputed teacher logits (Sec. 4.2), verified byte for byte by SHA-256 wherever they come
from: the data root, the cache, or (only with ``download=True``) the authors' repository at a pinned commit."""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from kdlib.data.bundle import DataBundle
from kdlib.errors import TeacherError
from kdlib.fileio import NETWORK_ERRORS, ChecksumMismatch, fetch_verified, file_sha256
from kdlib.paths import cache_dir as _cache_dir
from kdlib.paths import data_root
from kdlib.teachers.logits import TeacherLogits, _load_npy, _log, check_logits

AUTHORS_COMMIT = "885af35bfdf96da070a43fa7d7c8916854d05d6f"
AUTHORS_URL = ("https://raw.githubusercontent.com/Intelligent-Systems-Phystech/Gorpinich-BS-Thesis/"
               f"{AUTHORS_COMMIT}/code/{{file}}")


class AuthorsLogits(NamedTuple):
    """One of the authors' logits files: its name, SHA-256, the datasets it is for, its exact row count and
    the argmax agreement with the official training labels (measured on the verified data)."""

    file: str
    sha256: str
    datasets: tuple[str, ...]
    description: str
    rows: int
    train_agreement: float


# kind -> the verified file (shared/data/README.md); tests may monkeypatch an entry for a tiny fake file
AUTHORS_LOGITS: dict[str, AuthorsLogits] = {
    "authors_resnet": AuthorsLogits(
        "logits_resnet.npy", "4d9113acb8c2f5b0d9d096a865d080352d2fc195efea015271ec931380be6a2f",
        ("cifar10", "cifar10_reduced"), "CIFAR-10 PreAct-ResNet18 (pretrained, Passalis et al.)", 50_000, 0.9995),
    "authors_cnn": AuthorsLogits(
        "logits_cnn.npy", "2eb9395a574e37393886bb7f875b2d86529a097ebf454e76785be040d31c8203",
        ("cifar10", "cifar10_reduced"), "CIFAR-10 Cifar_Tiny CNN", 50_000, 0.7975),
    "authors_resnet_fmnist": AuthorsLogits(
        "logits_resnet_fmnist.npy", "b8734c967d15954e5c06fffb226d45ee3926026a826eb9036d85e42d630b6edd",
        ("fashion_mnist",), "Fashion-MNIST ResNet18 (1-channel input)", 60_000, 0.9987),
}


def authors_logits_path(kind: str, root: str | os.PathLike | None = None) -> Path:
    """Where the authors' logits file for ``kind`` is expected under the data root."""
    return data_root(root) / "authors" / "teacher_logits" / AUTHORS_LOGITS[kind].file


def _find_authors_file(kind: str, root, cache) -> Path | None:
    file = AUTHORS_LOGITS[kind].file
    for p in (authors_logits_path(kind, root), _cache_dir(cache) / "authors" / "teacher_logits" / file):
        if p.is_file():
            return p
    return None


def verify_authors_file(kind: str, path: str | os.PathLike) -> None:
    """Raise :class:`TeacherError` unless ``path`` is byte for byte the authors' file for ``kind``."""
    entry = AUTHORS_LOGITS[kind]
    got = file_sha256(path)
    if got != entry.sha256:
        raise TeacherError(
            f"{path}: expected the authors' {entry.file} ({entry.description}; SHA-256 {entry.sha256}), found "
            f"SHA-256 {got}: the file is damaged, truncated, edited (rows shifted, NaN) or another dataset's "
            f"logits; fix: replace it with the authors' file ({AUTHORS_URL.format(file=entry.file)}, or run "
            f"with --download), or use your own logits as teacher='file:PATH.npy'")


def fetch_authors_logits(kind: str, dest_dir: str | os.PathLike | None = None, timeout: float = 60.0) -> Path:
    """Download the authors' logits for ``kind`` at the pinned commit, check SHA-256, write to ``dest_dir``
    (default ``cache_dir()/authors/teacher_logits``) atomically and return the path."""
    entry = AUTHORS_LOGITS[kind]
    dest = Path(dest_dir) if dest_dir is not None else _cache_dir() / "authors" / "teacher_logits"
    try:
        return fetch_verified(AUTHORS_URL.format(file=entry.file), entry.sha256, dest / entry.file, timeout)
    except ChecksumMismatch as e:
        raise TeacherError(str(e)) from e


def _authors_teacher(bundle: DataBundle, kind: str, root, cache, device, download: bool,
                     progress: bool) -> TeacherLogits:
    entry = AUTHORS_LOGITS[kind]
    if bundle.name not in entry.datasets:
        raise TeacherError(f"teacher {kind!r} ({entry.description}) is for {', '.join(entry.datasets)}, not "
                           f"{bundle.name!r}; fix: teacher='auto' picks the right one")
    path = _find_authors_file(kind, root, cache)
    if path is None:
        local = authors_logits_path(kind, root)
        url = AUTHORS_URL.format(file=entry.file)
        if not download:
            raise FileNotFoundError(
                f"the authors' teacher logits {entry.file} were not found at {local} (data root: argument "
                f"root=, env KDLIB_DATA) nor in the cache; fix: place {url} (SHA-256 {entry.sha256}) there, "
                f"pass --download (download=True) to fetch it, or use teacher='small_cnn' to train one")
        _log(progress, f"fetching {url}")
        try:
            path = fetch_authors_logits(kind, _cache_dir(cache) / "authors" / "teacher_logits")
        except NETWORK_ERRORS as e:
            raise FileNotFoundError(
                f"the authors' teacher logits {entry.file} are not available locally and could not be fetched "
                f"({e}); fix: download {url} (SHA-256 {entry.sha256}) and place it at {local} (data root: "
                f"argument root=, env KDLIB_DATA), or use teacher='small_cnn' to train one") from e
    verify_authors_file(kind, path)
    table = torch.as_tensor(np.asarray(_load_npy(path), dtype=np.float32))
    agree = check_logits(table, bundle, path, entry.rows, entry.train_agreement)
    return TeacherLogits(table.to(device), None, agree, kind, f"authors' precomputed logits {path}",
                         meta=dict(description=entry.description, rows=int(table.shape[0]), file=entry.file,
                                   sha256=entry.sha256))
