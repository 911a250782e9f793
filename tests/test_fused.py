"""Tuner.train_step: the estimator and the real step share ONE train forward (issue 10).

The shared path must give the bit-identical run of ``Tuner.step`` + the loop's own forward/backward/step for a
dropout-free model (values, weights, BatchNorm running statistics, the global RNG stream), and the shared-logits
hypergradient must equal an independent evaluation (double backprop, float64)."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_image_problem
from torch import nn

import kdlib
from kdlib.hypergrad import hypergradient, reuses_train_logits
from kdlib.models import CifarStudent


def _batches(n_iter: int, bs: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_iter):
        x = torch.randn(bs, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (bs,), generator=g)
        t = 3 * torch.randn(bs, 10, generator=g)
        xv = torch.randn(bs, 3, 32, 32, generator=g)
        yv = torch.randint(0, 10, (bs,), generator=g)
        out.append(((x, y, t), (xv, yv)))
    return out


def _optimizer(model: nn.Module, kind: str) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=1.0)
    if kind == "momentum":
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    return torch.optim.Adam(model.parameters(), lr=1e-3)


def _run(model, kind, estimator, schedule, fused: bool, n_iter: int = 4):
    opt = _optimizer(model, kind)
    tuner = kdlib.Tuner(opt, init=(0.5, 2.0), schedule=schedule, estimator=estimator, e1=2, e2=1,
                        meta_lr=1.0, meta_clip=1.0, seed=3)
    torch.manual_seed(11)
    for batch, val in _batches(n_iter):
        if fused:
            tuner.train_step(model, batch, val)
        else:
            tuner.step(model, batch, val)
            opt.zero_grad(set_to_none=True)
            tuner.loss(model(batch[0]), batch[2], batch[1]).backward()
            opt.step()
    return tuner, torch.get_rng_state()


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("estimator", ["unrolled", "finite_difference"])
def test_train_step_is_bit_identical_to_step_and_loop(kind, estimator):
    torch.manual_seed(0)
    ref_model = CifarStudent()
    got_model = copy.deepcopy(ref_model)
    ref, rng_ref = _run(ref_model, kind, estimator, "proposed", fused=False)
    got, rng_got = _run(got_model, kind, estimator, "proposed", fused=True)
    assert [r["phase"] for r in got.history] == ["gradient", "gradient", "extrapolate", "gradient"]
    assert ref.history == got.history  # the values trained at, exactly
    assert not torch.equal(got.metaparams, torch.tensor([0.5, 2.0]))  # and they moved
    for (k, a), b in zip(ref_model.state_dict().items(), got_model.state_dict().values()):
        assert torch.equal(a, b), k  # weights and BatchNorm running statistics (updated once per step)
    assert torch.equal(rng_ref, rng_got)


def test_shared_logits_hypergradient_equals_double_backprop_float64():
    """The shared-graph evaluation against ``unrolled_impl="reverse"`` (its own forward, double backprop)."""
    torch.manual_seed(0)
    model = CifarStudent().double().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    (x, y, t), (xv, yv) = _batches(1)[0]
    x, t, xv = x.double(), t.double(), xv.double()
    # a momentum buffer, so that the update rule is not plain SGD
    model(x).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    lam = torch.tensor([0.3, 2.5], dtype=torch.float64)
    ref = hypergradient(model, (x, y, t), (xv, yv), lam, optimizer=opt, unrolled_impl="reverse")
    z = model(x)
    got = hypergradient(model, (x, y, t), (xv, yv), lam, optimizer=opt, train_logits=z)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)
    # the graph was retained for the real step's backward
    z.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_train_logits_errors():
    torch.manual_seed(0)
    model = CifarStudent()
    (x, y, t), val = _batches(1)[0]
    lam = torch.tensor([0.5, 2.0])
    with torch.no_grad():
        z = model(x)
    with pytest.raises(ValueError, match="autograd"):
        hypergradient(model, (x, y, t), val, lam, lr=0.1, train_logits=z)
    with pytest.raises(ValueError, match="one-step"):
        hypergradient(model, (x, y, t), val, lam, lr=0.1, method="neumann", train_logits=model(x))
    assert reuses_train_logits("unrolled") and reuses_train_logits("finite_difference")
    assert not reuses_train_logits("unrolled", 3) and not reuses_train_logits("forward")
    with pytest.raises(ValueError, match="optimizer"):
        kdlib.Tuner(lr=0.1, schedule="gradient").train_step(model, (x, y, t), val)


def test_train_step_with_dropout_keeps_the_loop_rng_stream():
    """With dropout the estimator sees the real step's train masks; the loop's stream is still its own."""
    def student():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 2))

    g = torch.Generator().manual_seed(0)
    data = [((torch.randn(16, 6, generator=g), torch.randint(0, 2, (16,), generator=g), torch.randn(16, 2, generator=g)),
             (torch.randn(16, 6, generator=g), torch.randint(0, 2, (16,), generator=g))) for _ in range(3)]
    rngs = []
    for schedule in ("fixed", "gradient"):
        model = student()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        tuner = kdlib.Tuner(opt, init=(0.5, 2.0), schedule=schedule, meta_lr=1.0, meta_clip=1.0)
        torch.manual_seed(5)
        for batch, val in data:
            tuner.train_step(model, batch, val)
        rngs.append(torch.get_rng_state())
        assert torch.isfinite(tuner.metaparams).all()
    assert torch.equal(rngs[0], rngs[1])


# --------------------------------------------------------------------------------------------- eval cadence
def test_evaluates_after_is_the_authors_cadence():
    from kdlib.train import evaluates_after

    assert [e for e in range(50) if evaluates_after(e, 50, eval_every=5)] == [0, 4, 9, 14, 19, 24, 29, 34, 39, 44, 49]
    assert [e for e in range(7) if evaluates_after(e, 7)] == list(range(7))  # default: every epoch (today)
    assert [e for e in range(7) if evaluates_after(e, 7, log_every=2)] == [1, 3, 5, 6]  # log_every as before
    assert [e for e in range(12) if evaluates_after(e, 12, eval_every=5)] == [0, 4, 9, 11]


@pytest.mark.parametrize("schedule", ["fixed", "gradient"])
def test_eval_every_skips_evaluations_only(schedule):
    """Rows exist only at the cadence's epochs and equal the every-epoch run's rows there (training untouched);
    hyperopt's objective is the best validation accuracy over those checkpoints."""
    from kdlib.train import Settings, make_tuner, train_student

    problem = random_image_problem(32, 16, 24)
    runs = {}
    for k in (1, 3):
        st = Settings(seed=2, epochs=7, batch_size=16, lr=1.0, eval_every=k)
        runs[k] = train_student(st, problem, lambda o, s: make_tuner(s, o, torch.tensor([0.4, 3.0]), schedule),
                                score_on_val=True)
    every = {r["epoch"]: r for r in runs[1].history}
    sparse = runs[3].history
    assert [r["epoch"] for r in sparse] == [0, 2, 5, 6]
    for r in sparse:
        a, b = dict(r), dict(every[r["epoch"]])
        a.pop("wall_time"), b.pop("wall_time")
        assert a == b
    for p, q in zip(runs[1].model.state_dict().values(), runs[3].model.state_dict().values()):
        assert torch.equal(p, q)
    assert runs[3].best_val_accuracy == max(r["val_accuracy"] for r in sparse)
    with pytest.raises(ValueError, match="eval_every"):
        train_student(Settings(epochs=1, eval_every=0), problem, lambda o, s: make_tuner(s, o, torch.tensor([0.4, 3.0]),
                                                                                         "fixed"))
