"""Where an image dataset is found under a data root, in this order:

1. the compact cache ``<root>/<name>/{train,test}.npz`` (``images`` uint8 (N,H,W) or (N,H,W,C), ``labels``
   int64), also looked for under ``writable_data_dir()/<name>/``; ``<name>`` is ``fashion_mnist`` or
   ``cifar10`` (shared by ``cifar10`` and ``cifar10_reduced``);
2. torchvision's on-disk formats: ``<root>/FashionMNIST/raw/*-ubyte[.gz]`` (IDX) and
   ``<root>/cifar-10-batches-py/`` (python pickle batches), read by :mod:`kdlib.data.readers`;
3. with ``download=True``, a torchvision download into the root (or ``writable_data_dir()`` if the root is
   read-only), then 2.

Otherwise :func:`load_raw` raises ``FileNotFoundError`` naming the root, ``KDLIB_DATA``, ``download=True``
and the export command. Decoded arrays are memoised per process (:func:`clear_memo`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from kdlib.data.readers import (_FMNIST_FILES, CORRUPT_FILE_ERRORS, _find_idx, _read_cifar_batches,
                                _read_fmnist_raw, damaged_file_error, read_idx, read_npz)
from kdlib.names import IMAGE_DATASETS
from kdlib.paths import data_root, is_writable, writable_data_dir

_CACHE_NAME = {"fashion_mnist": "fashion_mnist", "cifar10": "cifar10", "cifar10_reduced": "cifar10"}


def _torchvision_download(name: str, root: Path) -> Path:
    """Download with torchvision into ``root`` (or ``writable_data_dir()`` if ``root`` is read-only)."""
    import torchvision

    target = root if is_writable(root) else writable_data_dir()
    target.mkdir(parents=True, exist_ok=True)
    if name == "fashion_mnist":
        for train in (True, False):
            torchvision.datasets.FashionMNIST(str(target), train=train, download=True)
    else:
        for train in (True, False):
            torchvision.datasets.CIFAR10(str(target), train=train, download=True)
    return target


# process-level memo of decoded raw arrays: repeated loads (many seeds in one process) skip decoding
_RAW_MEMO: dict[tuple, tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]] = {}


def clear_memo() -> None:
    """Forget raw arrays decoded earlier in this process."""
    _RAW_MEMO.clear()


def _search_locations(name: str, root: Path) -> list[tuple[str, Path]]:
    cache = _CACHE_NAME[name]
    locs = [("npz", root / cache), ("npz", writable_data_dir() / cache)]
    if cache == "fashion_mnist":
        locs += [("idx", root / "FashionMNIST" / "raw"), ("idx", writable_data_dir() / "FashionMNIST" / "raw")]
    else:
        locs += [("pickle", root / "cifar-10-batches-py"), ("pickle", writable_data_dir() / "cifar-10-batches-py")]
    return locs


def _try_read(kind: str, loc: Path) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    if kind == "npz":
        tr, te = loc / "train.npz", loc / "test.npz"
        if tr.is_file() and te.is_file():
            return {"train": read_npz(tr), "test": read_npz(te)}
        return None
    if kind == "idx":
        return _read_fmnist_raw(loc) if loc.is_dir() else None
    return _read_cifar_batches(loc) if loc.is_dir() else None


def missing_data_message(name: str, root: Path, searched: Sequence[Path] = ()) -> str:
    cache = _CACHE_NAME.get(name, name)
    where = "".join(f"\n  - {p}" for p in searched)
    return (f"{name}: no data found under the data root {root}.{(' Searched:' + where) if where else ''}\n"
            f"Fix one of:\n"
            f"  * point kdlib at a folder that holds it: load_dataset(..., root=DIR) or the env variable "
            f"KDLIB_DATA=DIR (CLI --data-root DIR);\n"
            f"  * let torchvision fetch it: download=True (CLI --download);\n"
            f"  * write the compact cache from a torchvision copy: python -m kdlib export --dataset {name} "
            f"--root DIR [--out OUT] (writes OUT/{cache}/{{train,test}}.npz).")


def load_raw(name: str, root: str | os.PathLike | None = None,
             download: bool = False) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """Raw uint8 images and int64 labels of an image dataset: ``({"train": (X, y), "test": (X, y)}, source)``.

    Images are (N, 28, 28) for Fashion-MNIST and (N, 32, 32, 3) HWC RGB for CIFAR-10, in the official order.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; choose one of: {', '.join(IMAGE_DATASETS)}")
    root = data_root(root)
    locs = _search_locations(name, root)
    for kind, loc in locs:
        key = (_CACHE_NAME[name], kind, str(loc.resolve()) if loc.exists() else str(loc))
        if key in _RAW_MEMO:
            return _RAW_MEMO[key]
        arrays = _try_read(kind, loc)
        if arrays is not None:
            res = (arrays, f"real: {loc}")
            _RAW_MEMO[key] = res
            return res
    if download:
        target = _torchvision_download(name, root)
        sub = target / ("FashionMNIST/raw" if _CACHE_NAME[name] == "fashion_mnist" else "cifar-10-batches-py")
        arrays = _try_read("idx" if _CACHE_NAME[name] == "fashion_mnist" else "pickle", sub)
        if arrays is not None:
            return arrays, f"real (downloaded): {sub}"
    raise FileNotFoundError(missing_data_message(name, root, [p for _, p in locs]))


def load_labels(name: str, root: str | os.PathLike | None = None, split: str = "train") -> np.ndarray:
    """Only the int64 labels of an image dataset split, in the official order (cheap: an npz cache reads
    just its ``labels`` entry, Fashion-MNIST just its label file)."""
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; choose one of: {', '.join(IMAGE_DATASETS)}")
    r = data_root(root)
    locs = _search_locations(name, r)
    for kind, loc in locs:
        if kind == "npz" and (loc / f"{split}.npz").is_file():
            try:
                with np.load(loc / f"{split}.npz") as f:
                    return np.asarray(f["labels"]).astype(np.int64)
            except CORRUPT_FILE_ERRORS as e:
                raise damaged_file_error(loc / f"{split}.npz", e, "a kdlib npz cache with 'labels'") from e
        if kind == "idx" and loc.is_dir():
            p = _find_idx(loc, _FMNIST_FILES[split][1])
            if p is not None:
                return read_idx(p).astype(np.int64)
        if kind == "pickle" and loc.is_dir():
            arrays = _try_read(kind, loc)
            if arrays is not None:
                return arrays[split][1]
    raise FileNotFoundError(missing_data_message(name, r, [p for _, p in locs]))
