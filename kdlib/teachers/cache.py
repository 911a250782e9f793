"""The on-disk cache of trained teachers: ``cache_dir()/teachers/<key>/`` with ``model.pt``, ``logits.pt`` and
``meta.json``, keyed by the hash of everything that determines the teacher (:func:`teacher_cache_key`). Each
file is written whole and moved in place, ``meta.json`` last, so a concurrent reader sees no entry or a
complete one."""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from kdlib.data.bundle import DataBundle
from kdlib.fileio import atomic_write_bytes
from kdlib.paths import cache_dir as _cache_dir

TEACHER_CODE_VERSION = "1"  # bump when training code changes: it is part of every cache key


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


def entry_dir(cache: str | os.PathLike | None, key: str) -> Path:
    """The folder of the cache entry ``key`` (under ``cache_dir(cache)/teachers``)."""
    return _cache_dir(cache) / "teachers" / key


def read_entry(folder: Path, model: nn.Module) -> tuple[Tensor, dict[str, Any]] | None:
    """``(logits table, meta)`` of a complete entry, its weights loaded into ``model`` when saved; ``None``
    when the entry is absent or incomplete."""
    logits_path, meta_path, model_path = folder / "logits.pt", folder / "meta.json", folder / "model.pt"
    if not (logits_path.is_file() and meta_path.is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    table = torch.load(logits_path, map_location="cpu")
    if model_path.is_file():
        model.load_state_dict(torch.load(model_path, map_location="cpu"))
    return table, meta


def write_entry(folder: Path, model: nn.Module, table: Tensor, meta: dict[str, Any]) -> None:
    """Store a trained teacher: weights, logits table, then ``meta.json`` (which marks the entry complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    # each file is written whole and moved in place; meta last marks the entry complete, so a concurrent
    # reader (another worker) sees either no entry or a complete one
    for path, obj in ((folder / "model.pt", model.state_dict()), (folder / "logits.pt", table)):
        buf = io.BytesIO()
        torch.save(obj, buf)
        atomic_write_bytes(path, buf.getvalue())
    atomic_write_bytes(folder / "meta.json", json.dumps(meta, indent=1, sort_keys=True).encode())
