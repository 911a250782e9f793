"""kdlib.teachers: caching (a hit never retrains), cache keys, the authors' logits by original index, fetch."""
from __future__ import annotations

import hashlib
import io
import urllib.error

import numpy as np
import pytest
import torch

from conftest import make_cifar_npz, make_fmnist_root, shared_data
from kdlib import data as D
from kdlib import teachers as T


@pytest.fixture
def tiny_cifar(tmp_path):
    root = tmp_path / "root"
    make_cifar_npz(root, n_train=60, n_test=16, random_pixels=True)
    return root, D.load_dataset("cifar10", root=root)


def test_trained_teacher_cache_hit_does_not_retrain(tiny_cifar):
    _, b = tiny_cifar
    before = T.TRAIN_CALLS
    t1 = T.get_teacher(b, kind="small_cnn", epochs=1, progress=False)
    assert T.TRAIN_CALLS == before + 1
    assert t1.table.shape == (60, 10) and torch.isfinite(t1.table).all()
    assert 0.0 <= t1.test_accuracy <= 1.0 and t1.train_agreement is not None
    assert "trained small_cnn, cached at" in t1.source
    t2 = T.get_teacher(b, kind="small_cnn", epochs=1, progress=False)
    assert T.TRAIN_CALLS == before + 1  # loaded, not retrained
    assert torch.equal(t1.table, t2.table) and t2.test_accuracy == t1.test_accuracy
    # the cached model reproduces the cached logits
    torch.testing.assert_close(T.predict_logits(t2.model, b.train_full.x), t1.table[b.train_full.index])
    # any relevant change trains again
    T.get_teacher(b, kind="small_cnn", epochs=1, seed=1, progress=False)
    assert T.TRAIN_CALLS == before + 2


def test_cache_key_changes_with_relevant_inputs(tiny_cifar):
    root, b = tiny_cifar
    k = T.teacher_cache_key(b, "small_cnn", 3, 0)[0]
    assert k == T.teacher_cache_key(b, "small_cnn", 3, 0)[0]
    assert k != T.teacher_cache_key(b, "small_cnn", 4, 0)[0]
    assert k != T.teacher_cache_key(b, "small_cnn", 3, 1)[0]
    assert k != T.teacher_cache_key(b, "resnet18", 3, 0)[0]
    sub = D.load_dataset("cifar10", root=root, n_train=40)
    assert k != T.teacher_cache_key(sub, "small_cnn", 3, 0)[0]
    red = D.load_dataset("cifar10_reduced", root=root)
    assert k != T.teacher_cache_key(red, "small_cnn", 3, 0)[0]
    # the split seed does not change train_full, so the teacher is shared
    assert k == T.teacher_cache_key(D.load_dataset("cifar10", root=root, split_seed=4), "small_cnn", 3, 0)[0]
    sp, sa = D.synthetic(variant="paper"), D.synthetic(variant="authors")
    assert T.teacher_cache_key(sp, "logreg", 10, 0)[0] != T.teacher_cache_key(sa, "logreg", 10, 0)[0]
    assert (T.teacher_cache_key(sp, "logreg", 10, 0)[0]
            != T.teacher_cache_key(D.synthetic(holdout=True), "logreg", 10, 0)[0])


def test_logreg_teacher_synthetic_table_and_cache():
    b = D.synthetic(variant="authors")
    before = T.TRAIN_CALLS
    t = T.get_teacher(b, epochs=300, progress=False)  # auto -> logreg
    assert t.name == "logreg" and T.TRAIN_CALLS == before + 1
    assert t.table.shape == (430, 2) and torch.isfinite(t.table).all()  # every generated point has a row
    # logits follow LogReg on the teacher columns [0, 1, 2]
    torch.testing.assert_close(t.for_split(b.test), t.model(b.test.x))
    assert t.test_accuracy == pytest.approx(float((t.model(b.test.x).argmax(1) == b.test.y).float().mean()))
    T.get_teacher(b, kind="logreg", epochs=300, progress=False)
    assert T.TRAIN_CALLS == before + 1
    with pytest.raises(ValueError):
        T.get_teacher(b, kind="small_cnn", progress=False)


def _write_fake_authors(root, file, table):
    d = root / "authors" / "teacher_logits"
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / file, table.astype(np.float32))
    return d / file


def trust_fake(monkeypatch, kind, path, agreement=None):
    """Register a tiny fake file's SHA-256 and row count for ``kind`` (the real hashes stay for real files)."""
    rows = int(np.load(path).shape[0])
    entry = T.AUTHORS_LOGITS[kind]
    monkeypatch.setitem(T.AUTHORS_LOGITS, kind, entry._replace(
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(), rows=rows,
        train_agreement=entry.train_agreement if agreement is None else agreement))


def test_authors_logits_indexed_by_original_training_index(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (xtr, ytr), _ = make_cifar_npz(root, n_train=50, n_test=8)
    # row i encodes i in column 0 and argmax = the true label except on rows 0 and 1
    table = np.zeros((50, 10), dtype=np.float32)
    table[np.arange(50), ytr] = 100.0
    table[:, 0] += np.arange(50) * 1e-3
    wrong = (ytr[:2] + 1) % 10
    table[:2] = 0.0
    table[np.arange(2), wrong] = 100.0
    fake = _write_fake_authors(root, "logits_resnet.npy", table)
    with pytest.raises(T.TeacherError, match="SHA-256"):  # the real hash rejects any other file
        T.get_teacher(D.load_dataset("cifar10", root=root), kind="authors_resnet", root=root, progress=False)
    trust_fake(monkeypatch, "authors_resnet", fake, agreement=0.96)
    b = D.load_dataset("cifar10", root=root, split_seed=11)  # shuffled split: positions != indices
    assert T.resolve_kind(b, "auto", root=root) == "authors_resnet"
    t = T.get_teacher(b, kind="auto", root=root, progress=False)
    assert t.name == "authors_resnet" and t.test_accuracy is None
    assert t.train_agreement == pytest.approx(48 / 50)
    assert "authors' precomputed logits" in t.source
    for split in (b.train, b.val, b.train_full):
        got = t.for_split(split)
        assert torch.equal(got, torch.from_numpy(table)[split.index])
    # cifar10_reduced / n_train subsets still address rows by original index
    sub = D.load_dataset("cifar10_reduced", root=root, n_train=20)
    ts = T.get_teacher(sub, kind="authors_resnet", root=root, progress=False)
    assert torch.equal(ts.for_split(sub.val), torch.from_numpy(table)[18:20])
    assert sub.val.index.tolist() == list(range(18, 20))
    # wrong dataset, wrong shape
    with pytest.raises(ValueError, match="fashion_mnist"):
        T.get_teacher(b, kind="authors_resnet_fmnist", root=root, progress=False)
    short = _write_fake_authors(root, "logits_cnn.npy", table[:10])
    trust_fake(monkeypatch, "authors_cnn", short)
    monkeypatch.setitem(T.AUTHORS_LOGITS, "authors_cnn", T.AUTHORS_LOGITS["authors_cnn"]._replace(rows=50))
    with pytest.raises(ValueError, match="expected exactly 50 rows"):
        T.get_teacher(b, kind="authors_cnn", root=root, progress=False)


def test_auto_falls_back_to_small_cnn_without_authors_files(tmp_path):
    root = tmp_path / "root"
    make_fmnist_root(root, n_train=20, n_test=5)
    b = D.load_dataset("fashion_mnist", root=root)
    assert T.resolve_kind(b, "auto", root=root) == "small_cnn"
    assert T.resolve_kind(D.synthetic(), "auto") == "logreg"


def test_fetch_checks_sha_and_missing_file_error_names_local_path(tmp_path, monkeypatch):
    root = tmp_path / "root"
    make_fmnist_root(root, n_train=20, n_test=5)
    b = D.load_dataset("fashion_mnist", root=root)
    table = np.random.default_rng(0).normal(size=(20, 10)).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, table)
    payload = buf.getvalue()
    entry = T.AUTHORS_LOGITS["authors_resnet_fmnist"]
    file = entry.file
    seen = []

    class Resp(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    def fake_urlopen(url, timeout=None):
        seen.append(url)
        return Resp(payload)

    monkeypatch.setattr(T.urllib.request, "urlopen", fake_urlopen)
    # no network without download=True: the error names the local path and the flag
    with pytest.raises(FileNotFoundError, match="--download") as e:
        T.get_teacher(b, kind="authors_resnet_fmnist", root=root, progress=False)
    assert str(root / "authors" / "teacher_logits" / file) in str(e.value) and not seen
    # wrong checksum: nothing written, clear error
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        T.get_teacher(b, kind="authors_resnet_fmnist", root=root, progress=False, download=True)
    assert seen and T.AUTHORS_COMMIT in seen[0] and seen[0].endswith("/code/" + file)
    assert not list((T._cache_dir() / "authors" / "teacher_logits").glob("*"))
    # right checksum: fetched into the cache, then read locally
    monkeypatch.setitem(T.AUTHORS_LOGITS, "authors_resnet_fmnist",
                        entry._replace(sha256=hashlib.sha256(payload).hexdigest(), rows=20, train_agreement=0.1))
    t = T.get_teacher(b, kind="authors_resnet_fmnist", root=root, progress=False, download=True)
    assert torch.equal(t.table, torch.from_numpy(table))
    assert T.resolve_kind(b, "auto", root=root) == "authors_resnet_fmnist"  # now present locally

    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(T.urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError) as e:
        T.get_teacher(D.load_dataset("cifar10", root=_cifar(tmp_path)), kind="authors_cnn", root=root,
                      progress=False, download=True)
    msg = str(e.value)
    assert str(root / "authors" / "teacher_logits" / "logits_cnn.npy") in msg and "KDLIB_DATA" in msg


def _cifar(tmp_path):
    r = tmp_path / "c"
    make_cifar_npz(r, n_train=20, n_test=4)
    return r


@pytest.mark.skipif(shared_data() is None, reason="needs the verified data folder (../shared/data)")
def test_real_authors_logits_agree_with_real_labels():
    root = shared_data()
    labels_c = D.load_labels("cifar10", root)
    labels_f = D.load_labels("fashion_mnist", root)
    assert len(labels_c) == 50000 and len(labels_f) == 60000
    expect = {"logits_resnet.npy": (labels_c, 0.9995), "logits_cnn.npy": (labels_c, 0.7975),
              "logits_resnet_fmnist.npy": (labels_f, 0.9987)}
    for file, (labels, acc) in expect.items():
        table = np.load(root / "authors" / "teacher_logits" / file)
        assert table.shape == (len(labels), 10)
        assert round(float((table.argmax(1) == labels).mean()), 4) == acc, file
    assert round(float((np.load(root / "authors" / "teacher_logits" / "logits_resnet.npy")[:12800].argmax(1)
                        == labels_c[:12800]).mean()), 5) == 0.99961  # the reduced CIFAR-10 D
    # through the public API (Fashion-MNIST loads in about a second)
    b = D.load_dataset("fashion_mnist", root=root, n_test=10)
    t = T.get_teacher(b, kind="auto", root=root, progress=False)
    assert t.name == "authors_resnet_fmnist" and t.test_accuracy is None
    assert round(t.train_agreement, 4) == 0.9987
