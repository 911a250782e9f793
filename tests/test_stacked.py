"""kdlib.train.stacked: S fixed-metaparameter runs as one vmapped model give the histories of S one-by-one runs.

Tolerance and why: the stacked step evaluates the same arithmetic per run, but ``vmap`` turns each convolution
into a batched one whose weight-gradient reduction, and BatchNorm's running-statistics update, sum in another
order: float32 rounding (~1e-7 relative per step), which training then carries along. The forward of the same
weights is bit-identical (asserted below on the untrained students); over a few steps at a small lr the weights
agree to 1e-5 and the logged losses to 1e-5 relative; the values, phases, steps and counts are exact."""
from __future__ import annotations

import pytest
import torch
from conftest import assert_same_history, random_image_problem

from kdlib.methods import fixed_tuner
from kdlib.models import CifarStudent
from kdlib.train.stacked import StackedFixed
from kdlib.train import Settings, make_optimizer, train_student, train_students_stacked


VALUES = torch.tensor([[1.0, 1.0], [0.5, 1.0], [0.3, 4.0]])


def test_stacked_initial_students_and_logits_are_the_one_run_ones():
    sts = [Settings(seed=s, epochs=1, batch_size=16) for s in range(3)]
    problem = random_image_problem(32, 32, 32)
    stacked = StackedFixed(sts, CifarStudent, VALUES, "cpu", make_optimizer)
    evals = stacked.evaluate(problem.test, 1.0)
    for s, st in enumerate(sts):
        torch.manual_seed(st.seed)
        ref = CifarStudent()
        for k, v in ref.state_dict().items():
            assert torch.equal({**stacked.params, **stacked.buffers}[k][s], v), k
        ref.eval()
        with torch.no_grad():
            out = ref(problem.test.x)
        acc = float((out.argmax(1) == problem.test.y).float().mean())
        assert evals[s][0] == pytest.approx(acc, abs=0)


@pytest.mark.parametrize("optimizer,loss_rel,weight_atol", [("sgd", 1e-5, 1e-5), ("adam", 1e-4, 2e-3)])
def test_stacked_histories_equal_one_by_one(optimizer, loss_rel, weight_atol):
    """Adam's looser bounds: its first steps are about lr * sign(g), so a rounding-level difference in a
    near-zero gradient coordinate can move that weight by up to 2 lr (= 2e-3) in one step. The convolutions'
    biases are not compared under Adam: BatchNorm removes any per-channel constant, so their exact gradient is 0
    and both paths step them by lr * sign(rounding noise)."""
    problem = random_image_problem(32, 32, 32)
    lr = 0.1 if optimizer == "sgd" else 1e-3
    sts = [Settings(seed=s, epochs=2, batch_size=16, lr=lr, optimizer=optimizer, lr_step_epochs=1) for s in range(3)]
    stacked = train_students_stacked(sts, problem, VALUES, score_on_val=True)
    for st, v, got in zip(sts, VALUES, stacked):
        ref = train_student(st, problem, fixed_tuner(v), score_on_val=True)
        assert len(got.history) == len(ref.history) == 2
        for a, b in zip(got.history, ref.history):
            for k in ("step", "epoch", "lambda1", "temperature", "hypergrad_evals", "nan_skipped", "phase", "lr"):
                assert a[k] == b[k], k
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=loss_rel)
            for k in ("test_accuracy", "val_accuracy"):
                assert abs(a[k] - b[k]) <= 1.0 / 32 + 1e-12  # at most one of 32 predictions flips
        for (k, p), q in zip(got.model.state_dict().items(), ref.model.state_dict().values()):
            if optimizer == "adam" and k.startswith("conv") and k.endswith(".bias"):
                continue
            if p.is_floating_point():
                torch.testing.assert_close(p, q, rtol=0, atol=weight_atol, msg=k)
            else:
                assert torch.equal(p, q), k
        assert got.best_val_accuracy == max(r["val_accuracy"] for r in got.history)


def test_stacked_rejects_runs_that_differ_beyond_seed_and_values():
    problem = random_image_problem(32, 32, 32)
    sts = [Settings(seed=0, epochs=1, batch_size=16), Settings(seed=1, epochs=2, batch_size=16)]
    with pytest.raises(ValueError, match="epochs"):
        train_students_stacked(sts, problem, VALUES[:2])
    with pytest.raises(ValueError, match="shape"):
        train_students_stacked(sts[:1], problem, VALUES)


@pytest.mark.parametrize("schedule", ["gradient", "proposed"])
def test_stacked_tuned_histories_equal_one_by_one(schedule):
    """The vmapped double-backprop hypergradient (exact) against each run's Tuner (unrolled, cotangent evaluation,
    exact): the same values up to float32 rounding; meta_lr=1, meta_clip=1 so that the hypergradients (not the
    clip) set the values."""
    from kdlib.train import make_tuner

    problem = random_image_problem(32, 32, 32)
    init = torch.tensor([[0.5, 2.0], [0.2, 1.0], [0.8, 4.0]])
    sts = [Settings(seed=s, epochs=3, batch_size=16, lr=0.1, e1=2, e2=1, meta_lr=1.0, meta_clip=1.0)
           for s in range(3)]
    stacked = train_students_stacked(sts, problem, init, schedule=schedule)
    for st, v, got in zip(sts, init, stacked):
        ref = train_student(st, problem, lambda o, s, v=v: make_tuner(s, o, v, schedule))
        assert_same_history(got, ref, rows=3, abs_tol=1e-5, rel_tol=1e-5)
        assert abs(got.history[-1]["lambda1"] - float(v[0])) > 1e-3  # the values did move


def test_stacked_tuned_rejects_what_it_does_not_implement():
    problem = random_image_problem(32, 32, 32)
    for bad in (dict(optimizer="adam", lr=1e-3), dict(momentum=0.9), dict(estimator="neumann"),
                dict(estimator="unrolled", unroll_steps=2)):
        sts = [Settings(seed=s, epochs=1, batch_size=16, **bad) for s in range(2)]
        with pytest.raises(ValueError, match="stacked tuned backend"):
            train_students_stacked(sts, problem, VALUES[:2], schedule="gradient")


def test_hyperopt_trials_train_together_on_the_stacked_backend_too():
    """The lock-step hook (kdlib.train.together) is the backends': hyperopt's trials of two seeds as one vmapped
    model per round give each seed the TPE points of its own search (TPE's first 20 points do not depend on the
    scores) and the scores of its one-by-one trials up to one flipped prediction."""
    from kdlib.methods import get_method

    problem = random_image_problem(32, 32, 32)
    sts = [Settings(seed=s, epochs=1, batch_size=16, hyperopt_evals=3) for s in range(2)]
    hyperopt = get_method("hyperopt")
    together = hyperopt.run_together(sts, problem, "stacked")
    for st, got in zip(sts, together):
        ref = hyperopt.run(st, problem)
        assert got.full_trainings == ref.full_trainings == 3
        trials, ref_trials = got.extra["trials"], ref.extra["trials"]
        assert [(t["lambda1"], t["temperature"]) for t in trials] == \
            [(t["lambda1"], t["temperature"]) for t in ref_trials]
        for t, r in zip(trials, ref_trials):
            assert abs(t["best_val_accuracy"] - r["best_val_accuracy"]) <= 1.0 / 32 + 1e-12
        best = max(trials, key=lambda t: t["best_val_accuracy"])
        assert got.history[-1]["lambda1"] == pytest.approx(best["lambda1"], abs=1e-6)
        assert got.model is not None
