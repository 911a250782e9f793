"""kdlib.Tuner in a user's own training loop: RNG neutrality, resume, NaN skip, every=k, DataLoaders, errors."""
from __future__ import annotations

import copy
import inspect
import itertools
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import kdlib
import kdlib.tuner as tuner_mod
from kdlib.hypergrad import hypergradient
from kdlib.losses import distillation_loss
from kdlib.metaparams import in_box, project


def _data(n: int = 50, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).long()
    return x, y


def _teacher() -> nn.Module:
    torch.manual_seed(123)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))


def _student(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 2))


def _loaders(batch_size: int = 16):
    x, y = _data(50)
    xv, yv = _data(40, seed=1)
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(xv, yv), batch_size=batch_size, shuffle=True)
    return train, val


def _train(tuner_kw: dict | None, epochs: int = 2, optimizer: str = "sgd", seed: int = 0, batch_size: int = 16):
    """The README loop; ``tuner_kw=None``: no tuner, a fixed (0.5, 2) loss written by hand."""
    teacher = _teacher()
    student = _student(seed)
    opt = (torch.optim.SGD(student.parameters(), lr=0.1) if optimizer == "sgd"
           else torch.optim.Adam(student.parameters(), lr=1e-2))
    torch.manual_seed(seed + 100)  # the loop's stream: DataLoader shuffles and dropout masks
    train, val = _loaders(batch_size)
    tuner = None if tuner_kw is None else kdlib.Tuner(opt, **tuner_kw)
    val_iter = kdlib.cycle(val)
    for _ in range(epochs):
        for (x, y), val_batch in zip(train, val_iter):
            with torch.no_grad():
                t = teacher(x)
            if tuner is None:
                loss = distillation_loss(student(x), t, y, 0.5, 2.0)
            else:
                tuner.step(student, (x, y, t), val_batch)
                loss = tuner.loss(student(x), t, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return student, tuner, torch.get_rng_state()


def test_fixed_tuner_trains_the_bit_identical_student():
    ref, _, rng_ref = _train(None)
    got, tuner, rng_got = _train(dict(init=(0.5, 2.0), schedule="fixed"))
    for a, b in zip(ref.state_dict().values(), got.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(rng_ref, rng_got)
    assert tuner.hypergrad_evals == 0 and len(tuner.history) == 8  # 50 samples, batch 16: 4 batches x 2 epochs


@pytest.mark.parametrize("estimator", ["unrolled", "finite_difference"])
def test_tuned_run_leaves_the_global_rng_stream_untouched(estimator):
    _, _, rng_ref = _train(None)
    student, tuner, rng_got = _train(dict(init=(0.5, 2.0), schedule="gradient", estimator=estimator,
                                          meta_lr=1.0, meta_clip=1.0))
    assert torch.equal(rng_ref, rng_got)  # the loop consumed exactly its own random numbers
    assert tuner.hypergrad_evals == 8
    assert not torch.equal(tuner.metaparams, torch.tensor([0.5, 2.0]))  # and the values did move


def test_tuned_run_is_reproducible():
    a = _train(dict(init=(0.3, 3.0), schedule="proposed", e1=3, e2=2, meta_lr=1.0, meta_clip=1.0))[1]
    b = _train(dict(init=(0.3, 3.0), schedule="proposed", e1=3, e2=2, meta_lr=1.0, meta_clip=1.0))[1]
    assert a.history == b.history


def test_batch_size_that_does_not_divide_the_data():
    # 50 samples in batches of 16: the last batch has 2 rows (BatchNorm in train mode still works on 2)
    student, tuner, _ = _train(dict(init=(0.5, 2.0), schedule="gradient", meta_lr=1.0, meta_clip=1.0), epochs=3)
    assert tuner.hypergrad_evals == 12 and tuner.nan_skipped == 0
    assert in_box(tuner.metaparams) and torch.isfinite(tuner.metaparams).all()
    assert [r["step"] for r in tuner.history] == list(range(12))


def _eval_student_problem():
    """A student in eval mode (a deterministic forward, so the estimator can be repeated outside the tuner), its
    SGD(lr=0.1), a train batch with teacher logits and a validation batch."""
    teacher, student = _teacher(), _student()
    student.eval()
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    x, y = _data(32)
    xv, yv = _data(32, seed=1)
    with torch.no_grad():
        t = teacher(x)
    return student, opt, x, y, t, xv, yv


def test_first_step_is_eq3_with_clip_and_projection():
    student, opt, x, y, t, xv, yv = _eval_student_problem()
    init = torch.tensor([0.5, 2.0])
    g = hypergradient(student, (x, y, t), (xv, yv), init, 0.1, t_val=1.0, method="unrolled")
    tuner = kdlib.Tuner(opt, init=init, schedule="gradient", meta_lr=0.5, meta_clip=1e-3)
    lam1, temp = tuner.step(student, (x, y, t), (xv, yv))
    expected = project(init - 0.5 * g.clamp(-1e-3, 1e-3))
    torch.testing.assert_close(torch.stack([lam1, temp]), expected, rtol=0, atol=1e-7)
    assert torch.equal(tuner.metaparams, torch.stack([lam1, temp]))


def _constant_hypergradient(value):
    def fake(model, train_batch, val_batch, metaparams, *args, **kwargs):
        return torch.as_tensor(value, dtype=metaparams.dtype)
    return fake


def _toy_steps(tuner: kdlib.Tuner, n: int) -> list[torch.Tensor]:
    model = nn.Linear(3, 2)
    x, y, t = torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), torch.randn(4, 2)
    return [torch.stack(tuner.step(model, (x, y, t), (x, y))).clone() for _ in range(n)]


def test_proposed_schedule_recovers_an_exactly_linear_trajectory(monkeypatch):
    # a constant hypergradient makes the gradient phase exactly linear: lambda_k = init - meta_lr * g * (k + 1);
    # Algorithm 1's line must continue it exactly over the e2 extrapolated iterations, cycle after cycle
    g = torch.tensor([0.004, -0.003])
    monkeypatch.setattr(tuner_mod, "hypergradient", _constant_hypergradient(g))
    e1, e2 = 4, 5
    init = torch.tensor([0.5, 2.0], dtype=torch.float64)
    tuner = kdlib.Tuner(lr=0.1, init=init, schedule="proposed", e1=e1, e2=e2, meta_lr=1.0, meta_clip=0.01)
    values = torch.stack(_toy_steps(tuner, e1 + e2)).double()
    phases = [r["phase"] for r in tuner.history]
    assert phases == ["gradient"] * e1 + ["extrapolate"] * e2
    k = torch.arange(1, e1 + e2 + 1, dtype=torch.float64).unsqueeze(1)
    torch.testing.assert_close(values, init - g.double() * k, rtol=0, atol=2e-6)
    assert tuner.hypergrad_evals == e1


def test_every_k_counts(monkeypatch):
    g = torch.tensor([0.01, 0.01])
    monkeypatch.setattr(tuner_mod, "hypergradient", _constant_hypergradient(g))
    tuner = kdlib.Tuner(lr=0.1, init=(0.5, 2.0), schedule="gradient", every=3, meta_lr=1.0)
    values = _toy_steps(tuner, 10)
    assert tuner.hypergrad_evals == 4  # iterations 0, 3, 6, 9
    moved = [i for i in range(10) if not torch.equal(values[i], values[i - 1] if i else torch.tensor([0.5, 2.0]))]
    assert moved == [0, 3, 6, 9]


def test_nan_hypergradients_are_skipped_and_counted(monkeypatch):
    calls = itertools.count()

    def flaky(model, train_batch, val_batch, metaparams, *args, **kwargs):
        i = next(calls)
        return torch.tensor([float("nan") if i % 3 == 1 else 0.01, float("inf") if i % 3 == 2 else -0.01])

    monkeypatch.setattr(tuner_mod, "hypergradient", flaky)
    tuner = kdlib.Tuner(lr=0.1, init=(0.5, 2.0), schedule="gradient", meta_lr=1.0)
    values = _toy_steps(tuner, 9)
    assert tuner.hypergrad_evals == 9 and tuner.nan_skipped == 6
    for i in range(9):
        if i % 3:
            assert torch.equal(values[i], values[i - 1])  # a skipped step leaves the values where they were
    assert tuner.check() == dict(hypergrad_evals=9, nan_skipped=6)


def test_all_non_finite_raises_at_the_end(monkeypatch):
    monkeypatch.setattr(tuner_mod, "hypergradient", _constant_hypergradient([float("nan"), 0.0]))
    tuner = kdlib.Tuner(lr=0.1, init=(0.5, 2.0), schedule="gradient")
    _toy_steps(tuner, 3)
    assert torch.equal(tuner.metaparams, torch.tensor([0.5, 2.0]))
    with pytest.raises(kdlib.NonFiniteHypergradient, match="all 3 hypergradients"):
        tuner.check()
    fixed = kdlib.Tuner(lr=0.1, schedule="fixed")
    _toy_steps(fixed, 2)
    assert fixed.check() == dict(hypergrad_evals=0, nan_skipped=0)  # nothing taken, nothing to report


def test_state_dict_round_trip_resumes_identically():
    kw = dict(init=(0.4, 3.0), schedule="proposed", e1=3, e2=2, meta_lr=1.0, meta_clip=1.0)
    x, y = _data(50)
    xv, yv = _data(40, seed=1)
    teacher = _teacher()
    with torch.no_grad():
        t = teacher(x)
    batches = [(x[i:i + 10], y[i:i + 10], t[i:i + 10]) for i in range(0, 50, 10)] * 3  # 15 iterations

    def run(student, opt, tuner, todo):
        for b in todo:
            tuner.step(student, b, (xv, yv))
            loss = tuner.loss(student(b[0]), b[2], b[1])
            opt.zero_grad()
            loss.backward()
            opt.step()

    student = _student()
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    tuner = kdlib.Tuner(opt, **kw)
    torch.manual_seed(7)
    run(student, opt, tuner, batches[:7])  # stop inside an extrapolation phase of the second cycle
    ckpt = copy.deepcopy(dict(model=student.state_dict(), opt=opt.state_dict(), tuner=tuner.state_dict(),
                              rng=torch.get_rng_state()))
    run(student, opt, tuner, batches[7:])

    student2 = _student(seed=99)
    opt2 = torch.optim.SGD(student2.parameters(), lr=0.1)
    tuner2 = kdlib.Tuner(opt2, **kw)
    student2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    tuner2.load_state_dict(ckpt["tuner"])
    torch.set_rng_state(ckpt["rng"])
    run(student2, opt2, tuner2, batches[7:])
    assert tuner2.history == tuner.history
    assert tuner2.hypergrad_evals == tuner.hypergrad_evals == 9  # 3 cycles of e1 = 3
    for a, b in zip(student.state_dict().values(), student2.state_dict().values()):
        assert torch.equal(a, b)


def test_cycle_reiterates_the_loader():
    data = TensorDataset(torch.arange(8.0))
    torch.manual_seed(0)
    loader = DataLoader(data, batch_size=8, shuffle=True)
    it = kdlib.cycle(loader)
    first, second = next(it)[0], next(it)[0]
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(8))
    assert not torch.equal(first, second)  # reshuffled: itertools.cycle would repeat the cached first pass
    with pytest.raises(ValueError, match="no batch"):
        next(kdlib.cycle([]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(init=(1.5, 2.0)), "lambda1 in"),
    (dict(init=(0.5, 0.01)), "T in"),
    (dict(schedule="greedy"), "unknown schedule"),
    (dict(schedule="proposed", e1=1), "e1=1"),
    (dict(every=0), "every=0"),
    (dict(estimator="magic"), "unknown estimator"),
    (dict(fd_virtual_lr="later"), "fd_virtual_lr"),
    (dict(meta_lr=0.0), "meta_lr"),
])
def test_bad_settings_name_the_fix(kwargs, match):
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        kdlib.Tuner(opt, **kwargs)


def test_bad_input_is_caught_before_compute():
    with pytest.raises(ValueError, match="optimizer"):
        kdlib.Tuner()
    with pytest.raises(ValueError, match="not both"):
        kdlib.Tuner(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), lr=0.1)
    tuner = kdlib.Tuner(lr=0.1)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="teacher_logits"):
        tuner.step(nn.Linear(3, 2), (x, torch.zeros(4, dtype=torch.long)), (x, torch.zeros(4, dtype=torch.long)))


def test_public_api_as_written():
    assert kdlib.Tuner is tuner_mod.Tuner and callable(kdlib.cycle) and callable(kdlib.hypergrad.hypergradient)
    for name in ("Tuner", "cycle", "hypergradient", "distillation_loss", "validation_loss", "fit_line",
                 "extrapolate", "NonFiniteHypergradient"):
        assert name in kdlib.__all__ and hasattr(kdlib, name)
    assert "optimizer" in inspect.signature(kdlib.hypergrad.hypergradient).parameters
    params = inspect.signature(kdlib.Tuner).parameters
    assert list(params)[:10] == ["optimizer", "init", "schedule", "e1", "e2", "estimator", "meta_lr",
                                 "meta_clip", "t_val", "forward"]


def test_tuner_passes_the_users_optimizer_and_generator(monkeypatch):
    seen = {}
    real = tuner_mod.hypergradient

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(tuner_mod, "hypergradient", spy)
    student = _student()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    tuner = kdlib.Tuner(opt, schedule="gradient")
    x, y = _data(16)
    tuner.step(student, (x, y, torch.randn(16, 2)), (x, y))
    assert seen["optimizer"] is opt and "lr" not in seen and seen["generator"] is tuner.generator


def test_unsupported_optimizer_is_never_a_silent_plain_sgd_answer():
    student = _student()
    opt = torch.optim.Rprop(student.parameters(), lr=0.1)  # sign-based: no hypergradient through it
    tuner = kdlib.Tuner(opt, schedule="gradient")
    x, y = _data(16)
    with pytest.raises(NotImplementedError, match="SGD"):
        tuner.step(student, (x, y, torch.randn(16, 2)), (x, y))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_tuned_loop_with_the_real_optimizer(optimizer):
    _, tuner, _ = _train(dict(init=(0.5, 2.0), schedule="proposed", e1=3, e2=2, meta_lr=1.0,
                                      meta_clip=1.0), optimizer=optimizer, epochs=3)
    assert tuner.hypergrad_evals == 8 and tuner.nan_skipped == 0  # 12 iterations: gradient at 0-2, 5-7, 10-11
    assert in_box(tuner.metaparams)


def test_dict_inputs_and_outputs_through_forward():
    class DictModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(6, 2)

        def forward(self, image, scale=1.0):
            return {"logits": self.body(image) * scale}

    torch.manual_seed(0)
    model = DictModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = _data(16)
    xv, yv = _data(16, seed=1)
    tuner = kdlib.Tuner(opt, schedule="gradient", meta_lr=1.0, meta_clip=1.0,
                        forward=lambda m, inputs: m(**inputs)["logits"])
    t = torch.randn(16, 2)
    lam1, temp = tuner.step(model, ({"image": x, "scale": 2.0}, y, t), ({"image": xv, "scale": 2.0}, yv))
    assert tuner.hypergrad_evals == 1 and tuner.nan_skipped == 0
    assert not torch.equal(torch.stack([lam1, temp]), torch.tensor([0.5, 2.0]))


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_fd_virtual_lr_initial_is_the_optimizers_initial_lr(monkeypatch):
    seen = []
    monkeypatch.setattr(tuner_mod, "hypergradient",
                        lambda *a, **kw: seen.append(kw.get("fd_virtual_lr")) or torch.zeros(2))
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    initial = kdlib.Tuner(opt, schedule="gradient", estimator="finite_difference", fd_virtual_lr="initial")
    current = kdlib.Tuner(opt, schedule="gradient", estimator="finite_difference")
    sched.step()  # lr 0.2 now
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    initial.step(model, (x, y, torch.randn(4, 2)), (x, y))
    current.step(model, (x, y, torch.randn(4, 2)), (x, y))
    assert seen == [0.4, None]  # "current": the estimator reads the optimizer's current lr itself


def test_first_log_temperature_step_is_the_chain_rule_on_the_real_hypergradient():
    # the same hypergradient as eq. (3); the step on log T computed here by hand: T' = T exp(-lr clip(T dL/dT))
    student, opt, x, y, t, xv, yv = _eval_student_problem()
    init = torch.tensor([0.5, 0.3])
    g = hypergradient(student, (x, y, t), (xv, yv), init, 0.1, t_val=1.0, method="unrolled").tolist()
    tuner = kdlib.Tuner(opt, init=init, schedule="gradient", meta_lr=0.5, meta_clip=1e-3, temperature_param="log")
    lam1, temp = tuner.step(student, (x, y, t), (xv, yv))
    clip = lambda v: max(-1e-3, min(1e-3, v))  # noqa: E731
    assert lam1.item() == pytest.approx(min(1.0, max(0.0, 0.5 - 0.5 * clip(g[0]))), abs=1e-7)
    assert temp.item() == pytest.approx(0.3 * math.exp(-0.5 * clip(0.3 * g[1])), rel=1e-6)
    with pytest.raises(ValueError, match="temperature_param"):
        kdlib.Tuner(opt, init=init, temperature_param="exp")


# --- placement="after_backward": tuner.step after loss.backward(), from the gradient in .grad ------------------
def _after_loop(student, opt, tuner, batches, val):
    """The after-backward loop: loss at the current values, backward, tuner.step (reads .grad), optimizer step."""
    for b in batches:
        x, y, t = b
        loss = tuner.loss(student(x), t, y)
        opt.zero_grad()
        loss.backward()
        tuner.step(student, b, val)
        opt.step()


def test_after_backward_first_step_is_eq3_at_the_same_state():
    student, opt, x, y, t, xv, yv = _eval_student_problem()
    init = torch.tensor([0.5, 2.0])
    for estimator in ("unrolled", "finite_difference"):
        s, o = copy.deepcopy((student, opt))
        g = hypergradient(s, (x, y, t), (xv, yv), init, optimizer=o, method=estimator)
        tuner = kdlib.Tuner(o, init=init, schedule="gradient", estimator=estimator, meta_lr=0.5, meta_clip=1.0,
                            placement="after_backward")
        _after_loop(s, o, tuner, [(x, y, t)], (xv, yv))
        torch.testing.assert_close(tuner.metaparams, project(init - 0.5 * g), rtol=1e-5, atol=1e-7)
        assert tuner.history[0]["lambda1"] == 0.5 and tuner.history[0]["temperature"] == 2.0  # trained at init


@pytest.mark.parametrize("estimator", ["unrolled", "finite_difference"])
@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_after_backward_run_is_the_one_step_late_recursion(estimator, optimizer):
    """A whole after-backward run equals the recursion written by hand: the hypergradient at (w_k, lambda_k) from
    the model's own gradient, lambda_{k+1} = meta_update(lambda_k, h_k), and the real step at lambda_k."""
    from kdlib.schedules import meta_update

    student, _, x, y, t, xv, yv = _eval_student_problem()
    make = {"sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
            "adam": lambda p: torch.optim.Adam(p, lr=1e-2)}[optimizer]
    batches = [(x[i:i + 8], y[i:i + 8], t[i:i + 8]) for i in range(0, 32, 8)] * 2
    ref_model = copy.deepcopy(student)
    ref_opt = make(ref_model.parameters())
    lam = torch.tensor([0.5, 2.0])
    ref = []
    for b in batches:
        h = hypergradient(ref_model, b, (xv, yv), lam, optimizer=ref_opt, method=estimator)
        new, _ = meta_update(lam, h, 1.0, 1.0)
        ref_opt.zero_grad()
        distillation_loss(ref_model(b[0]), b[2], b[1], lam[0], lam[1]).backward()
        ref_opt.step()
        ref.append(lam)
        lam = new
    opt = make(student.parameters())
    tuner = kdlib.Tuner(opt, init=(0.5, 2.0), schedule="gradient", estimator=estimator, meta_lr=1.0, meta_clip=1.0,
                        placement="after_backward")
    _after_loop(student, opt, tuner, batches, (xv, yv))
    got = torch.tensor([[r["lambda1"], r["temperature"]] for r in tuner.history])
    torch.testing.assert_close(got, torch.stack(ref), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tuner.metaparams, lam, rtol=1e-5, atol=1e-6)
    assert (got[-1] - got[0]).abs().max() > 1e-3  # the values did move
    for a, b in zip(student.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("schedule", ["fixed", "gradient"])
def test_after_backward_leaves_the_loops_rng_stream(schedule):
    """The README after-backward loop (dropout, BatchNorm, shuffling loaders): the loop consumes exactly its own
    random numbers; a "fixed" tuner trains the bit-identical student as no tuner."""
    ref, _, rng_ref = _train(None)
    teacher, student = _teacher(), _student(0)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    torch.manual_seed(100)
    train, val = _loaders(16)
    tuner = kdlib.Tuner(opt, init=(0.5, 2.0), schedule=schedule, meta_lr=1.0, meta_clip=1.0,
                        placement="after_backward")
    val_iter = kdlib.cycle(val)
    for _ in range(2):
        for (x, y), vb in zip(train, val_iter):
            with torch.no_grad():
                t = teacher(x)
            loss = tuner.loss(student(x), t, y)
            opt.zero_grad()
            loss.backward()
            tuner.step(student, (x, y, t), vb)
            opt.step()
    assert torch.equal(torch.get_rng_state(), rng_ref)
    if schedule == "fixed":
        for a, b in zip(ref.state_dict().values(), student.state_dict().values()):
            assert torch.equal(a, b)
    else:
        assert tuner.hypergrad_evals == 8 and tuner.nan_skipped == 0
        assert not torch.equal(tuner.metaparams, torch.tensor([0.5, 2.0]))


def test_after_backward_train_step_and_dropout_loop():
    """train_step in the after placement (forward, loss, backward, step from .grad, optimizer step) equals the
    hand loop on a dropout-free student, and a loop with dropout/BatchNorm in train mode runs clean."""
    student, opt, x, y, t, xv, yv = _eval_student_problem()
    batches = [(x[i:i + 8], y[i:i + 8], t[i:i + 8]) for i in range(0, 32, 8)]
    s2, o2 = copy.deepcopy((student, opt))
    kw = dict(init=(0.5, 2.0), schedule="gradient", meta_lr=1.0, meta_clip=1.0, placement="after_backward")
    a, b = kdlib.Tuner(opt, **kw), kdlib.Tuner(o2, **kw)
    _after_loop(student, opt, a, batches, (xv, yv))
    for bt in batches:
        b.train_step(s2, bt, (xv, yv))
    assert a.history == b.history
    for p, q in zip(student.parameters(), s2.parameters()):
        assert torch.equal(p, q)
    student = _student()
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    tuner = kdlib.Tuner(opt, schedule="proposed", e1=2, e2=2, meta_lr=1.0, meta_clip=1.0,
                        estimator="finite_difference", placement="after_backward")
    x, y = _data(50)
    tt = _teacher()(x).detach()
    _after_loop(student, opt, tuner, [(x[i:i + 10], y[i:i + 10], tt[i:i + 10]) for i in range(0, 50, 10)], (x, y))
    assert tuner.hypergrad_evals == 3 and tuner.nan_skipped == 0 and in_box(tuner.metaparams)


@pytest.mark.parametrize("placement", ["before_backward", "after_backward"])
def test_step_with_the_loops_logits_spares_a_forward(placement):
    """tuner.step(..., train_logits=z) with the loop's own logits: the same run (dropout-free student) as the loop
    without them, with one student forward fewer per hypergradient (the estimator differentiates through z)."""
    student, opt, x, y, t, xv, yv = _eval_student_problem()
    batches = [(x[i:i + 8], y[i:i + 8], t[i:i + 8]) for i in range(0, 32, 8)]
    s2, o2 = copy.deepcopy((student, opt))
    kw = dict(init=(0.5, 2.0), schedule="gradient", meta_lr=1.0, meta_clip=1.0, placement=placement)
    a, b = kdlib.Tuner(opt, **kw), kdlib.Tuner(o2, **kw)
    calls = {"a": 0, "b": 0}
    student.register_forward_hook(lambda *_: calls.__setitem__("a", calls["a"] + 1))
    s2.register_forward_hook(lambda *_: calls.__setitem__("b", calls["b"] + 1))
    for bt in batches:
        bx, by, bt_ = bt
        if placement == "after_backward":
            _after_loop(student, opt, a, [bt], (xv, yv))
            z = s2(bx)
            loss = b.loss(z, bt_, by)
            o2.zero_grad()
            loss.backward(retain_graph=True)
            b.step(s2, bt, (xv, yv), train_logits=z)
            o2.step()
        else:
            a.step(student, bt, (xv, yv))
            opt.zero_grad()
            a.loss(student(bx), bt_, by).backward()
            opt.step()
            z = s2(bx)
            b.step(s2, bt, (xv, yv), train_logits=z)
            o2.zero_grad()
            b.loss(z, bt_, by).backward()
            o2.step()
    assert a.history == b.history and a.hypergrad_evals == len(batches)
    for p, q in zip(student.parameters(), s2.parameters()):
        assert torch.equal(p, q)
    assert calls["a"] - calls["b"] == len(batches)  # the estimator's own train forward, spared


def test_after_backward_refuses_a_missing_or_stale_gradient():
    student, opt, x, y, t, xv, yv = _eval_student_problem()
    tuner = kdlib.Tuner(opt, schedule="gradient", placement="after_backward")
    with pytest.raises(RuntimeError, match="no gradient in .grad: call loss.backward"):
        tuner.step(student, (x, y, t), (xv, yv))  # placed before the backward (the before_backward loop)
    loss = tuner.loss(student(x), t, y)
    opt.zero_grad()
    loss.backward()
    tuner.step(student, (x, y, t), (xv, yv))
    with pytest.raises(RuntimeError, match="stale"):
        tuner.step(student, (x, y, t), (xv, yv))  # no backward since the last step
    opt.step()
    for _ in range(2):  # two backwards into the same .grad (no zero_grad between)
        tuner.loss(student(x), t, y).backward()
    with pytest.raises(RuntimeError, match="received 2 gradients"):
        tuner.step(student, (x, y, t), (xv, yv))
    lr_form = kdlib.Tuner(lr=0.1, schedule="gradient", placement="after_backward")  # no optimizer: hooked at step 1
    model = copy.deepcopy(student)
    model.zero_grad(set_to_none=True)
    lr_form.loss(model(x), t, y).backward()
    lr_form.step(model, (x, y, t), (xv, yv))
    with pytest.raises(RuntimeError, match="stale"):
        lr_form.step(model, (x, y, t), (xv, yv))


@pytest.mark.parametrize("kwargs, match", [
    (dict(placement="after"), "unknown placement"),
    (dict(placement="after_backward", estimator="forward"), "one-step"),
    (dict(placement="after_backward", steps=2), "one-step"),
    (dict(placement="after_backward", unrolled_impl="reverse"), "one-step"),
    (dict(clip_grad_norm=0.0), "clip_grad_norm"),
    (dict(clip_grad_norm=1.0, estimator="neumann"), "neumann"),
    (dict(distributed=True), "not initialised"),
])
def test_bad_placement_clip_and_distributed_settings(kwargs, match):
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        kdlib.Tuner(opt, **kwargs)


def test_after_backward_nan_skip_and_what_reaches_the_estimator(monkeypatch):
    seen = []

    def fake(model, train_batch, val_batch, metaparams, *args, **kwargs):
        seen.append(kwargs)
        return torch.tensor([float("nan") if len(seen) % 2 else 0.01, 0.0])

    monkeypatch.setattr(tuner_mod, "hypergradient", fake)
    student, opt, x, y, t, xv, yv = _eval_student_problem()
    tuner = kdlib.Tuner(opt, schedule="gradient", meta_lr=1.0, placement="after_backward", clip_grad_norm=2.0)
    _after_loop(student, opt, tuner, [(x, y, t)] * 4, (xv, yv))
    assert tuner.hypergrad_evals == 4 and tuner.nan_skipped == 2
    grads = seen[0]["train_grad"]
    assert set(grads) == {n for n, _ in student.named_parameters()} and seen[0]["clip_grad_norm"] == 2.0
    assert "rank_mean" not in seen[0] and "train_logits" not in seen[0]


# --- clip_grad_norm= in the Tuner ------------------------------------------------------------------------------
def test_clip_grad_norm_first_step_and_train_step_clips_the_real_step():
    student, opt, x, y, t, xv, yv = _eval_student_problem()
    init = torch.tensor([0.5, 2.0])
    g = hypergradient(student, (x, y, t), (xv, yv), init, optimizer=opt, clip_grad_norm=0.05)
    assert not torch.allclose(g, hypergradient(student, (x, y, t), (xv, yv), init, optimizer=opt), rtol=1e-2)
    s1, o1 = copy.deepcopy((student, opt))
    s2, o2 = copy.deepcopy((student, opt))
    kw = dict(init=init, schedule="gradient", meta_lr=0.5, meta_clip=1.0, clip_grad_norm=0.05)
    a, b = kdlib.Tuner(o1, **kw), kdlib.Tuner(o2, **kw)
    lam1, temp = a.step(s1, (x, y, t), (xv, yv))
    torch.testing.assert_close(torch.stack([lam1, temp]), project(init - 0.5 * g), rtol=0, atol=1e-7)
    o1.zero_grad()
    a.loss(s1(x), t, y).backward()
    torch.nn.utils.clip_grad_norm_(s1.parameters(), 0.05)
    o1.step()
    b.train_step(s2, (x, y, t), (xv, yv))
    assert torch.equal(a.metaparams, b.metaparams)
    for p, q in zip(s1.parameters(), s2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8)
