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

One concept per module; every public name is importable from ``kdlib.teachers``:

* :mod:`~kdlib.teachers.logits`: :class:`TeacherLogits` and :func:`check_logits`;
* :mod:`~kdlib.teachers.authors`: the authors' logits, verified by SHA-256 and fetched at a pinned commit;
* :mod:`~kdlib.teachers.user`: a user's own logits file;
* :mod:`~kdlib.teachers.trained`: the teachers trained here;
* :mod:`~kdlib.teachers.cache`: the on-disk cache of trained teachers and its key;
* :mod:`~kdlib.teachers.kinds`: the kinds and :func:`get_teacher`.
"""
from __future__ import annotations

import urllib.request  # noqa: F401 - kept reachable as kdlib.teachers.urllib (callers patch its urlopen)
from typing import Any

from kdlib.errors import TeacherError
from kdlib.fileio import file_sha256
from kdlib.paths import cache_dir as _cache_dir  # noqa: F401 - kdlib.teachers._cache_dir, as before the split
from kdlib.teachers import trained
from kdlib.teachers.authors import (AUTHORS_COMMIT, AUTHORS_LOGITS, AUTHORS_URL, AuthorsLogits, authors_logits_path,
                                    fetch_authors_logits, verify_authors_file)
from kdlib.teachers.cache import TEACHER_CODE_VERSION, teacher_cache_key
from kdlib.teachers.kinds import KINDS, TRAINED_KINDS, get_teacher, resolve_kind
from kdlib.teachers.logits import AGREEMENT_MARGIN, TeacherLogits, check_logits
from kdlib.teachers.trained import (MAX_EPOCHS, SAMPLE_BUDGET, SYNTHETIC_TEACHER_LR, SYNTHETIC_TEACHER_STEPS,
                                    default_epochs, predict_logits)

__all__ = [
    "AGREEMENT_MARGIN", "AUTHORS_COMMIT", "AUTHORS_LOGITS", "AUTHORS_URL", "KINDS", "MAX_EPOCHS", "SAMPLE_BUDGET",
    "SYNTHETIC_TEACHER_LR", "SYNTHETIC_TEACHER_STEPS", "TEACHER_CODE_VERSION", "TRAINED_KINDS", "TRAIN_CALLS",
    "AuthorsLogits", "TeacherError", "TeacherLogits", "authors_logits_path", "check_logits", "default_epochs",
    "fetch_authors_logits", "file_sha256", "get_teacher", "predict_logits", "resolve_kind", "teacher_cache_key",
    "verify_authors_file",
]


def __getattr__(name: str) -> Any:
    """``TRAIN_CALLS``: the live count of trainings run in this process (a cache hit does not count), kept by
    :mod:`kdlib.teachers.trained`; read there on each access, so it is never a stale copy."""
    if name == "TRAIN_CALLS":
        return trained.TRAIN_CALLS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
