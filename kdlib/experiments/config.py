"""The schema of one experiment run: the run settings (:class:`kdlib.train.settings.Settings`) extended by the
dataset, method, data and teacher of the run.

A run is fully described by an :class:`ExperimentConfig`. Names follow the paper: ``lambda1`` weights the
classification term of L_train (eq. of Sec. 2), ``temperature`` is T, ``t_val`` is T_val of L_val, ``e1``/``e2``
are the gradient and extrapolation iteration counts of Algorithm 1 (eq. 4).

:func:`validate` (:meth:`ExperimentConfig.validate`, which extends the run settings' one validator) checks every
field's type and range before any compute and raises :class:`ConfigError`, whose message names the field, what
was expected, what was found and the fix. How a config is built from the
paper's protocol and a profile is :mod:`kdlib.experiments.profiles`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

from kdlib import precision
from kdlib.errors import ConfigError
from kdlib.names import ALL_METHOD_NAMES, DATASETS, ENGINES, PROFILES, TEACHER_KINDS, VARIANTS
from kdlib.train.settings import Settings, fail


@dataclass
class ExperimentConfig(Settings):
    """Everything that determines one (dataset, method, seed) run: the run settings
    (:class:`kdlib.train.settings.Settings`, at the paper's values where they differ from the user defaults) and
    the dataset, method, data and teacher of the run."""

    # the paper's values where the run settings' user defaults differ
    shuffle: bool = False  # the authors' loaders did not shuffle
    lr: float = 1.0
    lr_step_epochs: int | None = 10  # StepLR period in epochs (None: constant)
    estimator: str = "finite_difference"  # the paper's (DARTS-style) estimator

    dataset: str = "synthetic"
    method: str = "gradient"
    profile: str = "quick"
    device: str = "cpu"

    # data
    variant: str = "paper"  # synthetic only: "paper" or "authors" (see kdlib.data.synthetic)
    holdout: bool = False  # synthetic: tune on a separate validation draw instead of the test set
    n_train: int | None = None  # subset of the student's training data (None = all)
    n_test: int | None = None
    split_seed: int | None = None  # None: ordered 9:1 split as the authors did; int: seeded permutation
    data_root: str | None = None
    download: bool = False

    # teacher
    teacher: str = "auto"  # "auto", an authors' kind, "small_cnn", "resnet18", "logreg" or "file:PATH.npy"
    teacher_epochs: int | None = None

    # "one": each run on its own; "stacked": the seeds of one image (dataset, method) as one vmapped model
    # (kdlib.train.stacked; equal to "one" within float32 rounding; for GPUs), where kdlib.train.select_backend
    # allows it, else one by one; "stacked_graph": that model's step captured into CUDA graphs
    # (kdlib.train.stacked_graph; CUDA and SGD only, else as "stacked")
    engine: str = "one"
    # CUDA only: float32 convolutions and matrix products with TF32 inputs (faster, ~1e-3 relative error per
    # product); False (default): float32 as on the CPU (kdlib.precision; the runner applies it around each run)
    tf32: bool = False

    extra: dict[str, Any] = field(default_factory=dict)

    # the validator's rules of the config's own fields (Settings.validate reads these tables)
    COUNTS: ClassVar[dict[str, int]] = dict(Settings.COUNTS, n_train=1, n_test=1, teacher_epochs=1)
    NONNEG_INTS: ClassVar[tuple[str, ...]] = Settings.NONNEG_INTS + ("split_seed",)
    BOOLS: ClassVar[tuple[str, ...]] = Settings.BOOLS + ("holdout", "download", "tf32")
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = dict(Settings.CHOICES, dataset=DATASETS, profile=PROFILES,
                                                         variant=VARIANTS, engine=ENGINES)
    OPTIONAL: ClassVar[frozenset[str]] = Settings.OPTIONAL | {"n_train", "n_test", "split_seed", "teacher_epochs",
                                                              "data_root"}

    def validate(self, known_methods: Iterable[str] = ALL_METHOD_NAMES) -> None:
        """:meth:`Settings.validate` over the run settings and the config's own fields, then the method, the
        teacher, the device and the dataset's unit of training. ``known_methods``: the method names the caller
        can run (kdlib's own, :data:`kdlib.names.ALL_METHOD_NAMES`, plus any registered by the user)."""
        known = tuple(known_methods)
        if not isinstance(self.method, str) or self.method not in known:
            raise ConfigError(f"unknown method {self.method!r}; choose one of: {', '.join(known)}")
        if self.dataset == "synthetic":
            if self.iterations is None:
                raise fail("iterations", "an integer >= 1 (synthetic runs count full-batch iterations)", None)
            if self.augment != "none":
                raise fail("augment", "'none' (the synthetic problem has no images to augment)", self.augment)
        elif self.dataset in DATASETS and self.epochs is None:
            raise fail("epochs", f"an integer >= 1 ({self.dataset} runs count epochs)", None)
        super().validate()
        teacher = self.teacher
        if not isinstance(teacher, str) or not (teacher in TEACHER_KINDS or
                                                (teacher.startswith("file:") and len(teacher) > 5)):
            raise fail("teacher", f"one of {', '.join(TEACHER_KINDS)} or 'file:PATH.npy'", teacher)
        if not isinstance(self.device, str) or not self.device:
            raise fail("device", "a torch device string such as 'cpu' or 'cuda'", self.device, "--device cpu")
        precision.check(self.tf32, self.device)
        if self.data_root is not None and not isinstance(self.data_root, str):
            raise fail("data_root", "a folder path (string) or None", self.data_root, "--data-root DIR")
        if not isinstance(self.extra, dict):
            raise fail("extra", "a dict", self.extra)
        if self.dataset != "synthetic" and self.n_train is not None and self.n_train < 10:
            raise fail("n_train", "an integer >= 10 (the 9:1 train/validation split needs 10 examples)",
                       self.n_train)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(d["betas"])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def key(self) -> str:
        """The (dataset, method, seed) cell; the store adds the config hash (:mod:`kdlib.experiments.store`)."""
        return f"{self.dataset}__{self.method}__seed{self.seed}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        """The config of a stored record (unknown keys are an error: the record is of another schema)."""
        names = field_names()
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"config has unknown field(s) {sorted(unknown)}; valid fields: {sorted(names)}")
        cfg = cls(**d)
        if isinstance(cfg.betas, list):
            cfg.betas = tuple(cfg.betas)
        return cfg


def field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(ExperimentConfig)}


def normalize(cfg: ExperimentConfig) -> ExperimentConfig:
    """Canonical types in place (:meth:`kdlib.train.settings.Settings.normalize`)."""
    return cfg.normalize()


def validate(cfg: ExperimentConfig, known_methods: Iterable[str] = ALL_METHOD_NAMES) -> None:
    """Raise :class:`ConfigError` naming the field, the expected and found value and the fix, for any field of
    the wrong type or out of range (:meth:`ExperimentConfig.validate`)."""
    cfg.validate(known_methods)
