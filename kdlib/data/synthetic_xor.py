"""The synthetic XOR-like dataset of Sec. 4.1, drawn exactly as the authors' notebook draws it."""
from __future__ import annotations

import numpy as np
import torch

from kdlib.data.bundle import ArraySplit, DataBundle

AUTHORS_SEED = 42  # the authors' np.random.seed / torch.manual_seed (notebooks/synthetic_data_experiment.ipynb)

# synthetic layout (Sec. 4.1 and the authors' notebook): 200 teacher-train / 15 student-train / 15 spare / 200 test
SYN_TEACHER, SYN_STUDENT, SYN_SPARE, SYN_TEST = 200, 15, 15, 200
SYN_TOTAL = SYN_TEACHER + SYN_STUDENT + SYN_SPARE + SYN_TEST  # 430
SYN_HOLDOUT = 200
SYN_NOISE_STD = 0.5


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
