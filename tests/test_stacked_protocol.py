"""kdlib.train.stacked under the authors' protocol (issue 20): every method of Table 2 trained stacked gives the
records of its one-by-one runs.

Each method runs through its own :meth:`kdlib.methods.Method.run_together` (the S seeds as one vmapped model;
hyperopt: each seed's TPE search, the k-th trials of all seeds as one stacked model) and through
:meth:`~kdlib.methods.Method.run` (the reference: one student, its Tuner), on the CIFAR student and random images,
at :func:`kdlib.experiments.protocol.authors_protocol` (finite differences with the virtual step at the initial
lr, the "kl" loss, Algorithm 1 restarted every epoch without clamping the line, the authors' initial and random
draws, no shuffling, evaluation after epochs 0, 4, 9, ...) with a StepLR that halves the lr every epoch (so the
virtual lr and the current lr differ).

How close, measured when these tests were written (3 seeds, 3 epochs of 4 batches of 8, lr 0.2):

* the authors' metaparameter step (meta_clip 0.01): lambda1 and T within 7e-7 for every method, L_val within
  5e-7, accuracies and hyperopt's trial scores equal; bounds below 1e-5;
* unclipped (meta_clip 1, meta_lr 0.02, so every hypergradient moves the values): gradient-based within 5e-7,
  proposed within 4e-5. The latter is the finite difference's float32 rounding (about 1e-5 relative per
  hypergradient, as the one-by-one estimator's own against float64) carried by Algorithm 1's unclamped line,
  whose slope doubles a difference of two values: the one-by-one run in float32 differs from itself in float64
  by as much (5.6e-4 vs 5.6e-4 at meta_lr 0.05). Bound 2e-4.

Phases, steps, lr, hypergradient and NaN-skip counts are exact; every run ends on the same branch.

The sharp check is in float64 (``test_in_float64_...``): at the paper's lr of 1 and unclipped hypergradients every
value, L_val and weight of a stacked run equals its one-by-one run's to 1e-13 (bound 1e-9) for every method; in
float32 at lr 1 on random pixels a run can part from its one-by-one run at a kink (a ReLU or max-pool input within
rounding of a tie: conv1's weights 6e-3 apart after 3 steps in one of three seeds, the same runs 1e-14 apart in
float64), so the float32 comparisons run at lr 0.2."""
from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import random_image_problem

from kdlib.analysis.archive import branch_of
from kdlib.experiments.protocol import authors_protocol
from kdlib.metaparams import random_baseline
from kdlib.methods import get_method
from kdlib.models import CifarStudent
from kdlib.schedules import NonFiniteHypergradient
from kdlib.train import Problem, Settings, Split, make_optimizer
from kdlib.train.stacked import StackedTuned

SIX = ["no_distillation", "naive", "random", "gradient", "proposed", "hyperopt"]
SEEDS = range(3)
N = 32  # test and validation sizes: one flipped prediction is 1/32


def settings(method: str, **over) -> list[Settings]:
    base = dict(epochs=3, batch_size=8, lr=0.2, lr_step_epochs=1, lr_gamma=0.5, e1=2, e2=1, hyperopt_evals=3,
                estimator="finite_difference", meta_lr=0.25, meta_clip=0.01)
    return [Settings(seed=s, **{**base, **authors_protocol(method), **over}) for s in SEEDS]


def compare(method: str, sts: list[Settings], atol: float) -> list:
    """Stacked against one by one; returns the stacked results."""
    problem = random_image_problem(N, N, N)
    m = get_method(method)
    got = m.run_together(sts, problem, "stacked")
    for st, g in zip(sts, got):
        ref = m.run(st, problem)
        assert g.full_trainings == ref.full_trainings
        assert len(g.history) == len(ref.history) == 2  # after epoch 0 and at the end (eval_every=5)
        for a, b in zip(g.history, ref.history):
            for k in ("step", "epoch", "hypergrad_evals", "nan_skipped", "phase", "lr"):
                assert a[k] == b[k], (k, a[k], b[k])
            assert a["lambda1"] == pytest.approx(b["lambda1"], abs=atol)
            assert a["temperature"] == pytest.approx(b["temperature"], abs=atol)
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=max(atol, 1e-5))
            for k in ("test_accuracy", "val_accuracy"):
                assert abs(a[k] - b[k]) <= 1.0 / N + 1e-12
        assert branch_of(1.0 - g.history[-1]["lambda1"]) == branch_of(1.0 - ref.history[-1]["lambda1"])
        if method == "hyperopt":
            trials, ref_trials = g.extra["trials"], ref.extra["trials"]
            assert [(t["lambda1"], t["temperature"]) for t in trials] == \
                [(t["lambda1"], t["temperature"]) for t in ref_trials]
            for t, r in zip(trials, ref_trials):
                assert abs(t["best_val_accuracy"] - r["best_val_accuracy"]) <= 1.0 / N + 1e-12
            assert g.history[-1]["lambda1"] == ref.history[-1]["lambda1"]  # the same best trial
        assert g.model is not None
    return got


@pytest.mark.parametrize("method", SIX)
def test_every_method_stacked_equals_one_by_one_under_the_authors_protocol(method):
    sts = settings(method)
    got = compare(method, sts, atol=1e-5)
    start = [g.history[0] for g in got]
    if method == "random":  # each seed its own draw of the authors' sequence (random_law="authors")
        assert sts[0].random_law == "authors"
        for st, row in zip(sts, start):
            want = random_baseline("authors", st.seed)
            assert (row["lambda1"], row["temperature"]) == pytest.approx(tuple(want.tolist()), abs=1e-6)
        assert len({row["lambda1"] for row in start}) == len(sts)
    if method in ("gradient", "proposed"):
        assert all(row["hypergrad_evals"] > 0 for row in start)
        assert start[0]["lr"] != got[0].history[-1]["lr"]  # StepLR moved the lr: the virtual lr is the initial one


def float64_problem():
    p = random_image_problem(N, N, N)
    d = lambda s: Split(s.x.double(), s.y, None if s.teacher is None else s.teacher.double())  # noqa: E731
    return Problem(d(p.train), d(p.val), d(p.test), lambda: CifarStudent().double())


@pytest.mark.parametrize("method", SIX)
def test_in_float64_the_stacked_runs_are_the_one_by_one_runs(method):
    """The same comparison in float64, at the paper's lr of 1 and unclipped hypergradients, where float32 runs part
    at a kink (a ReLU or max-pool input within rounding of a tie, then lr 1 on random pixels): every value, L_val
    and weight equal to 1e-9 (measured: the logged values and L_val
    bit for bit, the weights to 1e-13). The stacked finite difference and schedule are the reference's
    arithmetic, only summed in another order."""
    problem = float64_problem()
    sts = settings(method, lr=1.0, meta_lr=0.05, meta_clip=1.0)
    m = get_method(method)
    got = m.run_together(sts, problem, "stacked")
    for st, g in zip(sts, got):
        ref = m.run(st, problem)
        assert [(a["phase"], a["hypergrad_evals"], a["lr"]) for a in g.history] == \
            [(b["phase"], b["hypergrad_evals"], b["lr"]) for b in ref.history]
        for a, b in zip(g.history, ref.history):
            assert abs(a["lambda1"] - b["lambda1"]) <= 1e-9 and abs(a["temperature"] - b["temperature"]) <= 1e-9
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-9, abs=0)
            assert (a["test_accuracy"], a["val_accuracy"]) == (b["test_accuracy"], b["val_accuracy"])
        for (k, x), y in zip(g.model.state_dict().items(), ref.model.state_dict().values()):
            assert x.dtype == y.dtype
            torch.testing.assert_close(x, y, rtol=0, atol=1e-9, msg=k)
        if method in ("gradient", "proposed"):
            assert abs(g.history[-1]["lambda1"] - float(m.initial(st)[0])) > 1e-3


@pytest.mark.parametrize("method,atol", [("gradient", 1e-5), ("proposed", 2e-4)])
def test_unclipped_hypergradients_stacked_equal_one_by_one(method, atol):
    """meta_clip=1: the values follow the finite-difference hypergradients themselves, not their clipped signs."""
    sts = settings(method, meta_lr=0.02, meta_clip=1.0)
    got = compare(method, sts, atol)
    for st, g in zip(sts, got):
        init = get_method(method).initial(st)
        assert abs(g.history[-1]["lambda1"] - float(init[0])) > 1e-3  # the values did move


@pytest.mark.parametrize("over", [dict(estimator="finite_difference", loss_form="ce", t2_scaling=True,
                                       fd_virtual_lr="current", proposed_reset="global", clamp_extrapolation=True),
                                  dict(estimator="unrolled", loss_form="kl", t2_scaling=True)])
def test_other_settings_of_the_stacked_tuned_backend(over):
    """The paper's loss with Hinton's T^2 factor, the virtual step at the current lr, the global cycle; and the
    unrolled estimator on the authors' "kl" loss."""
    compare("proposed", settings("proposed", meta_lr=0.02, meta_clip=1.0, **over), atol=2e-4)


def test_nonfinite_hypergradients_are_skipped_and_counted_per_run():
    """A run whose hypergradient is NaN/inf keeps its values and counts the skip (on the device, per run); the
    other runs move; a run whose every hypergradient was non-finite fails the end-of-run check, as its Tuner."""
    sts = settings("gradient", meta_lr=0.02, meta_clip=1.0)
    values = torch.tensor([[0.5, 2.0], [0.2, 1.0], [0.8, 4.0]])
    backend = StackedTuned(sts, CifarStudent, values, "cpu", make_optimizer, "gradient")
    real = backend._hypergradient
    bad = torch.tensor([[False], [True], [False]])
    backend._hypergradient = lambda value, *args: torch.where(bad, torch.full_like(value, float("nan")),
                                                               real(value, *args))
    problem = random_image_problem(N, N, N)
    batch = [(problem.train.x[:8], problem.train.y[:8], problem.train.teacher[:8])] * 3
    for _ in range(3):
        backend.step(batch, lambda: (problem.val.x[:8], problem.val.y[:8]))
    rows = backend.rows()
    assert [r["nan_skipped"] for r in rows] == [0, 3, 0] and all(r["hypergrad_evals"] == 3 for r in rows)
    assert backend.schedule.nonfinite.device == backend.values.device
    assert torch.equal(backend.values[1], values[1])  # unchanged, bit for bit
    assert abs(rows[0]["lambda1"] - 0.5) > 1e-4 and abs(rows[2]["lambda1"] - 0.8) > 1e-4
    with pytest.raises(NonFiniteHypergradient, match=r"rows \[1\]"):
        backend.finish()


def test_the_lr_tensor_is_made_once_per_lr_change():
    """No host-to-device copy of the lr in the step: set_lr remakes the device tensor only when the lr changes."""
    sts = settings("gradient")
    backend = StackedTuned(sts, CifarStudent, torch.tensor([[0.5, 2.0]] * 3), "cpu", make_optimizer, "gradient")
    lr, virtual = backend.lr, backend.virtual_lr
    backend.set_lr(0.2)
    assert backend.lr is lr and float(lr) == pytest.approx(0.2)
    backend.set_lr(0.1)
    assert backend.lr is not lr and float(backend.lr) == pytest.approx(0.1)
    assert backend.virtual_lr is virtual and float(virtual) == pytest.approx(0.2)  # fd_virtual_lr="initial"
    assert backend.optimizer.param_groups[0]["lr"] == 0.1


def fmnist_overrides(data_root, tmp_path, n_train: int = 60, n_test: int = 20) -> dict:
    """A fabricated Fashion-MNIST under ``data_root``, a teacher file agreeing with its labels, and the authors'
    protocol at a few steps (lr 0.1, meta_lr 1: see the runner test)."""
    import numpy as np

    from conftest import make_fmnist_root
    from kdlib.experiments.protocol import AUTHORS_PROTOCOL

    (_, ytr), _ = make_fmnist_root(data_root, n_train=n_train, n_test=n_test)
    table = np.random.default_rng(0).normal(size=(n_train, 10)).astype(np.float32)
    table[np.arange(n_train), ytr] += 6.0
    teacher = tmp_path / "teacher.npy"
    np.save(teacher, table)
    return {**AUTHORS_PROTOCOL, "random_law": "authors", "epochs": 2, "batch_size": 16, "e1": 2, "e2": 1,
            "hyperopt_evals": 2, "teacher": f"file:{teacher}",
            # the smoke profile's paper-travel meta_lr (~260 here) multiplies a rounding-level difference of a
            # hypergradient under the clip by as much, and its lr of 1 on random pixels makes the students'
            # training itself amplify rounding (no distillation's L_val 3e-3 apart): both set to sane values
            "meta_lr": 1.0, "lr": 0.1}


def test_a_group_with_a_dead_run_is_trained_one_by_one(isolated_kdlib_env, tmp_path, monkeypatch):
    """A stacked run whose every hypergradient is NaN/inf fails its group's end-of-run check; the runner then trains
    the group's seeds one by one, so that each seed gets the record it gets alone (run_one: the dead run stored as
    diverged, the others ok) instead of the whole group failing."""
    import json

    from kdlib.experiments import runner

    over = fmnist_overrides(isolated_kdlib_env["data"], tmp_path)
    init = StackedTuned.__init__

    def dying(self, *args, **kwargs):  # run 1 of every stacked group: every hypergradient NaN
        init(self, *args, **kwargs)
        real = self._hypergradient
        self._hypergradient = lambda value, *a: torch.where(
            torch.arange(value.shape[0], device=value.device)[:, None] == 1, float("nan"), real(value, *a))

    monkeypatch.setattr(StackedTuned, "__init__", dying)
    with pytest.warns(UserWarning, match="trained one by one"):
        runner.run_experiments("fashion_mnist", "gradient", 2, "smoke", tmp_path / "o", progress=False,
                               overrides={**over, "engine": "stacked"})
    recs = [json.loads(p.read_text()) for p in (tmp_path / "o" / "runs").glob("*.json")]
    assert sorted(r["config"]["seed"] for r in recs) == [0, 1]
    assert all("engine" not in r["summary"] and r["summary"]["status"] == "ok" for r in recs)  # one by one


def test_runner_engine_stacked_runs_every_method_of_the_authors_protocol_stacked(isolated_kdlib_env, tmp_path):
    """Through the runner (``--set engine=stacked``): every Table 2 method's seeds train as one stacked model
    (``summary.engine``), hyperopt's trials included, and the records equal the one-by-one records. Measured max
    differences (lambda1, T, relative L_val) at lr 0.1, meta_lr 1: random 0, no distillation 7e-8, hyperopt 3e-7,
    naive 2e-6, gradient 1e-5, proposed 1.2e-5 (its unclamped line); bounds 1e-5 for the fixed methods, 5e-5 for
    gradient-based, 2e-4 for proposed (module docstring)."""
    import json

    from kdlib.experiments import runner

    n_test = 20
    over = fmnist_overrides(isolated_kdlib_env["data"], tmp_path, n_test=n_test)
    recs = {}
    for engine in ("one", "stacked"):
        out = tmp_path / engine
        runner.run_experiments("fashion_mnist", ",".join(SIX), 2, "smoke", out, progress=False,
                               overrides={**over, "engine": engine})
        recs[engine] = {(r["config"]["method"], r["config"]["seed"]): r
                        for r in (json.loads(p.read_text()) for p in (out / "runs").glob("*.json"))}
    assert set(recs["one"]) == set(recs["stacked"]) and len(recs["one"]) == 12
    worst: dict[str, float] = {}
    for key, ref in recs["one"].items():
        got = recs["stacked"][key]
        assert got["summary"]["engine"] == "stacked" and "engine" not in ref["summary"], key
        assert got["config"]["estimator"] == "finite_difference" and got["config"]["loss_form"] == "kl"
        assert got["summary"]["status"] == ref["summary"]["status"] == "ok"
        assert got["summary"]["full_trainings"] == ref["summary"]["full_trainings"]
        assert len(got["history"]) == len(ref["history"]) > 0
        for a, b in zip(got["history"], ref["history"]):
            for k in ("step", "epoch", "hypergrad_evals", "nan_skipped", "phase", "lr"):
                assert a[k] == b[k], (key, k)
            worst[key[0]] = max(worst.get(key[0], 0.0), abs(a["lambda1"] - b["lambda1"]),
                                abs(a["temperature"] - b["temperature"]), abs(a["val_loss"] / b["val_loss"] - 1))
            assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 1.0 / n_test + 1e-12, key
        assert branch_of(1.0 - got["history"][-1]["lambda1"]) == branch_of(1.0 - ref["history"][-1]["lambda1"])
        if key[0] == "hyperopt":
            trials, ref_trials = got["summary"]["extra"]["trials"], ref["summary"]["extra"]["trials"]
            assert [(t["lambda1"], t["temperature"]) for t in trials] == \
                [(t["lambda1"], t["temperature"]) for t in ref_trials]
    print("max |difference| (lambda1, T; L_val relative) per method:", worst)
    for method, diff in worst.items():
        assert diff <= {"gradient": 5e-5, "proposed": 2e-4}.get(method, 1e-5), (method, diff)


def test_a_student_with_dropout_is_refused_before_any_compute():
    """Each one-by-one run draws its dropout masks from its own RNG stream; the stacked backend cannot reproduce
    them and says so (instead of vmap's error in the first step)."""
    problem = random_image_problem(N, N, N)

    def student() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.1), torch.nn.Linear(3 * 32 * 32, 10))

    problem.make_student = student
    for schedule in ("fixed", "gradient"):
        with pytest.raises(ValueError, match="Dropout.*one by one"):
            get_method("naive" if schedule == "fixed" else "gradient").run_together(
                settings("gradient"), problem, "stacked")


@contextlib.contextmanager
def host_reads_refused():
    """Every Python-level read of a tensor's value back to the host (``.item()``, ``.tolist()``, ``.cpu()``,
    ``bool``/``float``/``int`` of a tensor, ``.nonzero()``...) raises while active: on a GPU each would wait for the
    device. The CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")`` (tests/test_cuda.py runs that one)."""
    names = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "nonzero")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def refuse(name: str):
        def read(self, *args, **kwargs):
            raise AssertionError(f"Tensor.{name} read a value back to the host inside the step")
        return read

    try:
        for n in names:
            setattr(torch.Tensor, n, refuse(n))
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)


@pytest.mark.parametrize("schedule,over", [("fixed", {}), ("gradient", dict(estimator="finite_difference")),
                                           ("proposed", dict(estimator="finite_difference")),
                                           ("gradient", dict(estimator="unrolled"))])
def test_the_stacked_step_reads_no_value_back_to_the_host(schedule, over):
    """Issue 20, item 2, checked on the CPU: a stacked step (the estimator, the schedule's clip, NaN/inf count,
    projection and Algorithm 1's line, the optimizer's step) and an epoch reset never read a tensor's value on the
    host; the rows are read only when logged."""
    from kdlib.train.stacked import build

    method = {"fixed": "naive"}.get(schedule, schedule)
    sts = settings(method, batch_size=16, lr=0.5, meta_lr=0.05, meta_clip=1.0, **over)
    problem = random_image_problem(N, N, N)
    backend = build(sts, problem, torch.tensor([[0.5, 2.0], [0.2, 1.0], [0.8, 4.0]]), schedule)
    x, y, t = problem.train.x, problem.train.y, problem.train.teacher
    batches = [[(x[i:i + 16], y[i:i + 16], t[i:i + 16])] * 3 for i in (0, 16)]
    val = (problem.val.x[:16], problem.val.y[:16])
    for b in batches:
        backend.step(b, lambda: val)
    with host_reads_refused():
        with pytest.raises(AssertionError, match="host"):  # the guard works
            bool(torch.tensor(True))
        for _ in range(2):  # gradient, gradient, extrapolate; the epoch reset; ...
            backend.new_epoch()
            for b in batches:
                backend.step(b, lambda: val)
    rows = backend.rows()
    assert len(rows) == 3 and all(r["nan_skipped"] == 0 for r in rows)
    if schedule != "fixed":
        assert all(r["hypergrad_evals"] == 6 for r in rows)
