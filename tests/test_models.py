"""kdlib.models: the paper's students (shapes, parameter counts by hand), teachers, LogReg columns."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from kdlib import models as M


def _conv(cin, cout, k=3, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def _bn(c):
    return 2 * c  # weight and bias (running stats are buffers)


def _fc(i, o):
    return i * o + o


def test_cifar_student_shape_and_parameter_count():
    # Cifar_Very_Tiny: 32 -> conv 30 -> pool 15 -> conv 13 -> pool 6 -> conv 4 -> pool 2; 32 * 2 * 2 = 128
    hand = (_conv(3, 8) + _bn(8) + _conv(8, 16) + _bn(16) + _conv(16, 32) + _bn(32)
            + _fc(128, 64) + _fc(64, 10))
    assert hand == 15050
    m = M.CifarStudent()
    assert M.count_parameters(m) == hand
    assert m(torch.randn(5, 3, 32, 32)).shape == (5, 10)


def test_fashion_mnist_student_shape_and_parameter_count():
    # FashionMNIST_Net: 28 -> 26 -> 13 -> 11 -> 5 -> 3 -> 1; 128 * 1 * 1 = 128
    hand = (_conv(1, 8) + _bn(8) + _conv(8, 16) + _bn(16) + _conv(16, 128) + _bn(128)
            + _fc(128, 64) + _fc(64, 10))
    assert hand == 29018
    m = M.FashionMNISTStudent()
    assert M.count_parameters(m) == hand
    assert m(torch.randn(4, 1, 28, 28)).shape == (4, 10)


def test_students_keep_the_authors_layer_names():
    keys = set(M.CifarStudent().state_dict())
    for k in ("conv1.weight", "conv1_bn.running_mean", "conv3_bn.weight", "fc1.weight", "fc2.bias"):
        assert k in keys
    rkeys = set(M.PreActResNet18().state_dict())
    for k in ("conv1.weight", "bn1.weight", "layer2.0.shortcut.0.weight", "layer4.1.conv2.weight",
              "linear.weight"):
        assert k in rkeys


def test_preact_resnet18_shapes_and_count():
    m = M.PreActResNet18()
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert M.PreActResNet18(in_channels=1).eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)

    def block(cin, cout, stride):
        n = _bn(cin) + _conv(cin, cout, bias=False) + _bn(cout) + _conv(cout, cout, bias=False)
        if stride != 1 or cin != cout:
            n += _conv(cin, cout, k=1, bias=False)
        return n

    hand = _conv(3, 64, bias=False) + _bn(64)
    cin = 64
    for w, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
        hand += block(cin, w, s) + block(w, w, 1)
        cin = w
    hand += _fc(512, 10)
    assert M.count_parameters(m) == hand


def test_small_cnn_teacher_shapes():
    for ch, hw in ((3, 32), (1, 28)):
        m = M.SmallCNNTeacher(ch)
        assert m(torch.randn(3, ch, hw, hw)).shape == (3, 10)


def test_logreg_uses_only_its_columns_and_matches_plain_linear_init():
    torch.manual_seed(42)
    m = M.LogReg([0, 1, 3])
    torch.manual_seed(42)
    ref = nn.Linear(3, 2)  # the authors' LogReg(idx) creates exactly this layer
    assert torch.equal(m.lin.weight, ref.weight) and torch.equal(m.lin.bias, ref.bias)
    x = torch.randn(6, 4)
    x2 = x.clone()
    x2[:, 2] = 1000.0  # the unused column
    assert torch.equal(m(x), m(x2))
    torch.testing.assert_close(m(x), ref(x[:, [0, 1, 3]]))
    assert m(x).shape == (6, 2)


def test_factories():
    assert isinstance(M.make_student("synthetic"), M.LogReg) and M.make_student("synthetic").cols == [0, 1, 3]
    assert M.make_student("synthetic", cols=[0, 1, 2]).cols == [0, 1, 2]
    assert isinstance(M.make_student("cifar10_reduced"), M.CifarStudent)
    assert isinstance(M.make_student("fashion_mnist"), M.FashionMNISTStudent)
    assert isinstance(M.make_teacher("resnet18", "fashion_mnist"), M.PreActResNet18)
    assert M.make_teacher("resnet18", "fashion_mnist").conv1.in_channels == 1
    assert M.make_teacher("small_cnn", "cifar10").features[0].in_channels == 3
    assert M.make_teacher("logreg", "synthetic").cols == [0, 1, 2]
    with pytest.raises(ValueError):
        M.make_student("mnist")
    with pytest.raises(ValueError):
        M.make_teacher("small_cnn", "synthetic")
    with pytest.raises(ValueError):
        M.make_teacher("vit", "cifar10")
