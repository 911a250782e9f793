"""kdlib on a CUDA device (issue 20): the estimators, the Tuner, the stacked engine and the runner give on the GPU
what they give on the CPU. Every test here is marked ``cuda`` and skips without a CUDA device (tests/conftest.py);
``tools/gpu_check.py`` runs them on the GPU (``pytest -m cuda``).

References and tolerances. The estimators are compared with the same estimator in float64 on the CPU (the
reference), so that only float32 rounding separates the two: measured on the CPU, float32 against that reference
differs by up to 1e-5 relative for the exact estimators and 4e-4 for the finite difference (whose quotient
divides a rounding-level difference of two validation gradients by eps = 0.01 / ||dw||), through Adam up to 4e-6
and 3e-3; the bounds below leave a margin of 10 to 20 for the GPU's other summation orders and kernels. TF32 is switched off in these tests
(``exact_float32``): with cuDNN's default TF32 convolutions a float32 product carries about 1e-3 relative error,
and that is a choice of the run (``tools/gpu_check.py`` records the flags), not a property of the estimators."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_same_history, make_fmnist_root, random_image_problem
from kdlib import Tuner
from kdlib.hypergrad import hypergradient
from kdlib.losses import distillation_loss
from kdlib.models import make_student

pytestmark = pytest.mark.cuda

REPO = Path(__file__).resolve().parents[1]
LAM = (0.35, 2.5)
# estimator -> (options, relative tolerance against the float64 CPU reference); see the module docstring
ESTIMATOR_CASES = {
    "unrolled": ({}, 2e-4),
    "unrolled_reverse": ({"unrolled_impl": "reverse"}, 2e-4),
    "finite_difference": ({}, 5e-3),
    "neumann": ({}, 2e-4),
    "forward": ({}, 2e-4),
}
OPTIMIZER_CASES = {
    "sgd_momentum_nesterov_wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4),
    "adam_capturable": lambda p: torch.optim.Adam(p, lr=1e-3, capturable=True),  # the step count on the device
    "nadam_capturable": lambda p: torch.optim.NAdam(p, lr=1e-3, capturable=True),
    "radam_capturable": lambda p: torch.optim.RAdam(p, lr=1e-3, capturable=True),
}


@pytest.fixture(autouse=True)
def exact_float32():
    """float32 products in float32 (no TF32) while a test runs; the flags are restored after it."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm())


def image_batches(dataset: str = "cifar10", n: int = 32, seed: int = 0):
    """A train batch (x, y, teacher logits) and a validation batch of the dataset's image shape (CPU, float32)."""
    shape = (1, 28, 28) if dataset == "fashion_mnist" else (3, 32, 32)
    g = torch.Generator().manual_seed(seed)
    x, xv = torch.randn(n, *shape, generator=g), torch.randn(n, *shape, generator=g)
    y, yv = torch.randint(0, 10, (n,), generator=g), torch.randint(0, 10, (n,), generator=g)
    t = 3 * torch.randn(n, 10, generator=g)
    return (x, y, t), (xv, yv)


def estimator_on(device: str, dtype: torch.dtype, estimator: str, optimizer: str | None = None,
                 dataset: str = "cifar10") -> torch.Tensor:
    """The hypergradient of the paper's student (BatchNorm in train mode) at LAM on ``device`` in ``dtype``: with
    plain SGD (``lr=0.5``), or through ``optimizer`` after two real steps that fill its state."""
    opts, _ = ESTIMATOR_CASES[estimator]
    method = "unrolled" if estimator.startswith("unrolled") else estimator
    torch.manual_seed(0)
    model = make_student(dataset).to(device=device, dtype=dtype).train()
    (x, y, t), (xv, yv) = image_batches(dataset)
    batch = (x.to(device, dtype), y.to(device), t.to(device, dtype))
    val = (xv.to(device, dtype), yv.to(device))
    lam = torch.tensor(LAM, device=device, dtype=dtype)
    if optimizer is None:
        return hypergradient(model, batch, val, lam, lr=0.5, method=method, **opts)
    opt = OPTIMIZER_CASES[optimizer](model.parameters())
    for k in range(2):
        (xs, ys, ts), _ = image_batches(dataset, seed=10 + k)
        opt.zero_grad()
        distillation_loss(model(xs.to(device, dtype)), ts.to(device, dtype), ys.to(device), 0.5, 2.0).backward()
        opt.step()
    return hypergradient(model, batch, val, lam, optimizer=opt, method=method, **opts)


def _cuda() -> None:
    if not torch.cuda.is_available():  # pragma: no cover - the conftest hook skips first
        pytest.skip("needs CUDA")


@pytest.mark.parametrize("dataset", ["cifar10", "fashion_mnist"])
@pytest.mark.parametrize("estimator", list(ESTIMATOR_CASES))
def test_estimator_on_cuda_equals_cpu_float64(estimator, dataset):
    _cuda()
    got = estimator_on("cuda", torch.float32, estimator, dataset=dataset)
    ref = estimator_on("cpu", torch.float64, estimator, dataset=dataset)
    assert got.is_cuda and got.dtype == torch.float32 and got.shape == (2,)
    assert torch.isfinite(got).all() and ref.abs().min() > 1e-6  # a meaningful comparison
    assert rel_err(got, ref) < ESTIMATOR_CASES[estimator][1], (got, ref)


@pytest.mark.parametrize("optimizer", list(OPTIMIZER_CASES))
@pytest.mark.parametrize("estimator", ["unrolled", "finite_difference", "forward"])
def test_estimator_through_optimizer_on_cuda_equals_cpu_float64(estimator, optimizer):
    """The optimizers' update rules with their state on the GPU (capturable: the step count a device tensor)."""
    _cuda()
    got = estimator_on("cuda", torch.float32, estimator, optimizer)
    ref = estimator_on("cpu", torch.float64, estimator, optimizer.replace("_capturable", ""))
    assert got.is_cuda and torch.isfinite(got).all() and ref.abs().min() > 1e-8
    tol = 5e-2 if estimator == "finite_difference" else 1e-4  # Adam's 1/sqrt(v) amplifies float32 rounding
    assert rel_err(got, ref) < tol, (got, ref)


def tuned_trajectory(device: str, schedule: str, estimator: str, steps: int = 6):
    """``steps`` :meth:`Tuner.train_step` iterations of the CIFAR-10 student on ``device``: the values trained at
    after each step, the final weights (on the CPU) and the tuner."""
    torch.manual_seed(0)
    model = make_student("cifar10").to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tuner = Tuner(opt, init=(0.5, 2.0), schedule=schedule, e1=2, e2=1, estimator=estimator, meta_lr=1.0,
                  meta_clip=1.0, fd_virtual_lr="initial")
    values = []
    for k in range(steps):
        (x, y, t), (xv, yv) = image_batches("cifar10", seed=k)
        tuner.train_step(model, (x.to(device), y.to(device), t.to(device)), (xv.to(device), yv.to(device)))
        values.append(tuner.metaparams.detach().cpu().clone())
    return torch.stack(values), {k: v.detach().cpu() for k, v in model.state_dict().items()}, tuner


@pytest.mark.parametrize("schedule,estimator", [("gradient", "unrolled"), ("gradient", "finite_difference"),
                                                ("proposed", "unrolled")])
def test_tuner_on_cuda_follows_the_cpu_tuner(schedule, estimator):
    _cuda()
    got, w_got, tuner = tuned_trajectory("cuda", schedule, estimator)
    ref, w_ref, ref_tuner = tuned_trajectory("cpu", schedule, estimator)
    assert tuner.metaparams.is_cuda and tuner.nan_skipped == 0
    assert [r["phase"] for r in tuner.history] == [r["phase"] for r in ref_tuner.history]
    assert (got[-1] - got[0]).abs().max() > 1e-3  # the values did move
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-4)
    for k, v in w_ref.items():
        if v.is_floating_point():
            torch.testing.assert_close(w_got[k], v, rtol=0, atol=2e-4, msg=k)
        else:
            assert torch.equal(w_got[k], v), k


@pytest.mark.parametrize("schedule,estimator", [("fixed", "unrolled"), ("gradient", "unrolled"),
                                                ("gradient", "finite_difference"), ("proposed", "unrolled")])
def test_tuner_train_step_makes_no_host_synchronisation(schedule, estimator):
    """Issue 20, item 2: after its first steps (lazy initialisation, the schedule moving to the device) a Tuner step
    on the GPU never waits for it: no ``.item()``, no host branch on a tensor value, NaN/inf counted on the device.
    e1=2, e2=1: the four checked steps cross Algorithm 1's gradient and extrapolation phases."""
    _cuda()
    torch.manual_seed(0)
    model = make_student("cifar10").cuda().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tuner = Tuner(opt, init=(0.5, 2.0), schedule=schedule, e1=2, e2=1, estimator=estimator, fd_virtual_lr="initial")
    data = []
    for k in range(7):  # on the device before the check: a copy from pageable host memory synchronises
        (x, y, t), (xv, yv) = image_batches("cifar10", seed=k)
        data.append(((x.cuda(), y.cuda(), t.cuda()), (xv.cuda(), yv.cuda())))
    torch.cuda.synchronize()
    for batch, val in data[:3]:
        tuner.train_step(model, batch, val)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch, val in data[3:]:
            tuner.train_step(model, batch, val)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert tuner.nan_skipped == 0 and tuner.iteration == 7


def _problem_on(device: str):
    p = random_image_problem(32, 32, 32)
    for split in (p.train, p.val, p.test):
        split.x, split.y = split.x.to(device), split.y.to(device)
        if split.teacher is not None:
            split.teacher = split.teacher.to(device)
    return p


@pytest.mark.parametrize("schedule", ["fixed", "gradient", "proposed"])
def test_stacked_equals_one_by_one_on_cuda(schedule):
    """tests/test_stacked.py's comparison with the runs on the GPU (its tolerances, x10 for other summation
    orders): S runs as one vmapped model against S one-by-one runs."""
    _cuda()
    from kdlib.methods import fixed_tuner
    from kdlib.train import Settings, make_tuner, train_student, train_students_stacked

    problem = _problem_on("cuda")
    init = torch.tensor([[0.5, 2.0], [0.2, 1.0], [0.8, 4.0]])
    tuned = schedule != "fixed"
    sts = [Settings(seed=s, epochs=2, batch_size=16, lr=0.1, e1=2, e2=1,
                    **(dict(meta_lr=1.0, meta_clip=1.0) if tuned else {})) for s in range(3)]
    stacked = train_students_stacked(sts, problem, init, schedule=schedule)
    for st, v, got in zip(sts, init, stacked):
        factory = (lambda o, s, v=v: make_tuner(s, o, v, schedule)) if tuned else fixed_tuner(v)
        ref = train_student(st, problem, factory)
        assert next(got.model.parameters()).is_cuda
        assert_same_history(got, ref, rows=2, abs_tol=1e-4, rel_tol=1e-4, accuracy_tol=1.0 / 32 + 1e-12)
        if tuned:
            assert abs(got.history[-1]["lambda1"] - float(v[0])) > 1e-3  # the values did move


# the stacked step's configurations: (schedule, settings beyond the authors' protocol); e1=2, e2=1 so that the checked
# steps cross Algorithm 1's gradient and extrapolation phases and an epoch reset
STACKED_SYNC_CASES = {
    "fixed": ("fixed", {}),
    "gradient_fd_authors": ("gradient", dict(estimator="finite_difference")),
    "proposed_fd_authors": ("proposed", dict(estimator="finite_difference")),
    "gradient_unrolled": ("gradient", dict(estimator="unrolled", loss_form="ce", fd_virtual_lr="current")),
}


@pytest.mark.parametrize("case", list(STACKED_SYNC_CASES))
def test_stacked_step_makes_no_host_synchronisation(case):
    """Issue 20, item 2, for the stacked backend (kdlib.train.stacked): after its first steps, a step of S runs as one
    vmapped model -- the finite difference's virtual step, validation gradient and two perturbed forwards, the
    schedule's clip, NaN/inf skip counted per run on the device, projection and Algorithm 1's line, and the
    optimizer's step -- never waits for the GPU; the lr is a device tensor made once per lr change (set_lr, between
    epochs, outside the step), and the rows are read only when logged."""
    _cuda()
    from kdlib.experiments.protocol import authors_protocol
    from kdlib.train import Settings
    from kdlib.train.stacked import build

    schedule, over = STACKED_SYNC_CASES[case]
    method = {"fixed": "naive", "gradient": "gradient", "proposed": "proposed"}[schedule]
    sts = [Settings(seed=s, epochs=2, batch_size=16, lr=0.5, e1=2, e2=1, meta_lr=0.05, meta_clip=1.0,
                    **{**authors_protocol(method), **over}) for s in range(3)]
    problem = _problem_on("cuda")
    backend = build(sts, problem, torch.tensor([[0.5, 2.0], [0.2, 1.0], [0.8, 4.0]]), schedule)
    x, y, t = problem.train.x, problem.train.y, problem.train.teacher
    batches = [[(x[i:i + 16], y[i:i + 16], t[i:i + 16])] * 3 for i in (0, 16)]
    val = (problem.val.x[:16], problem.val.y[:16])
    torch.cuda.synchronize()
    for b in batches * 2:  # warm-up: lazy initialisation, the optimizer's first step
        backend.step(b, lambda: val)
    backend.set_lr(0.25)  # StepLR between epochs: one fill kernel, before the checked steps
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):  # two epochs of two batches: gradient, gradient, extrapolate, reset, ...
            backend.new_epoch()
            for b in batches:
                backend.step(b, lambda: val)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    rows = backend.rows()  # read once, when logged
    assert len(rows) == 3 and all(r["nan_skipped"] == 0 for r in rows)
    if schedule != "fixed":
        assert backend.values.is_cuda and backend.schedule.nonfinite.is_cuda and backend.lr.is_cuda
        assert all(r["hypergrad_evals"] > 0 for r in rows)
        assert float(backend.lr) == pytest.approx(0.25)


@pytest.mark.parametrize("method", ["gradient", "proposed", "hyperopt"])
def test_stacked_authors_protocol_equals_one_by_one_on_cuda(method):
    """tests/test_stacked_protocol.py's comparison on the GPU: the authors' protocol (finite differences, the
    virtual step at the initial lr, kl, the per-epoch reset; hyperopt's trials stacked across seeds), the stacked
    runs against the one-by-one runs, both on the GPU."""
    _cuda()
    from kdlib.experiments.protocol import authors_protocol
    from kdlib.methods import get_method
    from kdlib.train import Settings

    problem = _problem_on("cuda")
    sts = [Settings(seed=s, epochs=3, batch_size=8, lr=0.2, lr_step_epochs=1, e1=2, e2=1, hyperopt_evals=3,
                    estimator="finite_difference", meta_lr=0.25, meta_clip=0.01, **authors_protocol(method))
           for s in range(3)]
    m = get_method(method)
    for st, got in zip(sts, m.run_together(sts, problem, "stacked")):
        ref = m.run(st, problem)
        assert next(got.model.parameters()).is_cuda
        assert_same_history(got, ref, rows=2, abs_tol=1e-4, rel_tol=1e-4, accuracy_tol=1.0 / 32 + 1e-12)


# ----------------------------------------------------------------------------------- the CUDA-graph backend
# (schedule, settings): the fixed step with SGD's momentum buffers, the exact estimator, the authors' finite
# difference, Algorithm 1 across its gradient and extrapolation phases
GRAPH_CASES = {
    "fixed_momentum": ("fixed", dict(momentum=0.9, weight_decay=1e-3)),
    "gradient_unrolled": ("gradient", dict(estimator="unrolled")),
    "gradient_fd_authors": ("gradient", dict(estimator="finite_difference", fd_virtual_lr="initial", loss_form="kl",
                                             proposed_reset="epoch")),
    "proposed_unrolled": ("proposed", dict(estimator="unrolled")),
}


@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_graphed_stacked_equals_eager_stacked_on_cuda(case):
    """kdlib.train.stacked_graph on a GPU: four epochs of 32 examples in batches of 12 (the last of 8, its own
    graphs: warmup=1 captures it), validation batches of 12 and 8, StepLR every 2 epochs (new train graphs): the
    histories and weights of the eager stacked backend, up to float32 rounding (the graph replays the eager
    kernels; its bounds are the stacked-on-GPU ones); the default capturer (warmup=2) through the backend's name
    too."""
    _cuda()
    from kdlib.train import Settings, run_loop, train_students_stacked
    from kdlib.train import stacked_graph

    schedule, over = GRAPH_CASES[case]
    problem = _problem_on("cuda")
    init = torch.tensor([[0.5, 2.0], [0.2, 1.0], [0.8, 4.0]])
    sts = [Settings(seed=s, epochs=4, batch_size=12, lr=0.1, lr_step_epochs=2, e1=2, e2=1, meta_lr=1.0,
                    meta_clip=1.0, **over) for s in range(3)]
    eager = train_students_stacked(sts, problem, init, schedule=schedule)
    capturer = stacked_graph.CudaGraphs(warmup=1)
    graphed = run_loop(sts, problem, lambda: stacked_graph.build(sts, problem, init, schedule, capturer=capturer))
    default = train_students_stacked(sts, problem, init, schedule=schedule, backend="stacked_graph")
    assert capturer.captures >= 2 and capturer.replays > capturer.captures, capturer.counts()
    for runs in (graphed, default):
        for got, ref in zip(runs, eager):
            assert next(got.model.parameters()).is_cuda
            assert_same_history(got, ref, rows=4, abs_tol=1e-4, rel_tol=1e-4, accuracy_tol=1.0 / 32 + 1e-12)
            for (k, p), q in zip(got.model.state_dict().items(), ref.model.state_dict().values()):
                if p.is_floating_point():
                    torch.testing.assert_close(p, q, rtol=0, atol=1e-4, msg=k)
                else:
                    assert torch.equal(p, q), k
    if schedule != "fixed":
        assert abs(eager[0].history[-1]["lambda1"] - 0.5) > 1e-3  # the values did move


@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_graphed_stacked_replay_makes_no_host_synchronisation(case):
    """After each key's warm-up and capture (a capture synchronises, once), a step of the graphed backend -- the
    batches stacked into the static buffers, the hypergradient's replay, the schedule's eager update, the train
    step's replay -- never waits for the GPU; the checked steps are replays only."""
    _cuda()
    from kdlib.train import Settings
    from kdlib.train import stacked_graph

    schedule, over = GRAPH_CASES[case]
    sts = [Settings(seed=s, epochs=2, batch_size=16, lr=0.5, e1=2, e2=1, meta_lr=0.05, meta_clip=1.0, **over)
           for s in range(3)]
    problem = _problem_on("cuda")
    backend = stacked_graph.build(sts, problem, torch.tensor([[0.5, 2.0], [0.2, 1.0], [0.8, 4.0]]), schedule)
    x, y, t = problem.train.x, problem.train.y, problem.train.teacher
    batches = [[(x[i:i + 16], y[i:i + 16], t[i:i + 16])] * 3 for i in (0, 16)]
    val = (problem.val.x[:16], problem.val.y[:16])
    backend.set_lr(0.25)  # StepLR before the checked steps: the train graphs of this lr are captured below
    for _ in range(3):  # every key: two warm-up calls, then its capture
        backend.new_epoch()
        for b in batches:
            backend.step(b, lambda: val)
    torch.cuda.synchronize()
    before = backend.capturer.counts()
    assert before["captures"] >= 1
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            backend.new_epoch()
            for b in batches:
                backend.step(b, lambda: val)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    after = backend.capturer.counts()
    assert after["captures"] == before["captures"] and after["eager"] == before["eager"]
    assert after["replays"] > before["replays"]
    rows = backend.rows()
    assert len(rows) == 3 and all(r["nan_skipped"] == 0 for r in rows)


# ------------------------------------------------------------------------------------------- the runner
N_TRAIN, N_TEST = 60, 20
FAST = dict(epochs=1, batch_size=32, e1=2, e2=1, hyperopt_evals=2)
SIX = "no_distillation,naive,random,gradient,hyperopt,proposed"


@pytest.fixture
def fmnist_teacher(isolated_kdlib_env, tmp_path):
    """A tiny fabricated Fashion-MNIST under KDLIB_DATA and a user teacher file agreeing with 90 % of its labels."""
    (_, ytr), _ = make_fmnist_root(isolated_kdlib_env["data"], n_train=N_TRAIN, n_test=N_TEST)
    table = np.random.default_rng(0).normal(size=(N_TRAIN, 10)).astype(np.float32)
    good = np.arange(N_TRAIN) % 10 != 0
    table[np.arange(N_TRAIN)[good], ytr[good]] += 6.0
    path = tmp_path / "teacher.npy"
    np.save(path, table)
    return path


def _records(out: Path) -> dict[tuple, dict]:
    return {(r["config"]["method"], r["config"]["seed"]): r
            for r in (json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json")))}


@pytest.mark.parametrize("engine", ["one", "stacked"])
def test_runner_smoke_on_cuda_matches_cpu(fmnist_teacher, tmp_path, engine):
    """Every method of Table 2 through the runner on the GPU: records say so and follow the CPU ones."""
    _cuda()
    from kdlib.experiments import runner
    from kdlib.experiments.problem import clear_memo

    over = {**FAST, "teacher": f"file:{fmnist_teacher}", "engine": engine, "estimator": "unrolled"}
    recs = {}
    for device in ("cpu", "cuda"):
        clear_memo()
        out = tmp_path / device
        runner.run_experiments("fashion_mnist", SIX, 2, "smoke", out, device=device, progress=False, overrides=over)
        recs[device] = _records(out)
    assert set(recs["cuda"]) == set(recs["cpu"]) and len(recs["cuda"]) == 12
    for key, ref in recs["cpu"].items():
        got = recs["cuda"][key]
        assert got["config"]["device"] == "cuda" and got["summary"]["status"] == "ok", key
        gpu = got["provenance"]["accelerator"]
        assert gpu["name"] == torch.cuda.get_device_name() and gpu["tf32_cudnn"] is False, key
        assert "accelerator" not in ref["provenance"]
        assert got["summary"]["final_accuracy"] is not None
        if key[0] == "hyperopt":  # its best trial may flip on a tie in validation accuracy: compare the start only
            continue
        assert len(got["history"]) == len(ref["history"]) > 0, key
        for a, b in zip(got["history"], ref["history"]):
            assert a["step"] == b["step"] and a["hypergrad_evals"] == b["hypergrad_evals"], key
            assert a["lambda1"] == pytest.approx(b["lambda1"], abs=1e-4), key
            assert a["temperature"] == pytest.approx(b["temperature"], abs=1e-4), key
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3), key
    clear_memo()


def test_cli_device_cuda_with_workers(fmnist_teacher, tmp_path):
    """``kdlib run --device cuda --workers 2``: spawned workers (a forked CUDA context would fail) each on the GPU."""
    _cuda()
    out = tmp_path / "cli"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "kdlib", "run", "--dataset", "fashion_mnist", "--methods", "naive,gradient",
           "--seeds", "2", "--profile", "smoke", "--device", "cuda", "--workers", "2", "--no-progress",
           "--out", str(out), *[f"--set={k}={v}" for k, v in FAST.items()], f"--set=teacher=file:{fmnist_teacher}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = _records(out)
    assert len(recs) == 4 and all(r["config"]["device"] == "cuda" for r in recs.values())


def test_runner_applies_the_tf32_setting_and_records_it(fmnist_teacher, tmp_path):
    """``tf32=True`` (kdlib.precision): the run computes with both TF32 flags on, its record says so, its key differs
    from the float32 run's, and the process's flags are restored after."""
    _cuda()
    from kdlib.experiments import runner
    from kdlib.experiments.problem import clear_memo

    over = {**FAST, "teacher": f"file:{fmnist_teacher}", "estimator": "unrolled"}
    keys = {}
    for tf32 in (False, True):
        clear_memo()
        out = tmp_path / f"tf32_{tf32}"
        runner.run_experiments("fashion_mnist", "naive", 1, "smoke", out, device="cuda", progress=False,
                               overrides={**over, "tf32": tf32})
        (rec,) = _records(out).values()
        gpu = rec["provenance"]["accelerator"]
        assert (gpu["tf32_cudnn"], gpu["tf32_matmul"]) == (tf32, tf32) and rec["config"]["tf32"] is tf32
        keys[tf32] = rec["key"]
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
    assert keys[False] != keys[True]
    clear_memo()
