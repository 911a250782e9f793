"""A user's own teacher logits: ``teacher="file:PATH.npy"``, one finite row per training example of the source
set, checked like any table (:func:`kdlib.teachers.logits.check_logits`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kdlib.data.bundle import DataBundle
from kdlib.fileio import file_sha256
from kdlib.teachers.logits import TeacherLogits, _load_npy, check_logits


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
