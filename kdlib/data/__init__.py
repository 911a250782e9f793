"""Datasets of the paper (Sec. 4): the synthetic XOR-like problem (Sec. 4.1), Fashion-MNIST and CIFAR-10
(full and reduced, Sec. 4.2), held as tensors in memory and cut into batches by indexing.

Every split keeps ``index``: the row of each example in its source array (the official training order for
images, the position in the generated array for the synthetic data). Teacher logits are tables indexed by
that number (see :mod:`kdlib.teachers`), exactly as the authors' unshuffled loaders consumed them.

Image data is read, in this order, from

1. the compact cache ``<root>/<name>/{train,test}.npz`` (``images`` uint8 (N,H,W) or (N,H,W,C), ``labels``
   int64), also looked for under ``writable_data_dir()/<name>/``; ``<name>`` is ``fashion_mnist`` or
   ``cifar10`` (shared by ``cifar10`` and ``cifar10_reduced``);
2. torchvision's on-disk formats: ``<root>/FashionMNIST/raw/*-ubyte[.gz]`` (IDX, parsed here, so a
   read-only root works) and ``<root>/cifar-10-batches-py/`` (python pickle batches, parsed here);
3. with ``download=True``, a torchvision download into the root (or ``writable_data_dir()`` if the root is
   read-only), then 2.

Otherwise :func:`load_dataset` raises ``FileNotFoundError`` naming the root, ``KDLIB_DATA``, ``download=True``
and the export command.
"""
from __future__ import annotations

import argparse
import gzip
import lzma
import os
import pickle
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from kdlib.errors import DataFileError
from kdlib.names import DATASETS, IMAGE_DATASETS
from kdlib.paths import data_root, is_writable, writable_data_dir

# ----------------------------------------------------------------------------------------------------------
# constants
# ----------------------------------------------------------------------------------------------------------
AUTHORS_SEED = 42  # the authors' np.random.seed / torch.manual_seed (notebooks/synthetic_data_experiment.ipynb)

# normalization constants from the authors' code (code/cifar_dataset.py, the FMNIST notebook)
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
FMNIST_MEAN = (0.286,)
FMNIST_STD = (0.315,)

CIFAR_REDUCED_SIZE = 12800  # Sec. 4: |D| = 12800 for the reduced CIFAR-10 experiment

# synthetic layout (Sec. 4.1 and the authors' notebook): 200 teacher-train / 15 student-train / 15 spare / 200 test
SYN_TEACHER, SYN_STUDENT, SYN_SPARE, SYN_TEST = 200, 15, 15, 200
SYN_TOTAL = SYN_TEACHER + SYN_STUDENT + SYN_SPARE + SYN_TEST  # 430
SYN_HOLDOUT = 200
SYN_NOISE_STD = 0.5

_CACHE_NAME = {"fashion_mnist": "fashion_mnist", "cifar10": "cifar10", "cifar10_reduced": "cifar10"}
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ----------------------------------------------------------------------------------------------------------
# containers
# ----------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------
# synthetic data (Sec. 4.1)
# ----------------------------------------------------------------------------------------------------------
def _synthetic_features(x12: np.ndarray, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """(teacher_feature, student_feature) from x1, x2 for the given variant."""
    s1, s2 = np.sign(x12[:, 0]), np.sign(x12[:, 1])
    if variant == "paper":
        student = ((s1 + s2) > 0).astype(np.float64)  # [sign x1 + sign x2 > 0]: both positive
        teacher = ((s1 + s2 + 0.1) > 0).astype(np.float64)  # [sign x1 + sign x2 + 0.1 > 0]
    elif variant == "authors":
        student = np.sign(x12[:, 0] * x12[:, 1])  # sign(x1 x2) in {-1, +1}: the noise-free XOR
        teacher = ((s1 + s2) > 0.1).astype(np.float64)  # [sign x1 + sign x2 > 0.1]
    else:
        raise ValueError(f"unknown synthetic variant {variant!r}; choose 'paper' or 'authors'")
    return teacher, student


def synthetic_arrays(seed: int = AUTHORS_SEED, variant: str = "paper",
                     holdout: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The raw synthetic draw: ``x`` (N, 4) float64 = [x1, x2, teacher_feature, student_feature], ``y`` int64.

    Reproduces the authors' exact numpy call order (notebooks/synthetic_data_experiment.ipynb, cell "Data
    preparation"): after ``np.random.seed(42)``, ``x = randn(430, 2)``, then ``noise = randn(430) * 0.5`` and
    ``y = (sign(x1 x2 + noise) + 1) // 2``. Here a private ``np.random.RandomState(seed)`` replaces the global
    state, which gives the same numbers. 0.5 is the noise STANDARD DEVIATION (the paper writes N(0, 0.5)).
    With ``holdout=True``, 200 more points are drawn afterwards in the same order (x, then noise), so the
    first 430 rows are unchanged.
    """
    rs = np.random.RandomState(seed)
    x12 = rs.randn(SYN_TOTAL, 2)
    noise = rs.randn(SYN_TOTAL) * SYN_NOISE_STD
    if holdout:
        x12 = np.concatenate([x12, rs.randn(SYN_HOLDOUT, 2)])
        noise = np.concatenate([noise, rs.randn(SYN_HOLDOUT) * SYN_NOISE_STD])
    y = ((np.sign(x12[:, 0] * x12[:, 1] + noise) + 1) // 2).astype(np.int64)
    teacher, student = _synthetic_features(x12, variant)
    x = np.stack([x12[:, 0], x12[:, 1], teacher, student], axis=1)
    return x, y


def synthetic(seed: int = AUTHORS_SEED, variant: str = "paper", holdout: bool = False) -> DataBundle:
    """The synthetic dataset of Sec. 4.1.

    430 points, x1, x2 ~ N(0, 1), y = [x1 x2 + delta > 0] with delta ~ N(0, 0.5^2) (std 0.5, as the authors'
    code draws it), split in order: 200 teacher-train / 15 student-train / 15 spare (unused) / 200 test. As in
    the paper, D_val = D_test: ``train_full = train`` = the 15 student points and ``val = test``.
    ``holdout=True`` draws 200 extra points after the 430 and uses them as ``val``, leaving ``test`` untouched.

    Columns of ``x``: [x1, x2, teacher_feature, student_feature]; ``meta["student_cols"] = [0, 1, 3]``,
    ``meta["teacher_cols"] = [0, 1, 2]``.

    * ``variant="paper"`` (Sec. 4.1 text): student feature [sign x1 + sign x2 > 0], teacher feature
      [sign x1 + sign x2 + 0.1 > 0].
    * ``variant="authors"`` (their code): student feature sign(x1 x2) (values -1/+1), teacher feature
      [sign x1 + sign x2 > 0.1].

    ``seed=42`` is the authors' draw (the default).
    """
    x_np, y_np = synthetic_arrays(seed=seed, variant=variant, holdout=holdout)
    x = torch.tensor(x_np, dtype=torch.float32)
    y = torch.tensor(y_np, dtype=torch.long)
    allsplit = ArraySplit(x, y, torch.arange(len(y), dtype=torch.long))
    a, b, c = SYN_TEACHER, SYN_TEACHER + SYN_STUDENT, SYN_TEACHER + SYN_STUDENT + SYN_SPARE
    teacher_train = allsplit.take(slice(0, a))
    student = allsplit.take(slice(a, b))
    spare = allsplit.take(slice(b, c))
    test = allsplit.take(slice(c, SYN_TOTAL))
    val = allsplit.take(slice(SYN_TOTAL, SYN_TOTAL + SYN_HOLDOUT)) if holdout else test
    source = f"synthetic ({variant} variant, seed {seed}{', holdout val' if holdout else ''})"
    meta = dict(student_cols=[0, 1, 3], teacher_cols=[0, 1, 2], variant=variant, seed=seed, holdout=holdout,
                sizes=dict(teacher_train=a, student_train=SYN_STUDENT, spare=SYN_SPARE, test=SYN_TEST,
                           holdout=SYN_HOLDOUT if holdout else 0),
                val_is_test=not holdout, spare=spare, all=allsplit, n_source=len(y))
    return DataBundle("synthetic", student, student, val, test, teacher_train, 2, source, meta)


# ----------------------------------------------------------------------------------------------------------
# raw image readers
# ----------------------------------------------------------------------------------------------------------
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
    """Write ``images`` (uint8) and ``labels`` (int64) in the compact-cache format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    saver = np.savez_compressed if compress else np.savez
    saver(tmp, images=np.ascontiguousarray(images, dtype=np.uint8), labels=np.asarray(labels, dtype=np.int64))
    os.replace(tmp, path)
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


# ----------------------------------------------------------------------------------------------------------
# image bundles (Sec. 4.2)
# ----------------------------------------------------------------------------------------------------------
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


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False, seed: int = 0,
                 n_train: int | None = None, n_test: int | None = None, variant: str = "paper",
                 holdout: bool = False, split_seed: int | None = None) -> DataBundle:
    """Load one of ``synthetic``, ``fashion_mnist``, ``cifar10_reduced``, ``cifar10`` (Sec. 4).

    * ``seed`` (synthetic only) is an OFFSET to the authors' seed: the draw uses ``42 + seed``, so the default
      ``seed=0`` is exactly the authors' seed-42 data used for every run of Table 2. Pass the same ``seed`` for
      all runs to keep the paper's protocol (one dataset, many model seeds). ``variant``/``holdout``: see
      :func:`synthetic`. ``n_train``/``n_test``/``split_seed`` are ignored for the synthetic data.
    * Images: ``train_full`` is D (the first ``n_train`` official training images, before the split; for
      ``cifar10_reduced`` at most the first 12,800), split 9:1 into ``train``/``val`` by
      :func:`split_train_val`; ``test`` is the first ``n_test`` official test images. Sizes:
      ``fashion_mnist`` 60,000 -> 54,000/6,000; ``cifar10_reduced`` 12,800 -> 11,520/1,280;
      ``cifar10`` 50,000 -> 45,000/5,000. ``holdout`` is ignored (the image datasets already tune on val).
    """
    if name == "synthetic":
        return synthetic(seed=AUTHORS_SEED + int(seed), variant=variant, holdout=holdout)
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return _image_bundle(name, root, download, n_train, n_test, split_seed)


# ----------------------------------------------------------------------------------------------------------
# export to the compact cache
# ----------------------------------------------------------------------------------------------------------
def export_npz(name: str, root: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
               download: bool = False, compress: bool = True) -> list[Path]:
    """Write ``<out>/<cache name>/{train,test}.npz`` from whatever copy :func:`load_raw` finds under ``root``.

    ``out`` defaults to the data root if writable, else ``writable_data_dir()``. Returns the written paths.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; choose one of: {', '.join(IMAGE_DATASETS)}")
    arrays, _ = load_raw(name, root, download)
    r = data_root(root)
    base = Path(out) if out is not None else (r if is_writable(r) else writable_data_dir())
    folder = base / _CACHE_NAME[name]
    paths = []
    for split in ("train", "test"):
        images, labels = arrays[split]
        paths.append(write_npz(folder / f"{split}.npz", images, labels, compress=compress))
    return paths


def export_main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: ``export --dataset NAME [--root R] [--out DIR] [--download] [--no-compress]``."""
    p = argparse.ArgumentParser(prog="kdlib export",
                                description="Write a dataset into kdlib's compact npz cache "
                                            "(<out>/<name>/{train,test}.npz).")
    p.add_argument("--dataset", required=True, choices=["fashion_mnist", "cifar10"])
    p.add_argument("--root", default=None, help="data root to read (default: $KDLIB_DATA or ~/.cache/kdlib/data)")
    p.add_argument("--out", default=None, help="output base folder (default: the root if writable)")
    p.add_argument("--download", action="store_true", help="download with torchvision if not found")
    p.add_argument("--no-compress", action="store_true", help="write uncompressed npz (faster to load)")
    a = p.parse_args(list(argv) if argv is not None else None)
    paths = export_npz(a.dataset, root=a.root, out=a.out, download=a.download, compress=not a.no_compress)
    for path in paths:
        images, labels = read_npz(path)
        print(f"wrote {path}: images {images.shape} {images.dtype}, labels {labels.shape}")
    return 0
