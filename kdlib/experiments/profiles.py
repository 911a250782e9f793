"""The paper's protocol per dataset and the named profiles (``smoke``, ``quick``, ``paper``).

:func:`resolve_config` builds the config of one run: the paper's protocol (Sec. 4.1, 4.2 and the authors' code
notes), then the profile, then explicit overrides, and validates the result before any compute.

**Metaparameter travel rule (scaled-down image profiles).** The gradient-based and proposed methods move
(lambda1, T) by at most ``meta_lr * meta_clip`` per metaparameter step (the hypergradient is value-clipped to
``meta_clip``, Sec. 4 and the authors' code), one step per training batch of D_train. A profile that scales an image
dataset down (fewer epochs, fewer images) therefore cuts the *travel* the metaparameters can make, and Table 2
at that profile would compare the tuning methods at a scale where they cannot reach the values they reach in
the paper. A profile with ``"meta_travel": "paper"`` (``smoke`` and ``quick``) keeps the paper's maximal travel:

    meta_lr(profile) = meta_lr(paper) * steps(paper) / steps(profile),
    so that  meta_lr * meta_clip * steps  is the same as at the paper's scale,

where ``steps = epochs * ceil(|D_train| / batch_size)`` (:func:`meta_steps`; ``|D_train|`` is 9/10 of the images
used, Sec. 4.2). It is applied by :func:`paper_travel_meta_lr` inside :func:`resolve_config` to every image
dataset, after the profile's and the caller's sizes are known, unless the caller sets ``meta_lr`` explicitly
(an explicit ``--set meta_lr=...`` always wins). The ``paper`` profile is the paper's protocol, unchanged.
Synthetic runs are at the paper's scale in every profile but ``smoke`` and are not rescaled.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from kdlib.errors import ConfigError
from kdlib.experiments.config import ExperimentConfig, field_names, validate
from kdlib.data import CIFAR_REDUCED_SIZE
from kdlib.names import ALL_METHOD_NAMES, DATASETS, IMAGE_DATASETS, PROFILES
from kdlib.train.settings import check_choice

# Paper protocol per dataset (Sec. 4.1, 4.2 and the authors' code notes).
PAPER_PROTOCOL: dict[str, dict[str, Any]] = {
    "synthetic": dict(iterations=2000, batch_size=None, lr=1.0, lr_step_epochs=None, t_val=0.1,
                      meta_lr=0.1, log_every=200, teacher="logreg"),
    "fashion_mnist": dict(epochs=50, batch_size=128, lr=1.0, lr_step_epochs=10, t_val=1.0, meta_lr=0.1,
                          teacher="authors_resnet_fmnist"),
    "cifar10_reduced": dict(epochs=50, batch_size=128, lr=1.0, lr_step_epochs=10, t_val=1.0, meta_lr=0.25,
                            teacher="authors_resnet"),
    "cifar10": dict(epochs=100, batch_size=128, lr=1.0, lr_step_epochs=10, t_val=1.0, meta_lr=0.1,
                    teacher="authors_resnet"),
}

# |D| of the image datasets at the paper's scale (Sec. 4.2): the official training sets, reduced CIFAR-10 its first 12,800
PAPER_IMAGES: dict[str, int] = {"fashion_mnist": 60_000, "cifar10_reduced": CIFAR_REDUCED_SIZE, "cifar10": 50_000}

PROFILE_SPECS: dict[str, dict[str, Any]] = {
    # every code path, seconds per run
    "smoke": {
        "seeds": 2,
        "meta_travel": "paper",
        "synthetic": dict(iterations=60, log_every=20),
        "fashion_mnist": dict(epochs=2, n_train=640, n_test=500, lr_step_epochs=1, teacher="auto",
                              teacher_epochs=1, hyperopt_evals=2),
        "cifar10_reduced": dict(epochs=2, n_train=640, n_test=500, lr_step_epochs=1, teacher="auto",
                                teacher_epochs=1, hyperopt_evals=2),
        "cifar10": dict(epochs=2, n_train=640, n_test=500, lr_step_epochs=1, teacher="auto",
                        teacher_epochs=1, hyperopt_evals=2),
    },
    # CPU-laptop scale used by the book: synthetic at full paper scale, images scaled down
    "quick": {
        "seeds": 10,
        "meta_travel": "paper",
        "synthetic": dict(),
        "fashion_mnist": dict(epochs=6, n_train=6400, n_test=2000, lr_step_epochs=2, teacher="auto",
                              seeds=5),
        "cifar10_reduced": dict(epochs=6, n_train=6400, n_test=2000, lr_step_epochs=2, teacher="auto",
                                seeds=5),
        "cifar10": dict(epochs=4, n_train=12800, n_test=2000, lr_step_epochs=2, teacher="auto", seeds=3),
    },
    # the paper's exact protocol, 10 seeds, for a GPU
    "paper": {"seeds": 10},
}

# fields a run's identity is made of: given by their own argument (CLI flag), never as an override
RESERVED_FIELDS: dict[str, str] = {"dataset": "--dataset", "method": "--methods", "seed": "--seeds",
                                   "profile": "--profile", "device": "--device"}


def profile_seeds(profile: str, dataset: str) -> int:
    """Number of seeds the profile runs for a dataset."""
    check_choice("profile", profile, PROFILES)
    check_choice("dataset", dataset, DATASETS)
    spec = PROFILE_SPECS[profile]
    return int(spec.get(dataset, {}).get("seeds", spec["seeds"]))


def meta_steps(dataset: str, epochs: int, batch_size: int, n_train: int | None = None) -> int:
    """Metaparameter steps of one gradient-based run on an image dataset: one per training batch of D_train,
    ``epochs * ceil(|D_train| / batch_size)``, with ``|D_train| = |D| - |D| // 10`` (the 9:1 split of Sec. 4.2) and
    ``|D|`` the first ``n_train`` images (all of :data:`PAPER_IMAGES` when ``None``)."""
    if dataset not in IMAGE_DATASETS:
        raise ValueError(f"meta_steps is for the image datasets {IMAGE_DATASETS}, got {dataset!r}")
    n_full = PAPER_IMAGES[dataset] if n_train is None else min(PAPER_IMAGES[dataset], int(n_train))
    return int(epochs) * math.ceil((n_full - n_full // 10) / int(batch_size))


def paper_travel_meta_lr(dataset: str, epochs: int, batch_size: int, n_train: int | None = None) -> float:
    """The metaparameter learning rate that gives a run of this size the paper's maximal travel
    ``meta_lr * meta_clip * steps`` (module docstring): the paper's ``meta_lr`` times paper steps / these steps."""
    paper = PAPER_PROTOCOL[dataset]
    paper_steps = meta_steps(dataset, paper["epochs"], paper["batch_size"])
    return float(paper["meta_lr"]) * paper_steps / meta_steps(dataset, epochs, batch_size, n_train)


def resolve_config(dataset: str, method: str, profile: str = "quick", seed: int = 0,
                   known_methods: Iterable[str] = ALL_METHOD_NAMES, **overrides: Any) -> ExperimentConfig:
    """Build and validate the config of one run: paper protocol, then profile, then ``overrides``.

    ``known_methods``: the names the caller can run (default kdlib's own methods; the runner adds the methods a
    user registered)."""
    check_choice("dataset", dataset, DATASETS)
    check_choice("profile", profile, PROFILES)
    values: dict[str, Any] = dict(PAPER_PROTOCOL[dataset])
    values.update({k: v for k, v in PROFILE_SPECS[profile].get(dataset, {}).items() if k != "seeds"})
    values.update(overrides)
    if (PROFILE_SPECS[profile].get("meta_travel") == "paper" and dataset in IMAGE_DATASETS
            and "meta_lr" not in overrides and _is_count(values.get("epochs")) and _is_count(values.get("batch_size"))
            and (values.get("n_train") is None or _is_count(values.get("n_train")))):
        values["meta_lr"] = paper_travel_meta_lr(dataset, values["epochs"], values["batch_size"], values.get("n_train"))
    names = field_names()
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown config field(s) {sorted(unknown)}; valid fields: {sorted(names)}")
    cfg = ExperimentConfig(dataset=dataset, method=method, profile=profile, seed=seed, **values)
    validate(cfg, known_methods)
    return cfg


def _is_count(v: Any) -> bool:
    """A positive int (bad values are left for :func:`validate` to report, with its message)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1
