"""Where kdlib reads data and writes caches.

* ``data_root``: the datasets (Fashion-MNIST, CIFAR-10, the authors' teacher logits). It may be read-only.
* ``cache_dir``: everything kdlib derives (trained teachers, logits, npz caches). Created on demand.
* ``writable_data_dir``: derived data files (npz cache, extracted IDX) when the data root is read-only.
* ``REPO_ROOT``: the repository root (the folder holding ``kdlib/``): the archive and the results cache live there.

Resolution order for each: explicit argument, then environment variable (``KDLIB_DATA`` / ``KDLIB_CACHE``),
then a default under ``~/.cache/kdlib``.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_DATA = "KDLIB_DATA"
ENV_CACHE = "KDLIB_CACHE"
ENV_SHARED_DATA = "KDLIB_SHARED_DATA"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _default_base() -> Path:
    return Path(os.path.expanduser("~")) / ".cache" / "kdlib"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$KDLIB_DATA``, else ``~/.cache/kdlib/data`` (not created)."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser()
    return _default_base() / "data"


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``path``, else ``$KDLIB_CACHE``, else ``~/.cache/kdlib/cache``; created on demand."""
    if path is not None:
        p = Path(path).expanduser()
    else:
        env = os.environ.get(ENV_CACHE)
        p = Path(env).expanduser() if env else _default_base() / "cache"
    p.mkdir(parents=True, exist_ok=True)
    return p


def writable_data_dir() -> Path:
    """Where derived data files go when the data root is read-only: ``cache_dir()/data`` (created)."""
    p = cache_dir() / "data"
    p.mkdir(parents=True, exist_ok=True)
    return p


def is_writable(path: str | os.PathLike) -> bool:
    """True if ``path`` (or its nearest existing parent) can be written to."""
    p = Path(path)
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    return os.access(p, os.W_OK)


def shared_data_dir() -> Path | None:
    """The project's verified data folder (``$KDLIB_SHARED_DATA`` or ``<repo>/../shared/data``), if present."""
    env = os.environ.get(ENV_SHARED_DATA)
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None
