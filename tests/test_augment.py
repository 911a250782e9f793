"""The authors' training-time augmentation (``cifar10_loader(use_aug=True)``: RandomHorizontalFlip, then
RandomCrop(32, padding=4), on the raw image) as :class:`kdlib.data.augment.FlipCrop` on normalized batches, and
its place in the one loop (``augment="flip_crop"``)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import assert_same_history, random_image_problem
from PIL import Image
from torchvision.transforms import functional as TF

from kdlib.data import CIFAR_MEAN, CIFAR_STD, FMNIST_MEAN, FMNIST_STD
from kdlib.data.augment import FlipCrop
from kdlib.errors import ConfigError
from kdlib.experiments.config import ExperimentConfig
from kdlib.methods import fixed_tuner
from kdlib.train import Settings, loop, make_tuner, train_student, train_students_stacked


def _torchvision(raw: np.ndarray, flip: bool, top: int, left: int, mean, std) -> torch.Tensor:
    """The authors' pipeline on one uint8 image with the random choices given: flip, pad 4 with black, crop,
    ToTensor, Normalize (torchvision's own functions on a PIL image)."""
    img = Image.fromarray(raw if raw.shape[-1] == 3 else raw[..., 0])
    if flip:
        img = TF.hflip(img)
    img = TF.crop(TF.pad(img, 4, fill=0), top, left, raw.shape[0], raw.shape[1])
    return TF.normalize(TF.to_tensor(img), list(mean), list(std))


@pytest.mark.parametrize("shape,mean,std", [((32, 32, 3), CIFAR_MEAN, CIFAR_STD), ((28, 28, 1), FMNIST_MEAN, FMNIST_STD)])
def test_flip_crop_equals_torchvision_on_the_raw_image(shape, mean, std):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (7,) + shape, dtype=np.uint8)
    normalized = torch.stack([TF.normalize(TF.to_tensor(r if shape[-1] == 3 else r[..., 0]), list(mean), list(std))
                              for r in raw])
    flips = torch.tensor([0, 1, 0, 1, 1, 0, 1], dtype=torch.bool)
    offsets = torch.tensor([[0, 0], [8, 8], [3, 5], [0, 8], [4, 4], [8, 0], [1, 7]])  # both extremes of [0, 8]
    got = FlipCrop.for_normalization(mean, std).apply(normalized, flips, offsets)
    want = torch.stack([_torchvision(r, bool(f), int(o[0]), int(o[1]), mean, std)
                        for r, f, o in zip(raw, flips, offsets)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # offset (4, 4) without a flip is the identity; a corner offset shows 4 rows and columns of black
    torch.testing.assert_close(got[4], normalized[4].flip(2))
    black = torch.tensor(FlipCrop.for_normalization(mean, std).fill).view(-1, 1, 1)
    assert torch.equal(got[0][:, :4, :], black.expand_as(got[0][:, :4, :]))


def test_draws_cover_every_offset_and_flip_half_the_images_from_the_callers_generator():
    aug = FlipCrop.for_normalization(CIFAR_MEAN, CIFAR_STD)
    flips, offsets = aug.draw(20000, torch.Generator().manual_seed(1))
    assert set(offsets.unique().tolist()) == set(range(9))
    assert abs(flips.float().mean().item() - 0.5) < 0.015  # 4.2 binomial standard deviations
    again = aug.draw(20000, torch.Generator().manual_seed(1))
    assert torch.equal(flips, again[0]) and torch.equal(offsets, again[1])
    state = torch.get_rng_state()
    aug(torch.zeros(4, 3, 32, 32), torch.Generator().manual_seed(2))
    assert torch.equal(state, torch.get_rng_state())  # the global stream (the model's) is untouched


def _augmented_problem():
    problem = random_image_problem(32, 16, 16)
    return dataclasses.replace(problem, augment=FlipCrop.for_normalization(CIFAR_MEAN, CIFAR_STD))


def test_the_loop_augments_only_when_asked_reproducibly_and_per_run():
    problem = _augmented_problem()
    st = Settings(seed=3, epochs=2, batch_size=16, lr=0.1, shuffle=False)
    plain = train_student(st, problem, fixed_tuner(torch.tensor([0.5, 2.0])))
    unaugmented = train_student(st, dataclasses.replace(problem, augment=None), fixed_tuner(torch.tensor([0.5, 2.0])))
    assert plain.history == [dict(r, wall_time=p["wall_time"]) for r, p in zip(unaugmented.history, plain.history)]
    aug = dataclasses.replace(st, augment="flip_crop")
    a = train_student(aug, problem, fixed_tuner(torch.tensor([0.5, 2.0])))
    b = train_student(aug, problem, fixed_tuner(torch.tensor([0.5, 2.0])))
    drop = lambda h: [{k: v for k, v in r.items() if k != "wall_time"} for r in h]  # noqa: E731
    assert drop(a.history) == drop(b.history)
    assert drop(a.history) != drop(plain.history)
    for p, q in zip(a.model.parameters(), plain.model.parameters()):
        if not torch.equal(p, q):
            break
    else:
        pytest.fail("the augmented run trained exactly as the plain one")


def test_stacked_runs_augment_each_run_as_its_own_one_by_one_run():
    problem = _augmented_problem()
    values = torch.tensor([[0.3, 1.5], [0.7, 4.0]])
    sts = [Settings(seed=s, epochs=2, batch_size=16, lr=0.1, shuffle=False, augment="flip_crop") for s in (0, 1)]
    stacked = train_students_stacked(sts, problem, values)
    for st, v, got in zip(sts, values, stacked):
        ref = train_student(st, problem, fixed_tuner(v))
        assert_same_history(got, ref, rows=2, abs_tol=0, rel_tol=1e-5, accuracy_tol=1 / 16 + 1e-12)


def test_augment_is_refused_before_any_compute_where_there_are_no_images():
    problem = random_image_problem(32, 16, 16)  # no augmentation supplied
    with pytest.raises(ConfigError, match="augment"):
        train_student(Settings(epochs=1, batch_size=16, augment="flip_crop"), problem,
                      fixed_tuner(torch.tensor([0.5, 2.0])))
    with pytest.raises(ConfigError, match="augment"):
        ExperimentConfig(dataset="synthetic", method="gradient", iterations=5, augment="flip_crop").validate()
    with pytest.raises(ConfigError, match="augment"):
        Settings(epochs=1, augment="crop").validate()


class _Recording:
    """The problem's augmentation, recording each call's input and generator (to tell the three streams apart)."""

    def __init__(self, aug: FlipCrop) -> None:
        self.aug, self.calls = aug, []

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = self.aug(x, generator)
        self.calls.append((x.clone(), generator, out))
        return out


def _tuned(values):
    return lambda optimizer, st: make_tuner(st, optimizer, torch.tensor(values), "gradient")


def test_augment_val_draws_the_hypergradients_dval_batches_and_the_logged_validation_afresh():
    """The authors' D_val is a Subset of their augmented training set: with ``augment_val`` every D_val batch a
    hypergradient draws is the next stored batch, flipped and cropped from a stream of its own (seed +
    AUGMENT_VAL_SEED_OFFSET), and every logged validation is on all of D_val drawn afresh from a third stream."""
    problem = _augmented_problem()
    rec = _Recording(problem.augment)
    st = Settings(seed=3, epochs=3, batch_size=16, lr=0.1, shuffle=False, augment="flip_crop", augment_val=True,
                  estimator="finite_difference", eval_every=1)
    out = train_student(st, dataclasses.replace(problem, augment=rec), _tuned([0.5, 2.0]))
    by_stream: dict[int, list] = {}
    for x, g, y in rec.calls:
        by_stream.setdefault(id(g), []).append((x, y))
    assert len(by_stream) == 3  # training, the hypergradient's D_val batches, the logged validation
    train_calls, val_calls, log_calls = by_stream.values()
    assert len(train_calls) == 3 * 2  # 32 images in batches of 16, 3 epochs
    evals = out.history[-1]["hypergrad_evals"]
    assert evals == 6 and len(val_calls) == evals  # one D_val batch per hypergradient
    val_g = torch.Generator().manual_seed(3 + loop.AUGMENT_VAL_SEED_OFFSET)
    for (x, y), want in zip(val_calls, [problem.val.x[:16]] * 6):  # D_val is one batch of 16, cycled
        torch.testing.assert_close(x, want, rtol=0, atol=0)
        torch.testing.assert_close(y, problem.augment(want, val_g), rtol=0, atol=0)
    assert len(log_calls) == len(out.history) == 3
    assert all(torch.equal(x, problem.val.x) for x, _ in log_calls)
    assert not torch.equal(log_calls[0][1], log_calls[1][1])  # a fresh draw at every evaluation


def test_augment_val_moves_neither_the_training_stream_nor_a_fixed_run():
    """A fixed-metaparameter run draws no hypergradient: ``augment_val`` changes only its logged validation, so its
    training (test accuracy, model) is bit for bit the one without it; a tuned run's metaparameters move with it,
    reproducibly."""
    problem = _augmented_problem()
    st = Settings(seed=2, epochs=2, batch_size=16, lr=0.1, shuffle=False, augment="flip_crop", eval_every=1,
                  estimator="finite_difference")
    on = dataclasses.replace(st, augment_val=True)
    a = train_student(st, problem, fixed_tuner(torch.tensor([0.5, 2.0])))
    b = train_student(on, problem, fixed_tuner(torch.tensor([0.5, 2.0])))
    assert [r["test_accuracy"] for r in a.history] == [r["test_accuracy"] for r in b.history]
    assert [r["test_loss"] for r in a.history] == [r["test_loss"] for r in b.history]
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert [r["val_loss"] for r in a.history] != [r["val_loss"] for r in b.history]
    tuned = [train_student(s, problem, _tuned([0.5, 2.0])).history for s in (st, on, on)]
    metas = [[(r["lambda1"], r["temperature"]) for r in h] for h in tuned]
    assert metas[1] == metas[2] and metas[0] != metas[1]


def test_augment_val_needs_augment():
    with pytest.raises(ConfigError, match="augment_val"):
        Settings(epochs=1, augment_val=True).validate()
    with pytest.raises(ConfigError, match="augment_val"):
        Settings(epochs=1, augment="flip_crop", augment_val="yes").validate()


@pytest.mark.parametrize("estimator", ["finite_difference", "unrolled"])
def test_stacked_runs_augment_their_own_dval_as_their_one_by_one_runs(estimator):
    """Stacked, each run draws its own augmented D_val batches and validation (a leading run axis): the same
    metaparameter path and logged validation as its one-by-one run, within float32 rounding."""
    problem = _augmented_problem()
    values = torch.tensor([[0.3, 1.5], [0.7, 4.0]])
    sts = [Settings(seed=s, epochs=2, batch_size=16, lr=0.1, shuffle=False, augment="flip_crop", augment_val=True,
                    estimator=estimator, eval_every=1) for s in (0, 1)]
    got = train_students_stacked(sts, problem, values, schedule="gradient")
    for st, v, run in zip(sts, values, got):
        ref = train_student(st, problem, _tuned(v.tolist()))
        assert_same_history(run, ref, rows=2, abs_tol=1e-5, rel_tol=1e-4, accuracy_tol=1 / 16 + 1e-12)
    # the two runs drew different D_val images: their logged validation differs though their start is shared
    assert got[0].history[0]["val_loss"] != got[1].history[0]["val_loss"]


def test_a_checkpoint_with_one_runs_val_streams_saved_flat_resumes_bit_for_bit(tmp_path, monkeypatch):
    """e9dab33 saved a run's two D_val streams as one flat pair (one run per loop then); resumed now, such a
    checkpoint goes on as if uninterrupted."""
    from kdlib.train.checkpoint import Checkpoint

    problem = _augmented_problem()
    st = Settings(seed=1, epochs=3, batch_size=16, lr=0.1, shuffle=False, augment="flip_crop", augment_val=True,
                  estimator="finite_difference", eval_every=1)
    ref = train_student(st, problem, _tuned([0.5, 2.0]))
    path = tmp_path / "run.0.pt"
    real = Checkpoint.save

    class Killed(BaseException):
        pass

    def save_then_die(self, settings, **state):
        real(self, settings, **state)
        raise Killed()

    monkeypatch.setattr(Checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        train_student(st, problem, _tuned([0.5, 2.0]), checkpoint=Checkpoint(path))
    monkeypatch.setattr(Checkpoint, "save", real)
    state = torch.load(path, weights_only=False)
    (pair,) = state["val_gens"]
    state["val_gens"] = list(pair)  # the e9dab33 layout
    torch.save(state, path)
    resumed = train_student(st, problem, _tuned([0.5, 2.0]), checkpoint=Checkpoint(path))
    drop = lambda h: [{k: v for k, v in r.items() if k != "wall_time"} for r in h]  # noqa: E731
    assert drop(resumed.history) == drop(ref.history)
    state["val_gens"] = [torch.Generator().manual_seed(9).get_state()] * 2  # other streams: the test can fail
    torch.save(state, path)
    assert drop(train_student(st, problem, _tuned([0.5, 2.0]), checkpoint=Checkpoint(path)).history) != drop(ref.history)
