"""Shared fixtures: an isolated KDLIB_DATA / KDLIB_CACHE per test, and writers of tiny files in the real
on-disk formats (Fashion-MNIST IDX gzip, CIFAR-10 python pickle batches, kdlib's npz cache)."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, with the reason, where torch sees no CUDA device (``tools/gpu_check.py`` runs
    them on a GPU: ``pytest -m cuda``)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (tools/gpu_check.py runs the cuda-marked tests on a GPU)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The suite's models are tiny: on a shared 2-core machine one intra-op thread is several times faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def isolated_kdlib_env(tmp_path, monkeypatch):
    """Every test gets its own empty data root and cache: nothing is read from or written to ~/.cache."""
    data = tmp_path / "kdlib_data"
    cache = tmp_path / "kdlib_cache"
    data.mkdir()
    monkeypatch.setenv("KDLIB_DATA", str(data))
    monkeypatch.setenv("KDLIB_CACHE", str(cache))
    yield {"data": data, "cache": cache}


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory) -> Path:
    """One KDLIB_CACHE folder for a whole test module (see :func:`shared_module_cache`)."""
    return tmp_path_factory.mktemp("module_cache")


@pytest.fixture
def shared_module_cache(module_cache, monkeypatch) -> Path:
    """Point KDLIB_CACHE (for this process and the CLI processes a test starts) at the module's one cache, so
    that an expensive teacher (the synthetic one: 20,000 SGD steps) is trained once per module. A module opts
    in with ``pytestmark = pytest.mark.usefixtures("shared_module_cache")``."""
    monkeypatch.setenv("KDLIB_CACHE", str(module_cache))
    return module_cache


def write_idx_gz(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8) as a gzipped IDX file, as in the official Fashion-MNIST archives."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())
    return path


def make_fmnist_root(root: Path, n_train: int = 30, n_test: int = 10, seed: int = 0):
    """Fabricated Fashion-MNIST in torchvision's layout ``root/FashionMNIST/raw/*-ubyte.gz``."""
    rng = np.random.default_rng(seed)
    xtr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    ytr = rng.integers(0, 10, n_train).astype(np.uint8)
    xte = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    yte = rng.integers(0, 10, n_test).astype(np.uint8)
    raw = root / "FashionMNIST" / "raw"
    write_idx_gz(raw / "train-images-idx3-ubyte.gz", xtr)
    write_idx_gz(raw / "train-labels-idx1-ubyte.gz", ytr)
    write_idx_gz(raw / "t10k-images-idx3-ubyte.gz", xte)
    write_idx_gz(raw / "t10k-labels-idx1-ubyte.gz", yte)
    return (xtr, ytr.astype(np.int64)), (xte, yte.astype(np.int64))


def make_cifar_root(root: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0):
    """Fabricated CIFAR-10 python batches ``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``.

    Returns HWC uint8 arrays in the official order (data_batch_1 first)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    imgs, labs = [], []
    for i in range(1, 6):
        chw = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        lab = rng.integers(0, 10, per_batch).tolist()
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"batch_label": f"training batch {i} of 5".encode(), b"labels": lab,
                         b"data": chw.reshape(per_batch, -1), b"filenames": [b"x.png"] * per_batch}, f)
        imgs.append(chw.transpose(0, 2, 3, 1))
        labs.append(np.asarray(lab, dtype=np.int64))
    chw = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    lab = rng.integers(0, 10, n_test).tolist()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"batch_label": b"testing batch 1 of 1", b"labels": lab,
                     b"data": chw.reshape(n_test, -1), b"filenames": [b"x.png"] * n_test}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                                      b"horse", b"ship", b"truck"], b"num_cases_per_batch": per_batch,
                     b"num_vis": 3072}, f)
    return ((np.concatenate(imgs), np.concatenate(labs)),
            (chw.transpose(0, 2, 3, 1).copy(), np.asarray(lab, dtype=np.int64)))


def make_cifar_npz(root: Path, n_train: int, n_test: int = 20, seed: int = 0, random_pixels: bool = False):
    """Fabricated compact cache ``root/cifar10/{train,test}.npz`` (uncompressed, fast to write)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    if random_pixels:
        xtr = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    else:
        xtr = np.zeros((n_train, 32, 32, 3), dtype=np.uint8)
        xtr[:, 0, 0, 0] = np.arange(n_train) % 256  # a per-image marker
    ytr = rng.integers(0, 10, n_train).astype(np.int64)
    xte = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    yte = rng.integers(0, 10, n_test).astype(np.int64)
    np.savez(folder / "train.npz", images=xtr, labels=ytr)
    np.savez(folder / "test.npz", images=xte, labels=yte)
    return (xtr, ytr), (xte, yte)


def shared_data() -> Path | None:
    """The verified data folder (env KDLIB_SHARED_DATA, else ../shared/data next to the repo), if any."""
    from kdlib.paths import shared_data_dir

    return shared_data_dir()


def random_image_problem(n_train: int = 32, n_val: int = 16, n_test: int = 24):
    """A CIFAR-shaped problem of random tensors (train with teacher logits, val, test) for the CIFAR student."""
    import torch

    from kdlib.models import CifarStudent
    from kdlib.train import Problem, Split

    n = n_train + n_val + n_test
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    t = 3 * torch.randn(n, 10, generator=g)
    a, b = n_train, n_train + n_val
    return Problem(train=Split(x[:a], y[:a], t[:a]), val=Split(x[a:b], y[a:b]), test=Split(x[b:], y[b:]),
                   make_student=CifarStudent)


def assert_same_history(got, ref, rows: int, abs_tol: float, rel_tol: float,
                        accuracy_tol: float | None = None) -> None:
    """Two runs' logged rows agree: the same schedule bookkeeping exactly (step, epoch, hypergradient and NaN-skip
    counts, phase, lr), (lambda1, T) within ``abs_tol``, L_val within ``rel_tol``, and, when ``accuracy_tol`` is
    given, the test accuracy within it. ``got``/``ref``: objects with a ``history`` list."""
    import pytest

    assert len(got.history) == len(ref.history) == rows
    for a, b in zip(got.history, ref.history):
        for k in ("step", "epoch", "hypergrad_evals", "nan_skipped", "phase", "lr"):
            assert a[k] == b[k], k
        assert a["lambda1"] == pytest.approx(b["lambda1"], abs=abs_tol)
        assert a["temperature"] == pytest.approx(b["temperature"], abs=abs_tol)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=rel_tol)
        if accuracy_tol is not None:
            assert abs(a["test_accuracy"] - b["test_accuracy"]) <= accuracy_tol
