"""The paper's protocol per dataset and the named profiles (``smoke``, ``quick``, ``paper``).

:func:`resolve_config` builds the config of one run: the paper's protocol (Sec. 4.1, 4.2 and the authors' code
notes), then the profile, then explicit overrides, and validates the result before any compute.
"""
from __future__ import annotations

from typing import Any, Iterable

from kdlib.errors import ConfigError
from kdlib.experiments.config import ExperimentConfig, _check_choice, field_names, validate
from kdlib.names import DATASETS, METHOD_NAMES, PROFILES

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

PROFILE_SPECS: dict[str, dict[str, Any]] = {
    # every code path, seconds per run
    "smoke": {
        "seeds": 2,
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
        "synthetic": dict(),
        "fashion_mnist": dict(epochs=6, n_train=6400, n_test=2000, lr_step_epochs=2, teacher="auto",
                              seeds=3),
        "cifar10_reduced": dict(epochs=6, n_train=6400, n_test=2000, lr_step_epochs=2, teacher="auto",
                                seeds=3),
        "cifar10": dict(epochs=4, n_train=12800, n_test=2000, lr_step_epochs=2, teacher="auto", seeds=2),
    },
    # the paper's exact protocol, 10 seeds, for a GPU
    "paper": {"seeds": 10},
}

# fields a run's identity is made of: given by their own argument (CLI flag), never as an override
RESERVED_FIELDS: dict[str, str] = {"dataset": "--dataset", "method": "--methods", "seed": "--seeds",
                                   "profile": "--profile", "device": "--device"}


def profile_seeds(profile: str, dataset: str) -> int:
    """Number of seeds the profile runs for a dataset."""
    _check_choice("profile", profile, PROFILES)
    _check_choice("dataset", dataset, DATASETS)
    spec = PROFILE_SPECS[profile]
    return int(spec.get(dataset, {}).get("seeds", spec["seeds"]))


def resolve_config(dataset: str, method: str, profile: str = "quick", seed: int = 0,
                   known_methods: Iterable[str] = METHOD_NAMES, **overrides: Any) -> ExperimentConfig:
    """Build and validate the config of one run: paper protocol, then profile, then ``overrides``.

    ``known_methods``: the names the caller can run (default the paper's six; the runner adds the methods a
    user registered)."""
    _check_choice("dataset", dataset, DATASETS)
    _check_choice("profile", profile, PROFILES)
    values: dict[str, Any] = dict(PAPER_PROTOCOL[dataset])
    values.update({k: v for k, v in PROFILE_SPECS[profile].get(dataset, {}).items() if k != "seeds"})
    values.update(overrides)
    names = field_names()
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown config field(s) {sorted(unknown)}; valid fields: {sorted(names)}")
    cfg = ExperimentConfig(dataset=dataset, method=method, profile=profile, seed=seed, **values)
    validate(cfg, known_methods)
    return cfg
