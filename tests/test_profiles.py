"""kdlib.experiments.profiles: the metaparameter travel rule of the scaled-down image profiles.

At ``smoke`` and ``quick`` an image run has far fewer metaparameter steps than at the paper's scale; its
``meta_lr`` is scaled so that the maximal travel ``meta_lr * meta_clip * steps`` is the paper's. The ``paper``
profile is the paper's protocol (Sec. 4.2), unchanged, and an explicit ``meta_lr`` always wins."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest

from kdlib.data import split_train_val
from kdlib.experiments.profiles import (PAPER_IMAGES, PAPER_PROTOCOL, meta_steps, paper_travel_meta_lr,
                                        resolve_config)
from kdlib.names import IMAGE_DATASETS

SCALED = ("smoke", "quick")


def _travel(cfg) -> float:
    return cfg.meta_lr * cfg.meta_clip * meta_steps(cfg.dataset, cfg.epochs, cfg.batch_size, cfg.n_train)


def _paper_travel(dataset: str) -> Fraction:
    p = PAPER_PROTOCOL[dataset]
    return Fraction(p["meta_lr"]) * Fraction(0.01) * meta_steps(dataset, p["epochs"], p["batch_size"])


@pytest.mark.parametrize("profile", SCALED)
@pytest.mark.parametrize("dataset", IMAGE_DATASETS)
def test_scaled_profiles_keep_the_paper_travel(profile, dataset):
    cfg = resolve_config(dataset, "gradient", profile)
    paper = resolve_config(dataset, "gradient", "paper")
    steps = meta_steps(dataset, cfg.epochs, cfg.batch_size, cfg.n_train)
    assert steps < meta_steps(dataset, paper.epochs, paper.batch_size, paper.n_train)  # really scaled down
    assert cfg.meta_clip == paper.meta_clip
    # travel equality: exact up to the one rounding of the float division that makes meta_lr
    assert math.isclose(_travel(cfg), _travel(paper), rel_tol=1e-15, abs_tol=0)
    assert abs(Fraction(cfg.meta_lr) * Fraction(cfg.meta_clip) * steps - _paper_travel(dataset)) \
        <= _paper_travel(dataset) * Fraction(1, 2**50)
    assert cfg.meta_lr > PAPER_PROTOCOL[dataset]["meta_lr"]
    # every tuned method gets the same rule (it is a property of the run's scale, not of the method)
    for method in ("proposed", "random", "no_distillation"):
        assert resolve_config(dataset, method, profile).meta_lr == cfg.meta_lr


@pytest.mark.parametrize("dataset", IMAGE_DATASETS)
def test_paper_profile_is_the_paper_protocol(dataset):
    cfg = resolve_config(dataset, "gradient", "paper")
    for k, v in PAPER_PROTOCOL[dataset].items():
        assert getattr(cfg, k) == v, k
    assert cfg.meta_lr == PAPER_PROTOCOL[dataset]["meta_lr"] and cfg.meta_clip == 0.01 and cfg.n_train is None
    assert paper_travel_meta_lr(dataset, cfg.epochs, cfg.batch_size) == cfg.meta_lr
    # an override of the scale at the paper profile does not rescale meta_lr: paper means the paper's protocol
    assert resolve_config(dataset, "gradient", "paper", epochs=3).meta_lr == PAPER_PROTOCOL[dataset]["meta_lr"]


@pytest.mark.parametrize("profile", SCALED + ("paper",))
@pytest.mark.parametrize("dataset", IMAGE_DATASETS)
def test_explicit_meta_lr_wins(profile, dataset):
    assert resolve_config(dataset, "gradient", profile, meta_lr=0.03).meta_lr == 0.03
    # also when it equals the paper's value (the user asks for the unscaled rate)
    paper_lr = PAPER_PROTOCOL[dataset]["meta_lr"]
    assert resolve_config(dataset, "gradient", profile, meta_lr=paper_lr).meta_lr == paper_lr


def test_cli_set_meta_lr_wins_and_set_scale_is_rescaled():
    from kdlib.cli import _parse_override
    from kdlib.experiments.runner import plan

    cfgs = plan("cifar10_reduced", "gradient,proposed", 2, "quick", overrides=dict([_parse_override("meta_lr=0.25")]))
    assert [c.meta_lr for c in cfgs] == [0.25] * 4
    # --set of the scale (not of meta_lr) keeps the paper's travel at the new number of steps
    cfg = plan("cifar10_reduced", "gradient", 1, "quick", overrides=dict([_parse_override("epochs=3")]))[0]
    assert meta_steps("cifar10_reduced", 3, 128, 6400) == 135
    assert math.isclose(_travel(cfg), float(_paper_travel("cifar10_reduced")), rel_tol=1e-15)


def test_meta_steps_count_the_batches_of_the_split():
    """``meta_steps`` agrees with the 9:1 split of :mod:`kdlib.data` (one step per batch of D_train)."""
    for ds, n in PAPER_IMAGES.items():
        tr, _ = split_train_val(n)
        assert meta_steps(ds, 1, 128) == math.ceil(len(tr) / 128)
    assert meta_steps("cifar10_reduced", 50, 128) == 4500  # 11,520 / 128 = 90 batches, 50 epochs (Sec. 4.2)
    assert meta_steps("cifar10_reduced", 1, 128, n_train=10 ** 6) == 90  # capped at the reduced set
    with pytest.raises(ValueError):
        meta_steps("synthetic", 1, 15)


def test_synthetic_is_not_rescaled():
    for profile in ("smoke", "quick", "paper"):
        assert resolve_config("synthetic", "gradient", profile).meta_lr == PAPER_PROTOCOL["synthetic"]["meta_lr"]
