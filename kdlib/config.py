"""One config schema for every experiment, and the named profiles (``smoke``, ``quick``, ``paper``).

A run is fully described by an :class:`ExperimentConfig`. :func:`resolve_config` builds one from a dataset,
a method, a profile and a seed, then applies explicit overrides, and validates the result so that bad input
fails early with an error that names the fix.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

DATASETS = ("synthetic", "fashion_mnist", "cifar10_reduced", "cifar10")
PROFILES = ("smoke", "quick", "paper")
ESTIMATORS = ("unrolled", "finite_difference", "neumann", "forward")
# the six methods of the paper, in the order of Table 2
METHOD_NAMES = ("no_distillation", "naive", "random", "gradient", "hyperopt", "proposed")


@dataclass
class ExperimentConfig:
    """Everything that determines one (dataset, method, seed) run.

    Names follow the paper: ``lambda1`` weights the classification term of L_train (eq. of Sec. 2),
    ``temperature`` is T, ``t_val`` is T_val of L_val, ``e1``/``e2`` are the gradient and extrapolation
    iteration counts of Algorithm 1.
    """

    dataset: str = "synthetic"
    method: str = "gradient"
    seed: int = 0
    profile: str = "quick"
    device: str = "cpu"

    # data
    variant: str = "paper"  # synthetic only: "paper" or "authors" (see kdlib.data.synthetic)
    holdout: bool = False  # synthetic: tune on a separate validation draw instead of the test set
    n_train: int | None = None  # subset of the student's training data (None = all)
    n_test: int | None = None
    split_seed: int | None = None  # None: ordered 9:1 split as the authors did; int: seeded permutation
    shuffle: bool = False  # the authors' loaders did not shuffle
    data_root: str | None = None
    download: bool = False

    # teacher
    teacher: str = "auto"  # "auto", "authors_resnet", "authors_cnn", "small_cnn", "resnet18", "logreg"
    teacher_epochs: int | None = None

    # student optimisation
    iterations: int | None = None  # synthetic: full-batch steps
    epochs: int | None = None  # images: epochs
    batch_size: int | None = None  # None = full batch
    lr: float = 1.0
    lr_step_epochs: int | None = 10  # StepLR period in epochs (None: constant)
    lr_gamma: float = 0.5
    t_val: float = 1.0
    log_every: int = 1  # synthetic: iterations between logged points; images: epochs
    eval_every: int = 1  # images: epochs between test/val evaluations (after epoch 0, every k-th, the end)

    # metaparameters
    meta_lr: float = 0.1
    meta_clip: float = 0.01  # value clipping of the hypergradient, as the authors did
    estimator: str = "finite_difference"
    unroll_steps: int = 1
    e1: int = 10
    e2: int = 10
    proposed_reset: str = "global"  # "global" (our default) or "epoch" (authors' per-epoch reset)
    clamp_extrapolation: bool = True
    random_law: str = "uniform"  # random baseline T law: "uniform" (paper text) or "loguniform" (authors' code)
    hyperopt_evals: int = 5
    init_lambda1: float | None = None  # None: draw lambda1 ~ U(0,1)
    init_temperature: float | None = None  # None: draw log10 T ~ U(-1,1)

    # the student's optimizer (issue 9; the paper: plain SGD)
    optimizer: str = "sgd"            # "sgd" | "adam" | "adamw" (the paper: plain SGD)
    momentum: float = 0.0             # SGD only
    nesterov: bool = False            # SGD only
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)   # Adam/AdamW
    init_law: str = "uniform"         # "uniform": lambda1 ~ U(0,1), log10 T ~ U(-1,1) from default_rng(seed) (today);
                                      # "authors": the authors' sequence, np.random.seed(42), run index = seed
    fd_virtual_lr: str = "current"    # finite-difference virtual step at the "current" lr or the "initial" lr (authors)

    # loss form
    loss_form: str = "ce"  # "ce" (paper) or "kl" (authors' code)
    t2_scaling: bool = False  # Hinton's T^2 factor on the distillation term

    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def key(self) -> str:
        """Filesystem-safe identifier of the (dataset, method, seed) cell."""
        return f"{self.dataset}__{self.method}__seed{self.seed}"


# Paper protocol per dataset (Sec. 4.1, 4.2 and the authors' code notes).
_PAPER: dict[str, dict[str, Any]] = {
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


def profile_seeds(profile: str, dataset: str) -> int:
    """Number of seeds the profile runs for a dataset."""
    _check_choice("profile", profile, PROFILES)
    spec = PROFILE_SPECS[profile]
    return int(spec.get(dataset, {}).get("seeds", spec["seeds"]))


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")


def resolve_config(dataset: str, method: str, profile: str = "quick", seed: int = 0,
                   **overrides: Any) -> ExperimentConfig:
    """Build and validate the config of one run: paper protocol, then profile, then ``overrides``."""
    _check_choice("dataset", dataset, DATASETS)
    _check_choice("profile", profile, PROFILES)
    from kdlib.methods import METHODS  # late import: methods depend on config

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(sorted(METHODS))}")
    values: dict[str, Any] = dict(_PAPER[dataset])
    values.update({k: v for k, v in PROFILE_SPECS[profile].get(dataset, {}).items() if k != "seeds"})
    values.update(overrides)
    names = {f.name for f in dataclasses.fields(ExperimentConfig)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown config field(s) {sorted(unknown)}; valid fields: {sorted(names)}")
    cfg = ExperimentConfig(dataset=dataset, method=method, profile=profile, seed=seed, **values)
    validate(cfg)
    return cfg


def validate(cfg: ExperimentConfig) -> None:
    """Raise ``ValueError`` naming the fix for any out-of-range or unknown setting."""
    from kdlib.metaparams import LAMBDA1_RANGE, TEMPERATURE_RANGE
    from kdlib.methods import METHODS

    _check_choice("dataset", cfg.dataset, DATASETS)
    _check_choice("profile", cfg.profile, PROFILES)
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; choose one of: {', '.join(sorted(METHODS))}")
    _check_choice("estimator", cfg.estimator, ESTIMATORS)
    _check_choice("variant", cfg.variant, ("paper", "authors"))
    _check_choice("random_law", cfg.random_law, ("uniform", "loguniform"))
    _check_choice("loss_form", cfg.loss_form, ("ce", "kl"))
    _check_choice("proposed_reset", cfg.proposed_reset, ("global", "epoch"))
    if cfg.e1 < 2:
        raise ValueError(f"e1={cfg.e1}: a line needs at least 2 recorded points; set e1 >= 2")
    if cfg.e2 < 0:
        raise ValueError(f"e2={cfg.e2}: set e2 >= 0")
    if cfg.init_lambda1 is not None and not LAMBDA1_RANGE[0] <= cfg.init_lambda1 <= LAMBDA1_RANGE[1]:
        raise ValueError(f"init_lambda1={cfg.init_lambda1} is outside [{LAMBDA1_RANGE[0]}, {LAMBDA1_RANGE[1]}]")
    if cfg.init_temperature is not None and not (
            TEMPERATURE_RANGE[0] <= cfg.init_temperature <= TEMPERATURE_RANGE[1]):
        raise ValueError(f"init_temperature={cfg.init_temperature} is outside "
                         f"[{TEMPERATURE_RANGE[0]}, {TEMPERATURE_RANGE[1]}]")
    if cfg.dataset == "synthetic":
        if not cfg.iterations or cfg.iterations < 1:
            raise ValueError("synthetic runs need iterations >= 1")
    elif not cfg.epochs or cfg.epochs < 1:
        raise ValueError(f"{cfg.dataset} runs need epochs >= 1")
    for name in ("lr", "meta_lr", "t_val", "lr_gamma"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)}")
    if cfg.unroll_steps < 1:
        raise ValueError("unroll_steps must be >= 1")
    if not isinstance(cfg.eval_every, int) or isinstance(cfg.eval_every, bool) or cfg.eval_every < 1:
        raise ValueError(f"eval_every must be an integer >= 1 (epochs between evaluations; 5 = the authors'), "
                         f"got {cfg.eval_every!r}")
