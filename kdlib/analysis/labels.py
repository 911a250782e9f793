"""Display names of the datasets and methods of Table 2 (one place; pages never show an internal key).

The keys are the ones of :mod:`kdlib.config` (``METHOD_NAMES``, ``DATASETS``); the labels are the paper's.
"""
from __future__ import annotations

METHODS: tuple[str, ...] = ("no_distillation", "naive", "random", "gradient", "hyperopt", "proposed")
DATASETS: tuple[str, ...] = ("synthetic", "fashion_mnist", "cifar10_reduced", "cifar10")

METHOD_LABELS: dict[str, str] = {"no_distillation": "Without distillation", "naive": "Naive", "random": "Random",
                                 "gradient": "Gradient-based", "hyperopt": "Hyperopt", "proposed": "Proposed"}
DATASET_LABELS: dict[str, str] = {"synthetic": "Synthetic", "fashion_mnist": "Fashion-MNIST",
                                  "cifar10_reduced": "Reduced CIFAR-10", "cifar10": "CIFAR-10"}
PROTOCOL_LABELS: dict[str, str] = {"authors": "authors' protocol", "defaults": "kdlib defaults"}


def method_label(method: str) -> str:
    """``"no_distillation"`` -> ``"Without distillation"``; unknown keys are returned unchanged."""
    return METHOD_LABELS.get(method, method)


def dataset_label(dataset: str) -> str:
    """``"cifar10_reduced"`` -> ``"Reduced CIFAR-10"``; unknown keys are returned unchanged."""
    return DATASET_LABELS.get(dataset, dataset)


TEACHER_LABELS: dict[str, str] = {
    "authors_resnet": "the authors' PreAct-ResNet18 (their published logits)",
    "authors_cnn": "the authors' small CNN (their published logits)",
    "authors_resnet_fmnist": "the authors' ResNet18 for Fashion-MNIST (their published logits)",
    "small_cnn": "a small CNN trained here",
    "resnet18": "a ResNet18 trained here",
    "logreg": "logistic regression on the teacher's features",
}


def teacher_label(name: str) -> str:
    """``"authors_resnet"`` -> ``"the authors' PreAct-ResNet18 (their published logits)"``; unknown names unchanged."""
    return TEACHER_LABELS.get(name, name)
