"""Display names of the datasets and methods of Table 2 (one place; pages never show an internal key).

The keys and the dataset/method labels are those of :mod:`kdlib.names` (spelled once there); this module adds
the labels only pages need (protocols, teachers) and the lookup helpers.
"""
from __future__ import annotations

from kdlib.names import DATASET_LABELS, DATASETS, METHOD_LABELS
from kdlib.names import METHOD_NAMES as METHODS

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

__all__ = ["DATASETS", "METHODS", "DATASET_LABELS", "METHOD_LABELS", "PROTOCOL_LABELS", "TEACHER_LABELS",
           "method_label", "dataset_label", "teacher_label"]
