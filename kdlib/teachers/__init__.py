"""Teacher logits f(x) for the distillation term of L_train (Sec. 2), as tables indexed by original row.

Kinds (``get_teacher(bundle, kind=...)``):

* ``"authors_resnet"``, ``"authors_cnn"`` (CIFAR-10) and ``"authors_resnet_fmnist"`` (Fashion-MNIST): the
  authors' precomputed logits (Sec. 4.2: the pretrained ResNet of Passalis et al. for CIFAR-10; their own
  ResNet18 for Fashion-MNIST), one row per official training image. Read from
  ``<root>/authors/teacher_logits/<file>.npy`` or ``cache_dir()/authors/teacher_logits/``, or, only with
  ``download=True``, fetched from the authors' repository at a pinned commit. Wherever it comes from, the
  file must match its SHA-256 and exact row count (:data:`AUTHORS_LOGITS`).
* ``"file:PATH.npy"``: a user's own logits, one finite row per training example of the source set, whose
  argmax must agree with the training labels well above chance.
* ``"small_cnn"``, ``"resnet18"``: trained here (seeded) on ``bundle.train_full`` and cached under
  ``cache_dir()/teachers/<key>/``; a second call with the same inputs loads the cache and never retrains.
* ``"logreg"`` (synthetic, Sec. 4.1): LogReg on the teacher columns, 20,000 full-batch SGD steps at lr 1e-2
  on the 200 teacher points, seeded like the authors (test accuracy 0.69 on the authors' draw).
* ``"auto"``: synthetic -> logreg; images -> the authors' logits if the file is present locally, else
  small_cnn.

Every table is checked before the first training step (:func:`check_logits`): a train-label agreement far
below the teacher's stated one is reported as a likely misalignment (shifted rows, another dataset's logits).

Seeds: trained teachers call ``torch.manual_seed(42 + seed)``, so the default ``seed=0`` is the authors' 42.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from kdlib.data import AUTHORS_SEED, CORRUPT_FILE_ERRORS, ArraySplit, DataBundle, damaged_file_error
from kdlib.errors import TeacherError
from kdlib.models import LogReg, make_teacher
from kdlib.names import TEACHER_KINDS, TRAINED_TEACHERS
from kdlib.paths import cache_dir as _cache_dir
from kdlib.paths import data_root

TEACHER_CODE_VERSION = "1"  # bump when training code changes: it is part of every cache key

# every actual training run increments this (a cache hit does not): timing-free evidence for tests
TRAIN_CALLS = 0

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
_AUTO_AUTHORS = {"fashion_mnist": "authors_resnet_fmnist", "cifar10": "authors_resnet",
                 "cifar10_reduced": "authors_resnet"}
# a train-label agreement this far below the teacher's stated one means the rows do not match the images
AGREEMENT_MARGIN = 0.25
TRAINED_KINDS = TRAINED_TEACHERS
KINDS = TEACHER_KINDS  # plus "file:PATH.npy": a user's own logits

# default epoch budget for trained image teachers: about SAMPLE_BUDGET image passes (clipped to
# [1, MAX_EPOCHS]), i.e. ~2-3 CPU minutes for small_cnn on 2 cores; see get_teacher
SAMPLE_BUDGET = {"fashion_mnist": 100_000, "cifar10": 80_000, "cifar10_reduced": 80_000}
MAX_EPOCHS = 30
SYNTHETIC_TEACHER_STEPS = 20_000
SYNTHETIC_TEACHER_LR = 1e-2


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


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


# ----------------------------------------------------------------------------------------------------------
# the authors' precomputed logits
# ----------------------------------------------------------------------------------------------------------
def authors_logits_path(kind: str, root: str | os.PathLike | None = None) -> Path:
    """Where the authors' logits file for ``kind`` is expected under the data root."""
    return data_root(root) / "authors" / "teacher_logits" / AUTHORS_LOGITS[kind].file


def _find_authors_file(kind: str, root, cache) -> Path | None:
    file = AUTHORS_LOGITS[kind].file
    for p in (authors_logits_path(kind, root), _cache_dir(cache) / "authors" / "teacher_logits" / file):
        if p.is_file():
            return p
    return None


_VERIFIED: dict[tuple, str] = {}  # (path, size, mtime) -> sha256: a file is hashed once per process


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (memoised per path, size and modification time)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _VERIFIED[key] = h.hexdigest()
    return _VERIFIED[key]


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
    url = AUTHORS_URL.format(file=entry.file)
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        payload = resp.read()
    got = hashlib.sha256(payload).hexdigest()
    if got != entry.sha256:
        raise TeacherError(f"SHA-256 mismatch for {url}: expected {entry.sha256}, got {got}; file not written")
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / entry.file
    _atomic_write_bytes(out, payload)
    return out


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
        except (urllib.error.URLError, OSError, TimeoutError) as e:
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


def _file_teacher(bundle: DataBundle, spec: str, device) -> TeacherLogits:
    """A user's own logits: ``file:PATH.npy``, one finite row per training example of the source set."""
    path = Path(spec[len("file:"):]).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"teacher logits file {path} (teacher={spec!r}) not found; fix: give the path of "
                                f"an .npy array with one row per {bundle.name} training example")
    table = torch.as_tensor(np.asarray(_load_npy(path), dtype=np.float32))
    agree = check_logits(table, bundle, path, None, None)
    return TeacherLogits(table.to(device), None, agree, "file", f"user logits {path}",
                         meta=dict(rows=int(table.shape[0]), file=str(path), sha256=file_sha256(path)))


# ----------------------------------------------------------------------------------------------------------
# trained teachers
# ----------------------------------------------------------------------------------------------------------
def default_epochs(bundle: DataBundle, kind: str) -> int:
    """Default teacher epochs: ``ceil(SAMPLE_BUDGET / |train_full|)`` clipped to [1, MAX_EPOCHS]
    (Fashion-MNIST 100k image passes, CIFAR-10 80k); 1 epoch for resnet18 (GPU-sized, slow on CPU).

    At the quick profile (Fashion-MNIST n_train=6400 -> 16 epochs; CIFAR-10 n_train=12800 -> 7 epochs;
    reduced CIFAR-10 n_train=6400 -> 13 epochs) this is about 1-3 minutes on 2 idle CPU cores."""
    if kind == "logreg":
        return SYNTHETIC_TEACHER_STEPS
    if kind == "resnet18":
        return 1
    n = max(len(bundle.train_full), 1)
    return int(min(MAX_EPOCHS, max(1, math.ceil(SAMPLE_BUDGET.get(bundle.name, 60_000) / n))))


def _tensor_digest(*ts: Tensor) -> str:
    h = hashlib.sha256()
    for t in ts:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_cache_key(bundle: DataBundle, kind: str, epochs: int, seed: int) -> tuple[str, dict[str, Any]]:
    """(key, inputs): the hash of everything that determines a trained teacher and its logits."""
    tt = bundle.teacher_train if bundle.name == "synthetic" else bundle.train_full
    inputs = dict(
        dataset=bundle.name, source=bundle.source, kind=kind, epochs=int(epochs), seed=int(seed),
        code_version=TEACHER_CODE_VERSION, train_size=len(tt), test_size=len(bundle.test),
        n_train=bundle.meta.get("n_train"), variant=bundle.meta.get("variant"),
        holdout=bundle.meta.get("holdout"), n_source=bundle.meta.get("n_source"),
        train_digest=_tensor_digest(tt.index, tt.y, tt.x[:64]),
        test_digest=_tensor_digest(bundle.test.index, bundle.test.y),
    )
    blob = json.dumps(inputs, sort_keys=True)
    key = f"{bundle.name}-{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"
    return key, inputs


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor, batch_size: int = 1000, device: str | torch.device = "cpu") -> Tensor:
    """Eval-mode logits of ``model`` on ``x`` in batches, returned on the CPU as float32."""
    model.eval()
    outs = [model(x[s:s + batch_size].to(device)).float().cpu() for s in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0)


def _augment(x: Tensor, gen: torch.Generator, pad: int, flip: bool) -> Tensor:
    """Random crop with zero padding ``pad`` and random horizontal flip, per sample, on a batch."""
    b, c, h, w = x.shape
    if flip:
        m = torch.rand(b, generator=gen) < 0.5
        x = torch.where(m.view(b, 1, 1, 1).to(x.device), x.flip(3), x)
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))
        oh = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        ow = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        ih = (oh[:, None] + torch.arange(h, device=x.device)[None, :])  # (b, h)
        iw = (ow[:, None] + torch.arange(w, device=x.device)[None, :])  # (b, w)
        bi = torch.arange(b, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[bi, ih[:, :, None], iw[:, None, :]].permute(0, 3, 1, 2).contiguous()
    return x


def _train_image_teacher(bundle: DataBundle, kind: str, epochs: int, seed: int, device, progress: bool,
                         batch_size: int = 128) -> tuple[nn.Module, dict[str, Any]]:
    """Adam (lr 2e-3, weight decay 5e-4) with a one-cycle schedule, batch 128, shuffled; CIFAR-10 gets
    random crops (pad 4) and flips, Fashion-MNIST random crops (pad 2)."""
    torch.manual_seed(AUTHORS_SEED + seed)
    gen = torch.Generator().manual_seed(AUTHORS_SEED + seed)
    model = make_teacher(kind, bundle.name).to(device)
    data = bundle.train_full.to(device)
    steps = epochs * math.ceil(len(data) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    # one-cycle needs a few steps per phase; very short (smoke-scale) trainings keep a constant lr
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.25)
             if steps >= 8 else None)
    pad, flip = (4, True) if bundle.name.startswith("cifar") else (2, False)
    t0 = time.perf_counter()
    for ep in range(epochs):
        model.train()
        tot, correct, n = 0.0, 0, 0
        for xb, yb, _ in data.batches(batch_size, shuffle=True, generator=gen):
            xb = _augment(xb, gen, pad, flip)
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            tot += float(loss.detach()) * len(yb)
            correct += int((out.argmax(1) == yb).sum())
            n += len(yb)
        _log(progress, f"{kind} on {bundle.name}: epoch {ep + 1}/{epochs} loss {tot / max(n, 1):.4f} "
                       f"train acc {correct / max(n, 1):.4f} ({time.perf_counter() - t0:.0f}s)")
    return model, dict(train_seconds=round(time.perf_counter() - t0, 2), optimizer="AdamW one-cycle 2e-3",
                       batch_size=batch_size, augment=dict(pad=pad, flip=flip))


def _train_logreg_teacher(bundle: DataBundle, steps: int, seed: int, device) -> tuple[nn.Module, dict[str, Any]]:
    """The authors' synthetic teacher (code/synthetic_funcs.py ``net_training``): LogReg on the teacher
    columns, full-batch SGD (lr 1e-2) on the 200 teacher points, cross-entropy, ``steps`` iterations."""
    torch.manual_seed(AUTHORS_SEED + seed)
    cols = bundle.meta.get("teacher_cols", [0, 1, 2])
    model = LogReg(cols, bundle.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=SYNTHETIC_TEACHER_LR)
    x, y = bundle.teacher_train.x.to(device), bundle.teacher_train.y.to(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, dict(train_seconds=round(time.perf_counter() - t0, 2), optimizer=f"SGD lr {SYNTHETIC_TEACHER_LR}",
                       steps=steps, cols=list(cols))


def _trained_teacher(bundle: DataBundle, kind: str, cache, device, seed: int, epochs: int | None,
                     progress: bool) -> TeacherLogits:
    global TRAIN_CALLS
    if kind == "logreg" and bundle.name != "synthetic":
        raise ValueError("teacher 'logreg' is for the synthetic dataset only")
    if kind != "logreg" and bundle.name == "synthetic":
        raise ValueError(f"teacher {kind!r} is for image datasets; use 'logreg' for synthetic")
    epochs = int(epochs) if epochs is not None else default_epochs(bundle, kind)
    key, inputs = teacher_cache_key(bundle, kind, epochs, seed)
    folder = _cache_dir(cache) / "teachers" / key
    logits_path, meta_path, model_path = folder / "logits.pt", folder / "meta.json", folder / "model.pt"
    model = make_teacher(kind, bundle.name)
    if logits_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        table = torch.load(logits_path, map_location="cpu")
        if model_path.is_file():
            model.load_state_dict(torch.load(model_path, map_location="cpu"))
        _log(progress, f"{kind} teacher loaded from cache {folder}")
        return TeacherLogits(table.to(device), meta["test_accuracy"], meta["train_agreement"], kind,
                             f"trained {kind}, cached at {folder}", meta=meta, model=model.to(device))

    TRAIN_CALLS += 1
    _log(progress, f"training {kind} teacher on {bundle.summary()} ({epochs} {'steps' if kind == 'logreg' else 'epochs'})")
    if kind == "logreg":
        model, info = _train_logreg_teacher(bundle, epochs, seed, device)
        everything = bundle.meta.get("all")
        n_rows = int(bundle.meta.get("n_source", 0))
        splits = [everything] if everything is not None else [
            s for s in (bundle.teacher_train, bundle.train_full, bundle.val, bundle.test) if s is not None]
        train_split = bundle.teacher_train
    else:
        model, info = _train_image_teacher(bundle, kind, epochs, seed, device, progress)
        n_rows = int(bundle.meta.get("n_source", 0))
        splits = [bundle.train_full]
        train_split = bundle.train_full
    n_rows = max(n_rows, max(int(s.index.max()) + 1 for s in splits if len(s)))
    table = torch.full((n_rows, bundle.num_classes), float("nan"), dtype=torch.float32)
    for s in splits:
        table[s.index.cpu()] = predict_logits(model, s.x, device=device)
    test_logits = predict_logits(model, bundle.test.x, device=device)
    test_acc = _agreement(test_logits, bundle.test.y)
    train_agree = _agreement(table[bundle.train_full.index.cpu()], bundle.train_full.y)
    meta = dict(inputs, **info, test_accuracy=test_acc, train_agreement=train_agree,
                teacher_train_accuracy=_agreement(table[train_split.index.cpu()], train_split.y), key=key)
    folder.mkdir(parents=True, exist_ok=True)
    # each file is written whole and moved in place; meta last marks the entry complete, so a concurrent
    # reader (another worker) sees either no entry or a complete one
    for path, obj in ((model_path, model.state_dict()), (logits_path, table)):
        buf = io.BytesIO()
        torch.save(obj, buf)
        _atomic_write_bytes(path, buf.getvalue())
    _atomic_write_bytes(meta_path, json.dumps(meta, indent=1, sort_keys=True).encode())
    _log(progress, f"{kind} teacher: test accuracy {test_acc:.4f}, train agreement {train_agree:.4f}, "
                   f"{info['train_seconds']}s; cached at {folder}")
    return TeacherLogits(table.to(device), test_acc, train_agree, kind, f"trained {kind}, cached at {folder}",
                         meta=meta, model=model)


# ----------------------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------------------
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
    """Teacher logits for every training example of ``bundle`` (see the module docstring for the kinds).

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
