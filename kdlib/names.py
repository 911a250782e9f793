"""The one place for the names kdlib accepts and shows: datasets, methods, estimators, profiles, labels.

Everything that validates a name or prints one imports it from here, so a name is spelled once.
"""
from __future__ import annotations

# the datasets of Sec. 4: the synthetic problem (4.1) and the image datasets (4.2)
IMAGE_DATASETS: tuple[str, ...] = ("fashion_mnist", "cifar10_reduced", "cifar10")
DATASETS: tuple[str, ...] = ("synthetic",) + IMAGE_DATASETS
# the six methods of the paper, in the order of Table 2
METHOD_NAMES: tuple[str, ...] = ("no_distillation", "naive", "random", "gradient", "hyperopt", "proposed")
# beyond the paper: 2023-24 adaptive-temperature distillation and the paper's tuning on standardised logits
BEYOND_METHOD_NAMES: tuple[str, ...] = ("ctkd", "logit_std", "gradient_std")
# every method kdlib registers itself (kdlib.methods.METHODS adds any a user registers)
ALL_METHOD_NAMES: tuple[str, ...] = METHOD_NAMES + BEYOND_METHOD_NAMES
# hypergradient estimators of eq. (3)
ESTIMATORS: tuple[str, ...] = ("unrolled", "finite_difference", "neumann", "forward")
# experiment scales (kdlib.experiments.profiles)
PROFILES: tuple[str, ...] = ("smoke", "quick", "paper")
# the student's optimizer (contract 1): the paper uses plain SGD
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
# run-record statuses (kdlib.experiments.store)
STATUSES: tuple[str, ...] = ("ok", "diverged")

METHOD_LABELS: dict[str, str] = {"no_distillation": "Without distillation", "naive": "Naive", "random": "Random",
                                 "gradient": "Gradient-based", "hyperopt": "Hyperopt", "proposed": "Proposed",
                                 "ctkd": "CTKD (curriculum temperature)", "logit_std": "Logit standardisation",
                                 "gradient_std": "Gradient-based on standardised logits"}
DATASET_LABELS: dict[str, str] = {"synthetic": "Synthetic", "fashion_mnist": "Fashion-MNIST",
                                  "cifar10_reduced": "Reduced CIFAR-10", "cifar10": "CIFAR-10"}
ESTIMATOR_LABELS: dict[str, str] = {"unrolled": "unrolled (reverse mode)", "finite_difference": "finite difference",
                                    "neumann": "Neumann series", "forward": "forward mode"}

__all__ = ["IMAGE_DATASETS", "DATASETS", "METHOD_NAMES", "BEYOND_METHOD_NAMES", "ALL_METHOD_NAMES", "ESTIMATORS", "PROFILES", "OPTIMIZERS", "STATUSES",
           "METHOD_LABELS", "DATASET_LABELS", "ESTIMATOR_LABELS"]

# teacher kinds (kdlib.teachers); a user's own logits are given as "file:PATH.npy"
AUTHORS_TEACHERS: tuple[str, ...] = ("authors_resnet", "authors_cnn", "authors_resnet_fmnist")
TRAINED_TEACHERS: tuple[str, ...] = ("small_cnn", "resnet18", "logreg")
TEACHER_KINDS: tuple[str, ...] = ("auto",) + AUTHORS_TEACHERS + TRAINED_TEACHERS
__all__ += ["AUTHORS_TEACHERS", "TRAINED_TEACHERS", "TEACHER_KINDS"]
