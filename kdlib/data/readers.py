"""Readers of the on-disk image formats, parsed here so that a read-only data root works: IDX files
(Fashion-MNIST, gzipped or not), CIFAR-10 python pickle batches, and kdlib's compact npz cache (which
:func:`write_npz` writes). A damaged, truncated or foreign file raises :class:`kdlib.errors.DataFileError`
naming the file, what it should hold and the fix.
"""
from __future__ import annotations

import gzip
import lzma
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from kdlib.errors import DataFileError
from kdlib.fileio import atomic_open

_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# what a damaged, truncated or foreign file raises inside numpy / zipfile / gzip / lzma / pickle
CORRUPT_FILE_ERRORS = (zipfile.BadZipFile, lzma.LZMAError, EOFError, zlib.error, gzip.BadGzipFile,
                       pickle.UnpicklingError, struct.error, KeyError, ValueError, OSError)


def damaged_file_error(path: str | os.PathLike, err: BaseException, expected: str, fix: str | None = None
                       ) -> DataFileError:
    """A :class:`DataFileError` naming the file, what it should hold, what reading it raised, and the fix."""
    fix = fix or ("replace it with an intact copy (copy it again, or rebuild the cache with "
                  "`python -m kdlib export --dataset NAME --root DIR`), or delete it to fall back on the "
                  "next location")
    what = f"{type(err).__name__}: {err}".strip().rstrip(":")
    return DataFileError(f"{path}: cannot be read as {expected}: the file is damaged, truncated or of "
                         f"another format ({what}); fix: {fix}")


def read_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a compact-cache npz: ``(images uint8, labels int64)``. LZMA-zipped npz files load too.

    A damaged file raises :class:`kdlib.errors.DataFileError` naming it."""
    try:
        with np.load(Path(path)) as f:
            images = np.asarray(f["images"])
            labels = np.asarray(f["labels"]).astype(np.int64)
    except FileNotFoundError:
        raise
    except CORRUPT_FILE_ERRORS as e:
        raise damaged_file_error(path, e, "a kdlib npz cache (arrays 'images' uint8 and 'labels' int64)") from e
    if images.dtype != np.uint8:
        raise DataFileError(f"{path}: images must be uint8, found {images.dtype}; fix: rebuild the cache with "
                            f"`python -m kdlib export`")
    if len(images) != len(labels):
        raise DataFileError(f"{path}: expected one label per image, found {len(images)} images but "
                            f"{len(labels)} labels; fix: rebuild the cache with `python -m kdlib export`")
    return images, labels


def write_npz(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, compress: bool = True) -> Path:
    """Write ``images`` (uint8) and ``labels`` (int64) in the compact-cache format (atomically)."""
    path = Path(path)
    saver = np.savez_compressed if compress else np.savez
    with atomic_open(path, "wb") as fh:
        saver(fh, images=np.ascontiguousarray(images, dtype=np.uint8), labels=np.asarray(labels, dtype=np.int64))
    return path


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (MNIST format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    expected = "an IDX file (MNIST format)" + (", gzipped" if path.suffix == ".gz" else "")
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise
    except CORRUPT_FILE_ERRORS as e:
        raise damaged_file_error(path, e, expected, "copy the official file again (or pass --download to "
                                                    "fetch it)") from e
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] not in dtypes:
        raise DataFileError(f"{path}: expected {expected}, found no IDX header; fix: copy the official file "
                            f"again (or pass --download to fetch it)")
    dtype_code, ndim = data[2], data[3]
    try:
        dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    except (struct.error, ValueError) as e:
        raise damaged_file_error(path, e, expected, "copy the official file again") from e
    if arr.size != int(np.prod(dims)):
        raise DataFileError(f"{path}: expected {int(np.prod(dims))} values (header dims {dims}), found "
                            f"{arr.size}: the file is truncated; fix: copy the official file again")
    return arr.reshape(dims)


def _find_idx(raw: Path, stem: str) -> Path | None:
    for cand in (raw / stem, raw / (stem + ".gz")):
        if cand.is_file():
            return cand
    return None


def _read_fmnist_raw(raw: Path) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    out = {}
    for split, (img_stem, lab_stem) in _FMNIST_FILES.items():
        ip, lp = _find_idx(raw, img_stem), _find_idx(raw, lab_stem)
        if ip is None or lp is None:
            return None
        out[split] = (read_idx(ip).astype(np.uint8), read_idx(lp).astype(np.int64))
    return out


def _read_cifar_batches(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    if not all((folder / n).is_file() for ns in names.values() for n in ns):
        return None
    out = {}
    for split, files in names.items():
        imgs, labs = [], []
        for n in files:
            try:
                with open(folder / n, "rb") as f:
                    d = pickle.load(f, encoding="bytes")
                data = d.get(b"data", d.get("data"))
                labels = d.get(b"labels", d.get("labels"))
                imgs.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                labs.append(np.asarray(labels, dtype=np.int64))
            except (*CORRUPT_FILE_ERRORS, AttributeError, TypeError) as e:
                raise damaged_file_error(folder / n, e, "a CIFAR-10 python batch (pickled dict with data and "
                                                        "labels)", "copy cifar-10-batches-py again") from e
        out[split] = (np.ascontiguousarray(np.concatenate(imgs)), np.concatenate(labs))
    return out
