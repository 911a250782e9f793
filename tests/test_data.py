"""kdlib.data: synthetic generator (Sec. 4.1), image loaders in the real formats, splits, export, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_cifar_npz, make_cifar_root, make_fmnist_root
from kdlib import data as D
from kdlib.paths import cache_dir, data_root, writable_data_dir


# ---------------------------------------------------------------------------------------------- synthetic
def _reference_draw(seed: int, n: int = 430):
    """Independent re-statement of the authors' notebook: randn(430, 2), then randn(430) * 0.5."""
    rs = np.random.RandomState(seed)
    x = rs.randn(n, 2)
    noise = rs.randn(n) * 0.5
    return x, noise


def test_synthetic_matches_authors_draw_and_paper_definitions():
    b = D.synthetic()  # seed 42, paper variant
    x = b.meta["all"].x.numpy().astype(np.float64)
    y = b.meta["all"].y.numpy()
    xr, noise = _reference_draw(42)
    np.testing.assert_allclose(x[:, :2], xr, rtol=0, atol=1e-6)  # float32 copy of the float64 draw
    # y = [x1 x2 + delta > 0], delta = 0.5 * N(0, 1)
    np.testing.assert_array_equal(y, (xr[:, 0] * xr[:, 1] + noise > 0).astype(np.int64))
    s1, s2 = np.sign(xr[:, 0]), np.sign(xr[:, 1])
    np.testing.assert_array_equal(x[:, 3], ((s1 + s2) > 0).astype(float))  # student: both positive
    np.testing.assert_array_equal(x[:, 2], ((s1 + s2 + 0.1) > 0).astype(float))  # teacher: not both negative
    assert b.meta["student_cols"] == [0, 1, 3] and b.meta["teacher_cols"] == [0, 1, 2]
    assert set(np.unique(y)) == {0, 1}
    # the labels follow sign(x1 x2) most of the time (noise std 0.5), not always
    agree = np.mean(y == (xr[:, 0] * xr[:, 1] > 0))
    assert 0.7 < agree < 0.95


def test_synthetic_split_layout():
    b = D.synthetic()
    assert len(b.teacher_train) == 200 and len(b.train_full) == 15 and len(b.test) == 200
    assert b.train is b.train_full and b.val is b.test  # D_val = D_test as in the paper
    assert b.teacher_train.index.tolist() == list(range(0, 200))
    assert b.train.index.tolist() == list(range(200, 215))
    assert b.meta["spare"].index.tolist() == list(range(215, 230))
    assert b.test.index.tolist() == list(range(230, 430))
    assert b.num_classes == 2
    assert b.train.x.dtype == torch.float32 and b.train.y.dtype == torch.int64
    allsplit = b.meta["all"]
    for s in (b.teacher_train, b.train, b.test):
        torch.testing.assert_close(s.x, allsplit.x[s.index])


def test_synthetic_variants_differ_as_documented():
    p = D.synthetic(variant="paper")
    a = D.synthetic(variant="authors")
    xp, xa = p.meta["all"].x.numpy(), a.meta["all"].x.numpy()
    np.testing.assert_array_equal(xp[:, :2], xa[:, :2])  # same draw
    np.testing.assert_array_equal(p.meta["all"].y.numpy(), a.meta["all"].y.numpy())
    x1, x2 = xa[:, 0].astype(np.float64), xa[:, 1].astype(np.float64)
    s1, s2 = np.sign(x1), np.sign(x2)
    np.testing.assert_array_equal(xa[:, 3], np.sign(x1 * x2))  # authors' student: sign(x1 x2) in {-1, 1}
    np.testing.assert_array_equal(xa[:, 2], ((s1 + s2) > 0.1).astype(float))  # authors' teacher: > 0.1
    assert set(np.unique(xa[:, 3])) == {-1.0, 1.0}
    assert not np.array_equal(xp[:, 2], xa[:, 2]) and not np.array_equal(xp[:, 3], xa[:, 3])
    # the two teacher features differ exactly on the mixed-sign points
    mixed = s1 != s2
    np.testing.assert_array_equal(xp[:, 2] != xa[:, 2], mixed)
    with pytest.raises(ValueError, match="variant"):
        D.synthetic(variant="nope")


def test_synthetic_holdout_keeps_first_430():
    base = D.synthetic()
    h = D.synthetic(holdout=True)
    torch.testing.assert_close(h.meta["all"].x[:430], base.meta["all"].x)
    assert torch.equal(h.meta["all"].y[:430], base.meta["all"].y)
    assert len(h.val) == 200 and h.val.index.tolist() == list(range(430, 630))
    assert torch.equal(h.test.index, base.test.index) and torch.equal(h.test.y, base.test.y)
    assert set(h.val.index.tolist()).isdisjoint(h.test.index.tolist())
    # the extra points follow the same law, drawn after the first 430 (x first, then noise)
    rs = np.random.RandomState(42)
    rs.randn(430, 2), rs.randn(430)
    np.testing.assert_allclose(h.val.x[:, :2].numpy(), rs.randn(200, 2), atol=1e-6)


def test_load_dataset_synthetic_seed_offset():
    b0 = D.load_dataset("synthetic")
    assert torch.equal(b0.meta["all"].x, D.synthetic(seed=42).meta["all"].x)
    b1 = D.load_dataset("synthetic", seed=1)
    assert torch.equal(b1.meta["all"].x, D.synthetic(seed=43).meta["all"].x)
    assert not torch.equal(b0.meta["all"].x, b1.meta["all"].x)


# ---------------------------------------------------------------------------------------------- batches
def test_batches_cover_and_shuffle_deterministically():
    s = D.ArraySplit(torch.randn(23, 4), torch.arange(23) % 2, torch.arange(100, 123))
    got = [p for _, _, p in s.batches(5)]
    assert [len(p) for p in got] == [5, 5, 5, 5, 3]
    assert torch.equal(torch.cat(got), torch.arange(23))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = torch.cat([p for _, _, p in s.batches(5, shuffle=True, generator=g1)])
    b = torch.cat([p for _, _, p in s.batches(5, shuffle=True, generator=g2)])
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(23)) and not torch.equal(a, torch.arange(23))
    for xb, yb, pos in s.batches(7, shuffle=True, generator=g1):
        assert torch.equal(xb, s.x[pos]) and torch.equal(yb, s.y[pos])
    (only,) = list(s.batches(None))
    assert len(only[2]) == 23
    sub = s.take(torch.tensor([3, 1]))
    assert sub.index.tolist() == [103, 101] and len(sub) == 2


# ---------------------------------------------------------------------------------------------- images
def test_fashion_mnist_from_idx_gz(tmp_path):
    (xtr, ytr), (xte, yte) = make_fmnist_root(tmp_path / "root", n_train=30, n_test=10)
    b = D.load_dataset("fashion_mnist", root=tmp_path / "root")
    assert b.name == "fashion_mnist" and b.num_classes == 10 and b.teacher_train is None
    assert b.train_full.x.shape == (30, 1, 28, 28) and b.test.x.shape == (10, 1, 28, 28)
    assert (len(b.train), len(b.val)) == (27, 3)
    expect = (xtr.astype(np.float32) / 255 - 0.286) / 0.315
    np.testing.assert_allclose(b.train_full.x[:, 0].numpy(), expect, rtol=1e-5, atol=1e-5)
    assert b.train_full.y.tolist() == ytr.tolist() and b.test.y.tolist() == yte.tolist()
    assert b.train_full.index.tolist() == list(range(30))
    assert "FashionMNIST" in b.source


def test_cifar_from_pickle_batches_official_order_and_layout(tmp_path):
    (xtr, ytr), (xte, yte) = make_cifar_root(tmp_path / "root", per_batch=4, n_test=6)
    b = D.load_dataset("cifar10", root=tmp_path / "root")
    assert b.train_full.x.shape == (20, 3, 32, 32) and len(b.test) == 6
    assert b.train_full.y.tolist() == ytr.tolist()  # data_batch_1..5 concatenated in order
    mean = np.array([125.3, 123.0, 113.9]) / 255
    std = np.array([63.0, 62.1, 66.7]) / 255
    expect = ((xtr.astype(np.float32) / 255 - mean) / std).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(b.train_full.x.numpy(), expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.test.x.numpy(), ((xte / 255 - mean) / std).transpose(0, 3, 1, 2),
                               rtol=1e-5, atol=1e-5)
    assert (len(b.train), len(b.val)) == (18, 2)


def test_npz_cache_has_priority_and_writable_dir_is_searched(tmp_path):
    root = tmp_path / "root"
    make_cifar_root(root, per_batch=4)
    (xtr, ytr), _ = make_cifar_npz(root, n_train=30, n_test=5)
    b = D.load_dataset("cifar10", root=root)
    assert len(b.train_full) == 30 and "cifar10" in b.source and b.train_full.y.tolist() == ytr.tolist()
    # a read-only style root without data, the cache in writable_data_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    (xtr2, ytr2), _ = make_cifar_npz(writable_data_dir(), n_train=40, n_test=5, seed=1)
    b2 = D.load_dataset("cifar10_reduced", root=empty)
    assert len(b2.train_full) == 40 and b2.train_full.y.tolist() == ytr2.tolist()
    assert str(writable_data_dir()) in b2.source


def test_export_then_read_gives_same_tensors(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    (xtr, ytr), (xte, yte) = make_cifar_root(root, per_batch=3, n_test=4)
    make_fmnist_root(root, n_train=20, n_test=5)
    paths = D.export_npz("cifar10", root=root, out=out)
    assert [p.name for p in paths] == ["train.npz", "test.npz"] and paths[0].parent == out / "cifar10"
    images, labels = D.read_npz(paths[0])
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images, xtr)
    np.testing.assert_array_equal(labels, ytr)
    from_pickle = D.load_dataset("cifar10", root=root)
    from_npz = D.load_dataset("cifar10", root=out)
    for name in ("train_full", "train", "val", "test"):
        a, c = getattr(from_pickle, name), getattr(from_npz, name)
        assert torch.equal(a.x, c.x) and torch.equal(a.y, c.y) and torch.equal(a.index, c.index)
    # the CLI entry, for Fashion-MNIST, uncompressed
    assert D.export_main(["--dataset", "fashion_mnist", "--root", str(root), "--out", str(out),
                          "--no-compress"]) == 0
    fm_img, _ = D.read_npz(out / "fashion_mnist" / "train.npz")
    assert fm_img.shape == (20, 28, 28)
    a, c = D.load_dataset("fashion_mnist", root=root), D.load_dataset("fashion_mnist", root=out)
    assert torch.equal(a.train_full.x, c.train_full.x) and torch.equal(a.test.y, c.test.y)


def test_download_flag_uses_torchvision(tmp_path, monkeypatch):
    import torchvision

    root = tmp_path / "dl"
    calls = []

    class FakeFMNIST:
        def __init__(self, r, train=True, download=False):
            calls.append((r, train, download))
            make_fmnist_root(__import__("pathlib").Path(r), n_train=20, n_test=5)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFMNIST)
    with pytest.raises(FileNotFoundError):
        D.load_dataset("fashion_mnist", root=root)
    b = D.load_dataset("fashion_mnist", root=root, download=True)
    assert len(b.train_full) == 20 and calls and all(c[2] for c in calls)


# ---------------------------------------------------------------------------------------------- splits
def test_split_train_val_disjoint_cover_and_seeded():
    for n in (10, 101, 12800):
        for seed in (None, 0, 7):
            tr, va = D.split_train_val(n, seed)
            assert len(va) == n // 10 and len(tr) == n - n // 10
            assert set(tr.tolist()).isdisjoint(va.tolist())
            assert sorted(tr.tolist() + va.tolist()) == list(range(n))
    tr, va = D.split_train_val(100, None)
    assert tr.tolist() == list(range(90)) and va.tolist() == list(range(90, 100))  # the authors' order
    a, b = D.split_train_val(100, 5), D.split_train_val(100, 5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(D.split_train_val(100, 6)[1], a[1])


def test_cifar10_reduced_sizes_and_subsetting(tmp_path):
    root = tmp_path / "root"
    (xtr, ytr), _ = make_cifar_npz(root, n_train=12900, n_test=30)
    b = D.load_dataset("cifar10_reduced", root=root)
    assert (len(b.train_full), len(b.train), len(b.val), len(b.test)) == (12800, 11520, 1280, 30)
    assert b.train_full.index.tolist() == list(range(12800))
    assert b.train.index.tolist() == list(range(11520)) and b.val.index.tolist() == list(range(11520, 12800))
    full = D.load_dataset("cifar10", root=root)
    assert (len(full.train), len(full.val)) == (11610, 1290)  # 12900 -> 9:1
    # n_train before the split, n_test the first test images; index stays the original training index
    s = D.load_dataset("cifar10_reduced", root=root, n_train=640, n_test=10, split_seed=3)
    assert (len(s.train_full), len(s.train), len(s.val), len(s.test)) == (640, 576, 64, 10)
    assert set(s.train.index.tolist()) | set(s.val.index.tolist()) == set(range(640))
    assert set(s.train.index.tolist()).isdisjoint(s.val.index.tolist())
    assert s.val.y.tolist() == ytr[s.val.index.numpy()].tolist()
    marker = (s.val.x[:, 0, 0, 0] * (63.0 / 255) + 125.3 / 255) * 255  # undo normalization of pixel (0,0,R)
    np.testing.assert_allclose(marker.numpy(), s.val.index.numpy() % 256, atol=1e-3)


def test_missing_data_error_names_root_env_and_download(tmp_path):
    root = tmp_path / "nothing-here"
    with pytest.raises(FileNotFoundError) as e:
        D.load_dataset("cifar10", root=root)
    msg = str(e.value)
    assert str(root) in msg and "KDLIB_DATA" in msg and "download=True" in msg and "--download" in msg
    assert "python -m kdlib export" in msg
    with pytest.raises(FileNotFoundError, match="KDLIB_DATA"):
        D.load_dataset("fashion_mnist")  # the env root of the fixture is empty
    with pytest.raises(ValueError, match="unknown dataset"):
        D.load_dataset("mnist")


def test_paths_resolution(tmp_path, monkeypatch, isolated_kdlib_env):
    assert data_root() == isolated_kdlib_env["data"]
    assert data_root(tmp_path / "x") == tmp_path / "x"
    c = cache_dir()
    assert c == isolated_kdlib_env["cache"] and c.is_dir()
    assert writable_data_dir() == c / "data"
    monkeypatch.delenv("KDLIB_DATA")
    assert data_root().parts[-3:] == (".cache", "kdlib", "data")


def test_load_labels_reads_only_labels(tmp_path):
    root = tmp_path / "root"
    (_, ytr), (_, yte) = make_fmnist_root(root, n_train=12, n_test=4)
    assert D.load_labels("fashion_mnist", root).tolist() == ytr.tolist()
    assert D.load_labels("fashion_mnist", root, split="test").tolist() == yte.tolist()
    (_, ctr), _ = make_cifar_npz(root, n_train=15, n_test=3)
    assert D.load_labels("cifar10", root).tolist() == ctr.tolist()
    with pytest.raises(FileNotFoundError, match="KDLIB_DATA"):
        D.load_labels("cifar10", tmp_path / "none")
