"""Students and teachers of the paper (Sec. 4.1, 4.2), with the authors' layer names so their state dicts load.

* :class:`LogReg`: the synthetic student and teacher, one Linear on selected columns (code/synthetic_funcs.py).
* :class:`CifarStudent`: Cifar_Very_Tiny (passalis/pkth, copied by the authors): 15,050 parameters.
* :class:`FashionMNISTStudent`: FashionMNIST_Net (code/fashionmnist_net.py): 29,018 parameters.
* :class:`PreActResNet18`: the teachers' ResNet18 (PreActBlock [2,2,2,2], code/resnet.py, resnet_fmnist.py).
* :class:`SmallCNNTeacher`: kdlib's own CPU-friendly teacher (not in the paper), used when the authors'
  logits are absent.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from kdlib.pooling import max_pool2x2


class LogReg(nn.Module):
    """Logistic regression on the columns ``cols`` of x (Sec. 4.1): ``Linear(len(cols), num_classes)``.

    The Linear is the first (only) parameterized layer, so after ``torch.manual_seed(s)`` its initialization
    equals the authors' ``LogReg(idx)``.
    """

    def __init__(self, cols: Sequence[int], num_classes: int = 2) -> None:
        super().__init__()
        self.cols = [int(c) for c in cols]
        self.lin = nn.Linear(len(self.cols), num_classes)
        self.register_buffer("col_index", torch.tensor(self.cols, dtype=torch.long), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x.index_select(1, self.col_index))


class _TinyConvNet(nn.Module):
    """Three (Conv3x3 no padding, BN, ReLU, MaxPool2) blocks, flatten 128, FC64, ReLU, FC."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=3)
        self.conv1_bn = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3)
        self.conv2_bn = nn.BatchNorm2d(c2)
        self.conv3 = nn.Conv2d(c2, c3, kernel_size=3)
        self.conv3_bn = nn.BatchNorm2d(c3)
        self.fc1 = nn.Linear(128, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = max_pool2x2(F.relu(self.conv1_bn(self.conv1(x))))
        out = max_pool2x2(F.relu(self.conv2_bn(self.conv2(out))))
        out = max_pool2x2(F.relu(self.conv3_bn(self.conv3(out))))
        out = out.flatten(1)
        return self.fc2(F.relu(self.fc1(out)))


class CifarStudent(_TinyConvNet):
    """The CIFAR-10 student, Cifar_Very_Tiny (Sec. 4.2): 3->8->16->32 channels; 32->30->15->13->6->4->2,
    flatten 32*2*2 = 128 -> FC64 -> ReLU -> FC10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(3, (8, 16, 32), num_classes)


class FashionMNISTStudent(_TinyConvNet):
    """The Fashion-MNIST student, FashionMNIST_Net (Sec. 4.2): 1->8->16->128 channels; 28->26->13->11->5->3->1,
    flatten 128 -> FC64 -> ReLU -> FC10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(1, (8, 16, 128), num_classes)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016), as in the authors' code/resnet.py."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """The teachers' ResNet18 (Sec. 4.2): conv3x3(in->64)+BN+ReLU, PreActBlock stages [2,2,2,2] with widths
    64/128/256/512 and strides 1/2/2/2, global average pool (= avg_pool 4 on 32x32 and 28x28 inputs),
    Linear 512->10. ``in_channels=1`` is the authors' Fashion-MNIST variant (code/resnet_fmnist.py)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = _conv3x3(in_channels, 64)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, 2, 1)
        self.layer2 = self._make_layer(128, 2, 2)
        self.layer3 = self._make_layer(256, 2, 2)
        self.layer4 = self._make_layer(512, 2, 2)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class SmallCNNTeacher(nn.Module):
    """kdlib's CPU teacher (not the paper's). Four (Conv3x3 pad 1, BN, ReLU) blocks of widths w, 2w, 4w, 8w,
    each of the first three followed by MaxPool2 (32->16->8->4), global average pool, dropout 0.1, Linear.
    With w=32: 0.39 M parameters and ~15 M multiply-adds per 32x32 image, so it trains in CPU minutes
    (accuracies and times in :func:`kdlib.teachers.get_teacher`)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, w), nn.MaxPool2d(2),
            *block(w, 2 * w), nn.MaxPool2d(2),
            *block(2 * w, 4 * w), nn.MaxPool2d(2),
            *block(4 * w, 8 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.features(x)))


_IMAGE_CHANNELS = {"fashion_mnist": 1, "cifar10": 3, "cifar10_reduced": 3}


def make_student(dataset: str, cols: Sequence[int] | None = None) -> nn.Module:
    """The paper's student for ``dataset``; synthetic: ``LogReg(cols)`` (default [0, 1, 3])."""
    if dataset == "synthetic":
        return LogReg(cols if cols is not None else [0, 1, 3])
    if dataset in ("cifar10", "cifar10_reduced"):
        return CifarStudent()
    if dataset == "fashion_mnist":
        return FashionMNISTStudent()
    raise ValueError(f"unknown dataset {dataset!r}")


def make_teacher(kind: str, dataset: str) -> nn.Module:
    """A fresh teacher network: ``kind`` in {"small_cnn", "resnet18", "logreg"}."""
    if kind == "logreg":
        if dataset != "synthetic":
            raise ValueError("the logreg teacher is for the synthetic dataset only")
        return LogReg([0, 1, 2])
    if dataset not in _IMAGE_CHANNELS:
        raise ValueError(f"teacher {kind!r} needs an image dataset, got {dataset!r}")
    ch = _IMAGE_CHANNELS[dataset]
    if kind == "small_cnn":
        return SmallCNNTeacher(ch)
    if kind == "resnet18":
        return PreActResNet18(ch)
    raise ValueError(f"unknown teacher kind {kind!r}; choose small_cnn, resnet18 or logreg")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
