"""Problem assembly: config -> data bundle -> teacher logits -> the splits a method trains on.

The bundle and the teacher are memoised per process (many seeds of one dataset share them); the teacher's
own disk cache (:mod:`kdlib.teachers`) makes a trained teacher a one-time cost across processes.
"""
from __future__ import annotations

from typing import Any

import torch

from kdlib.data import DataBundle, load_dataset
from kdlib.data.augment import FlipCrop
from kdlib.experiments.config import ExperimentConfig
from kdlib.methods import get_method
from kdlib.models import LogReg, make_student
from kdlib.paths import data_root
from kdlib.teachers import TeacherLogits, get_teacher
from kdlib.train import Problem, Split

_BUNDLES: dict[tuple, DataBundle] = {}
_TEACHERS: dict[tuple, TeacherLogits] = {}


def bundle_key(cfg: ExperimentConfig) -> tuple:
    """What determines the data of ``cfg``: its fields, with the data root resolved (``data_root`` None reads
    ``$KDLIB_DATA``, which a process may change between runs)."""
    return (cfg.dataset, cfg.variant, cfg.holdout, cfg.n_train, cfg.n_test, cfg.split_seed,
            str(data_root(cfg.data_root)), cfg.download)


def teacher_key(cfg: ExperimentConfig) -> tuple:
    """What determines the teacher of ``cfg``."""
    return bundle_key(cfg) + (cfg.teacher, cfg.teacher_epochs, cfg.device)


def load_bundle(cfg: ExperimentConfig) -> DataBundle:
    """The dataset of ``cfg`` (memoised in-process)."""
    key = bundle_key(cfg)
    if key not in _BUNDLES:
        kwargs: dict[str, Any] = dict(root=cfg.data_root, download=cfg.download, n_train=cfg.n_train,
                                      n_test=cfg.n_test, split_seed=cfg.split_seed)
        if cfg.dataset == "synthetic":
            kwargs.update(variant=cfg.variant, holdout=cfg.holdout)
        _BUNDLES[key] = load_dataset(cfg.dataset, **kwargs)
    return _BUNDLES[key]


def load_teacher(cfg: ExperimentConfig, bundle: DataBundle, progress: bool = False) -> TeacherLogits:
    """The verified teacher logits for ``bundle`` (trained once and cached on disk by kdlib.teachers)."""
    key = teacher_key(cfg)
    if key not in _TEACHERS:
        kwargs: dict[str, Any] = dict(kind=cfg.teacher, root=cfg.data_root, device=cfg.device, progress=progress,
                                      download=cfg.download)
        if cfg.teacher_epochs is not None:
            kwargs["epochs"] = cfg.teacher_epochs
        _TEACHERS[key] = get_teacher(bundle, **kwargs)
    return _TEACHERS[key]


def clear_memo() -> None:
    """Forget the bundles and teachers loaded in this process."""
    _BUNDLES.clear()
    _TEACHERS.clear()


def build_problem(cfg: ExperimentConfig, bundle: DataBundle, teacher: TeacherLogits) -> Problem:
    """The splits the paper gives ``cfg.method``: all of D for the baselines, D_train/D_val for tuning."""
    method = get_method(cfg.method)
    train = bundle.train if method.uses_val_split else bundle.train_full
    device = torch.device(cfg.device)

    def split(part, with_teacher: bool) -> Split:
        p = part.to(device)
        t = teacher.for_split(part).to(device) if with_teacher else None
        return Split(p.x, p.y, t)

    if cfg.dataset == "synthetic":
        cols = list(bundle.meta["student_cols"])
        if cfg.variant == "authors" and cfg.method in ("naive", "random"):
            # the authors' synthetic_base trained these two baselines on the teacher's features
            cols = list(bundle.meta["teacher_cols"])

        def make() -> torch.nn.Module:
            return LogReg(cols, num_classes=bundle.num_classes)
    else:
        def make() -> torch.nn.Module:
            return make_student(cfg.dataset)
    augment = None
    if "normalization" in bundle.meta:  # images: the authors' flip + padded crop (used when cfg.augment says so)
        augment = FlipCrop.for_normalization(bundle.meta["normalization"]["mean"], bundle.meta["normalization"]["std"])
    return Problem(train=split(train, True), val=split(bundle.val, False), test=split(bundle.test, False),
                   make_student=make, augment=augment)


def problem_for(cfg: ExperimentConfig, progress: bool = False) -> tuple[Problem, DataBundle, TeacherLogits]:
    """``(problem, bundle, teacher)`` of ``cfg``: what the runner trains each group of runs on."""
    bundle = load_bundle(cfg)
    teacher = load_teacher(cfg, bundle, progress=progress)
    return build_problem(cfg, bundle, teacher), bundle, teacher
