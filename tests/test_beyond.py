"""Beyond the paper: ``ctkd``, ``logit_std`` and ``gradient_std`` (kdlib.ctkd, kdlib.weighted_kd, the standardised
loss forms of kdlib.losses, kdlib.methods).

Every loss and one update of each method are checked against an independent float64 computation written here
from the reference codes' formulas (numpy, or torch autograd on code that does not call kdlib); the gradient
reversal against the plain gradient; the curriculum and tau's range against their closed forms; and one tiny run
of each method through ``python -m kdlib run`` and ``kdlib recheck``.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import kdlib.methods as methods
from conftest import random_image_problem
from kdlib.ctkd import (GlobalTemperature, THETA_INIT, cosine_weight, reverse_gradient, reversal_weight,
                        temperature_of)
from kdlib.experiments.profiles import resolve_config
from kdlib.losses import distillation_loss, standardize_logits, weighted_kd_loss
from kdlib.names import ALL_METHOD_NAMES, BEYOND_METHOD_NAMES, METHOD_LABELS, METHOD_NAMES
from kdlib.train import Problem, Settings, Split
from kdlib.weighted_kd import WeightedKD


# ------------------------------------------------------------------------------------------ numpy references
def np_log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def np_zscore(z: np.ndarray) -> np.ndarray:
    """The reference code's ``normalize``: (z - mean) / (1e-7 + std), std with ddof=1."""
    return (z - z.mean(axis=1, keepdims=True)) / (1e-7 + z.std(axis=1, ddof=1, keepdims=True))


def np_ce(z: np.ndarray, y: np.ndarray) -> float:
    return float(-np_log_softmax(z)[np.arange(len(y)), y].mean())


def np_kl(s: np.ndarray, t: np.ndarray, temp: float) -> float:
    lp, lq = np_log_softmax(t / temp), np_log_softmax(s / temp)
    return float((np.exp(lp) * (lp - lq)).sum(axis=1).mean())


def np_soft_ce(s: np.ndarray, t: np.ndarray, temp: float) -> float:
    return float(-(np.exp(np_log_softmax(t / temp)) * np_log_softmax(s / temp)).sum(axis=1).mean())


def np_weighted(s, t, y, ce_w, kd_w, temp, standardize=False) -> float:
    ss, tt = (np_zscore(s), np_zscore(t)) if standardize else (s, t)
    return ce_w * np_ce(s, y) + kd_w * temp ** 2 * np_kl(ss, tt, temp)


def np_tau(theta: float) -> float:
    return 1.0 + 20.0 / (1.0 + math.exp(-theta))


def central_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


def _logits(seed: int = 0, n: int = 6, k: int = 5):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, k)) * 2.0
    t = rng.normal(size=(n, k)) * 4.0 + 1.0
    y = rng.integers(0, k, n)
    return s, t, y


# ------------------------------------------------------------------------------------------ losses
def test_standardize_is_the_reference_zscore():
    s, _, _ = _logits()
    got = standardize_logits(torch.tensor(s)).numpy()
    np.testing.assert_allclose(got, np_zscore(s), rtol=1e-12, atol=1e-12)
    # unbiased: the rows have sample std 1 (ddof=1) up to eps, not population std 1
    np.testing.assert_allclose(got.std(axis=1, ddof=1), 1.0, rtol=1e-6)
    assert np.all(np.abs(got.std(axis=1, ddof=0) - 1.0) > 1e-3)
    # invariant to a per-row shift and positive scale of the logits
    np.testing.assert_allclose(standardize_logits(torch.tensor(3.0 * s + 7.0)).numpy(), got, atol=1e-6)


@pytest.mark.parametrize("standardize,ce_w,kd_w,temp", [(False, 0.1, 0.9, 15.62), (True, 0.1, 9.0, 2.0),
                                                        (False, 0.3, 2.0, 0.5)])
def test_weighted_kd_loss_against_numpy(standardize, ce_w, kd_w, temp):
    s, t, y = _logits(1)
    got = weighted_kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), ce_w, kd_w, temp, standardize)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(np_weighted(s, t, y, ce_w, kd_w, temp, standardize), rel=1e-12)
    # c times the paper's convex form at lambda1 = ce_w / c, KL form with Hinton's T^2
    c = ce_w + kd_w
    form = "kl_std" if standardize else "kl"
    paper = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), ce_w / c, temp, form=form,
                              t2_scaling=True)
    assert float(got) == pytest.approx(c * float(paper), rel=1e-12)


@pytest.mark.parametrize("form", ["ce_std", "kl_std", "ce", "kl"])
def test_distillation_loss_standardised_forms_against_numpy(form):
    s, t, y = _logits(2)
    lam, temp = 0.35, 1.7
    got = float(distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), lam, temp, form=form))
    ss, tt = (np_zscore(s), np_zscore(t)) if form.endswith("_std") else (s, t)
    d = np_soft_ce(ss, tt, temp) if form.startswith("ce") else np_kl(ss, tt, temp)
    assert got == pytest.approx(lam * np_ce(s, y) + (1 - lam) * d, rel=1e-12)  # CE always on the raw logits


def test_unknown_loss_form_is_named():
    s, t, y = _logits()
    with pytest.raises(ValueError, match="unknown loss form 'std'.*ce_std"):
        distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), 0.5, 1.0, form="std")


# ------------------------------------------------------------------------------------------ CTKD pieces
def test_cosine_schedule_values():
    assert cosine_weight(0) == 0.0
    assert cosine_weight(5) == pytest.approx(-0.5, abs=1e-15)
    assert cosine_weight(10) == -1.0
    assert cosine_weight(20) == -1.0
    assert cosine_weight(-3) == 0.0
    w = [cosine_weight(e) for e in range(11)]
    assert all(a > b for a, b in zip(w, w[1:]))  # strictly decreasing over the 10 epochs
    # the loop's 0-based epoch e trains at the reference code's 1-based epoch e + 1
    assert reversal_weight(0) == pytest.approx((math.cos(math.pi / 10) - 1) / 2, abs=1e-15)
    assert reversal_weight(0) == pytest.approx(-0.02447, abs=1e-5)
    assert reversal_weight(4) == pytest.approx(-0.5, abs=1e-15)
    assert reversal_weight(9) == -1.0 and reversal_weight(30) == -1.0


def test_tau_range_is_1_to_21():
    theta = torch.tensor([-200.0, -5.0, 0.0, 5.0, 200.0], dtype=torch.float64)
    tau = temperature_of(theta)
    assert tau[0] == 1.0 and tau[-1] == 21.0 and tau[2] == 11.0
    assert torch.all(tau[1:] > tau[:-1]) and torch.all((tau >= 1) & (tau <= 21))
    assert float(GlobalTemperature()(0.0).detach()) == pytest.approx(np_tau(THETA_INIT), rel=1e-6)
    assert np_tau(THETA_INIT) == pytest.approx(15.6212, abs=1e-4)


@pytest.mark.parametrize("weight", [-0.5, -1.0, 0.7])
def test_gradient_reversal_multiplies_the_temperature_gradient(weight):
    s, t, y = _logits(3)
    st, tt, yt = torch.tensor(s, requires_grad=True), torch.tensor(t), torch.tensor(y)
    theta = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)

    def loss(tau):
        return weighted_kd_loss(st, tt, yt, 0.1, 0.9, tau)

    (plain,) = torch.autograd.grad(loss(temperature_of(theta)), [theta])
    (rev_theta, rev_s) = torch.autograd.grad(loss(temperature_of(reverse_gradient(theta, weight))), [theta, st])
    (plain_s,) = torch.autograd.grad(loss(temperature_of(theta)), [st])
    assert float(rev_theta) == pytest.approx(weight * float(plain), rel=1e-12)
    torch.testing.assert_close(rev_s, plain_s, rtol=0, atol=0)  # the student's gradient is untouched
    # the plain gradient is the central difference of the numpy loss in theta
    fd = central_grad(lambda th: np_weighted(s, t, y, 0.1, 0.9, np_tau(float(th[0]))), np.array([0.3]))[0]
    assert float(plain) == pytest.approx(fd, rel=1e-6)
    if weight < 0:  # reversed: a descent step on theta ascends the distillation loss
        assert np.sign(float(rev_theta)) == -np.sign(fd)


# ------------------------------------------------------------------------------------------ one update each
def _linear_batch(seed: int = 0, n: int = 8, d: int = 4, k: int = 3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    t = 3.0 * torch.randn(n, k, generator=g, dtype=torch.float64)
    return x, y, t


def _np_linear(W, b, x):
    return x @ W.T + b


@pytest.mark.parametrize("method", ["ctkd", "logit_std"])
def test_one_update_against_float64_central_differences(method):
    x, y, t = _linear_batch()
    model = nn.Linear(4, 3).double()
    W0, b0 = model.weight.detach().numpy().copy(), model.bias.detach().numpy().copy()
    lr = 0.5
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    if method == "ctkd":
        step = WeightedKD(opt, 0.1, 0.9, GlobalTemperature().double())
    else:
        step = WeightedKD(opt, 0.1, 9.0, 2.0, standardize=True)
    step.new_epoch()
    step.train_step(model, (x, y, t))
    xn, yn, tn = x.numpy(), y.numpy(), t.numpy()
    theta0 = THETA_INIT

    def f(W, b, theta):
        s = _np_linear(W, b, xn)
        if method == "ctkd":
            return np_weighted(s, tn, yn, 0.1, 0.9, np_tau(theta))
        return np_weighted(s, tn, yn, 0.1, 9.0, 2.0, standardize=True)

    gW = central_grad(lambda W: f(W, b0, theta0), W0)
    gb = central_grad(lambda b: f(W0, b, theta0), b0)
    np.testing.assert_allclose(model.weight.detach().numpy(), W0 - lr * gW, rtol=0, atol=1e-7)
    np.testing.assert_allclose(model.bias.detach().numpy(), b0 - lr * gb, rtol=0, atol=1e-7)
    if method == "ctkd":
        g_theta = central_grad(lambda th: f(W0, b0, float(th[0])), np.array([theta0]))[0]
        # theta is in the student's optimizer and its gradient is reversed by the first epoch's weight
        assert len(opt.param_groups) == 2 and opt.param_groups[1]["lr"] == lr
        expected = theta0 - lr * reversal_weight(0) * g_theta
        assert float(step.module.theta.detach()) == pytest.approx(expected, abs=1e-9)
        assert float(step.temperature) == pytest.approx(np_tau(theta0), rel=1e-7)  # trained at (float32 record)
        assert float(step.metaparams[0]) == pytest.approx(0.1)
    else:
        assert len(opt.param_groups) == 1
        assert step.metaparams.tolist() == pytest.approx([0.1 / 9.1, 2.0])


def test_ctkd_weight_follows_the_epochs():
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    step = WeightedKD(opt, 0.1, 0.9, GlobalTemperature())
    seen = []
    for _ in range(12):
        step.new_epoch()
        seen.append(step.weight())
    assert seen == [reversal_weight(e) for e in range(12)]
    assert step.phase == "curriculum" and step.hypergrad_evals == 0 and step.check() == {"hypergrad_evals": 0,
                                                                                           "nan_skipped": 0}


def test_weighted_kd_rejects_bad_input():
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        WeightedKD(opt, 0.1, 0.9, 0.0)
    with pytest.raises(ValueError, match="ce_weight and kd_weight"):
        WeightedKD(opt, 0.0, 0.0, 2.0)
    with pytest.raises(TypeError, match="optimizer"):
        WeightedKD("sgd", 0.1, 0.9, 2.0)  # type: ignore[arg-type]


def _ref_zscore(z):
    return (z - z.mean(-1, keepdim=True)) / (1e-7 + z.std(-1, keepdim=True))


def _ref_train_loss(z, t, y, lam, temp):
    """The paper's L_train with D_T on z-scored logits, written without kdlib (float64 autograd reference)."""
    p = torch.softmax(_ref_zscore(t) / temp, -1)
    log_q = torch.log_softmax(_ref_zscore(z) / temp, -1)
    ce = -torch.log_softmax(z, -1)[torch.arange(len(y)), y].mean()
    return lam * ce + (1 - lam) * (-(p * log_q).sum(-1).mean())


def test_gradient_std_one_update_against_float64_bilevel_step():
    """One iteration of ``gradient_std``: eq. (3)'s hypergradient of L_val(w - lr grad_w L_train(w, lambda)) on the
    standardised loss, the metaparameter step, then the student's step at the new values."""
    g = torch.Generator().manual_seed(5)
    n, n_val, d, k = 12, 10, 4, 3
    x = torch.randn(n + n_val, d, generator=g)
    y = torch.randint(0, k, (n + n_val,), generator=g)
    t = 3.0 * torch.randn(n + n_val, k, generator=g)
    problem = Problem(train=Split(x[:n], y[:n], t[:n]), val=Split(x[n:], y[n:]), test=Split(x[n:], y[n:]),
                      make_student=lambda: nn.Linear(d, k))
    lr, meta_lr, lam0 = 0.5, 0.05, (0.4, 2.0)
    st = Settings(iterations=1, lr=lr, meta_lr=meta_lr, meta_clip=1e6, shuffle=False, estimator="unrolled",
                  init_lambda1=lam0[0], init_temperature=lam0[1], seed=3)
    out = methods.get_method("gradient_std").run(st, problem)
    torch.manual_seed(3)
    ref = nn.Linear(d, k).double()
    W = ref.weight.detach().clone().requires_grad_(True)
    b = ref.bias.detach().clone().requires_grad_(True)
    lam = torch.tensor(lam0, dtype=torch.float64, requires_grad=True)
    xd, td, xv = x[:n].double(), t[:n].double(), x[n:].double()

    def train_loss(W_, b_, lam_):
        return _ref_train_loss(xd @ W_.T + b_, td, y[:n], lam_[0], lam_[1])

    gW, gb = torch.autograd.grad(train_loss(W, b, lam), [W, b], create_graph=True)
    val = torch.nn.functional.cross_entropy(xv @ (W - lr * gW).T + (b - lr * gb), y[n:])
    (hyper,) = torch.autograd.grad(val, [lam])
    lam1 = (lam - meta_lr * hyper).detach()
    assert [out.history[0]["lambda1"], out.history[0]["temperature"]] == pytest.approx(lam1.tolist(), rel=1e-5)
    gW1, gb1 = torch.autograd.grad(train_loss(W, b, lam1), [W, b])
    torch.testing.assert_close(out.model.weight.detach().double(), (W - lr * gW1).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.model.bias.detach().double(), (b - lr * gb1).detach(), rtol=1e-5, atol=1e-6)
    # and it is not the plain method: the same step without standardisation moves (lambda1, T) elsewhere
    plain = methods.get_method("gradient").run(st, problem).history[0]
    assert abs(plain["temperature"] - out.history[0]["temperature"]) > 1e-4


def test_gradient_std_standardises_the_configured_form():
    for form in ("ce", "kl"):
        cfg = resolve_config("cifar10_reduced", "gradient_std", "paper", 0, loss_form=form)
        opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
        tuner = methods.get_method("gradient_std").tuner(cfg)(opt, Settings.of(cfg))
        assert tuner.form == f"{form}_std"
        assert methods.get_method("gradient").tuner(cfg)(opt, Settings.of(cfg)).form == form


# ------------------------------------------------------------------------------------------ registry, CLI
def test_registered_beside_the_paper_six():
    assert tuple(methods.METHODS)[:6] == METHOD_NAMES and len(METHOD_NAMES) == 6
    assert set(BEYOND_METHOD_NAMES) <= set(methods.METHODS)
    assert ALL_METHOD_NAMES == METHOD_NAMES + BEYOND_METHOD_NAMES
    for m in BEYOND_METHOD_NAMES:
        assert m in METHOD_LABELS and methods.get_method(m).__doc__
        cfg = resolve_config("cifar10_reduced", m, "paper", 0)  # valid at the paper protocol without extra names
        assert cfg.method == m
    assert not methods.get_method("ctkd").uses_val_split and not methods.get_method("logit_std").uses_val_split
    assert methods.get_method("gradient_std").uses_val_split


pytestmark_cli = pytest.mark.usefixtures("shared_module_cache")


@pytestmark_cli
def test_cli_runs_each_method_and_rechecks(tmp_path):
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "kdlib", "run", "--dataset", "synthetic", "--methods",
                           ",".join(BEYOND_METHOD_NAMES), "--seeds", "1", "--profile", "smoke", "--out", str(out),
                           "--no-progress", "--set", "iterations=12", "--set", "log_every=4"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert set(summary) == set(BEYOND_METHOD_NAMES)
    recs = {json.loads(p.read_text())["config"]["method"]: json.loads(p.read_text())
            for p in (out / "runs").glob("*.json")}
    assert set(recs) == set(BEYOND_METHOD_NAMES)
    for m, rec in recs.items():
        assert rec["summary"]["status"] == "ok" and rec["summary"]["full_trainings"] == 1
        assert [h["step"] for h in rec["history"]] == [0, 4, 8, 11]
    ctkd = [h["temperature"] for h in recs["ctkd"]["history"]]
    assert all(1 < v < 21 for v in ctkd) and len(set(ctkd)) > 1  # learned, inside (1, 21)
    assert [h["lambda1"] for h in recs["ctkd"]["history"]] == [pytest.approx(0.1)] * 4
    assert {h["temperature"] for h in recs["logit_std"]["history"]} == {2.0}
    assert recs["ctkd"]["summary"]["hypergrad_evals"] == recs["logit_std"]["summary"]["hypergrad_evals"] == 0
    assert recs["gradient_std"]["summary"]["hypergrad_evals"] == 12
    ctkd_file = next((out / "runs").glob("*ctkd*.json"))
    proc = subprocess.run([sys.executable, "-m", "kdlib", "recheck", str(ctkd_file), "--rows", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdict = json.loads(proc.stdout.strip().splitlines()[-1])
    assert verdict["ok"] and verdict["max_difference"]["temperature"] == 0.0


def test_image_student_runs_each_method_over_epochs():
    """The CIFAR student through the loop for a few epochs: ctkd's τ moves, all records are finite."""
    problem = random_image_problem()
    for m in BEYOND_METHOD_NAMES:
        st = Settings(epochs=3, batch_size=16, lr=0.1, seed=1, meta_lr=1.0)
        hist = methods.get_method(m).run(st, problem).history
        assert [h["epoch"] for h in hist] == [0, 1, 2]
        assert all(math.isfinite(h["test_accuracy"]) and math.isfinite(h["val_loss"]) for h in hist)
        if m == "ctkd":
            assert hist[0]["temperature"] != hist[-1]["temperature"]
    st = Settings(epochs=1, batch_size=16, lr=0.1, seed=1)
    a = methods.get_method("ctkd").run(st, problem).history
    b = methods.get_method("ctkd").run(st, problem).history
    assert [(h["temperature"], h["test_accuracy"]) for h in a] == [(h["temperature"], h["test_accuracy"]) for h in b]


# ------------------------------------------------------------------------------------------ the archive and the page
def _rec(method: str, seed: int, acc: float, wall: float, temps=(2.0, 3.0), evals: int = 0,
         cpu_model: str | None = "Test CPU", **config):
    from kdlib.experiments.protocol import AUTHORS_PROTOCOL

    history = [dict(step=e, epoch=e, test_accuracy=acc, lambda1=0.1, temperature=t, phase="fixed",
                    hypergrad_evals=evals) for e, t in enumerate(temps)]
    return dict(config={**dict(dataset="cifar10_reduced", method=method, seed=seed, **AUTHORS_PROTOCOL), **config},
                history=history, summary=dict(status="ok", final_accuracy=acc, wall_time=wall, full_trainings=1,
                                              hypergrad_evals=evals),
                provenance=dict(kdlib_version="0.1.0", commit="abc1234", torch="2.x", threads=1, machine="test",
                                created="2026-01-01T00:00:00", cpu_kernels="avx2", cpu_capability="AVX2",
                                cpu_model=cpu_model))


def _write(root, folder, recs):
    d = root / "cifar10_reduced" / folder / "runs"
    d.mkdir(parents=True, exist_ok=True)
    for r in recs:
        c = r["config"]
        (d / f"cifar10_reduced__{c['method']}__seed{c['seed']}.json").write_text(json.dumps(r))


def test_archived_comparison_reader_checks_and_numbers(tmp_path):
    from kdlib.analysis import beyond as B

    root = tmp_path / "archive"
    assert B.load_beyond(root=root) == []
    six = [_rec("gradient", s, a, 300.0 + s, evals=4500) for s, a in enumerate([0.55, 0.57, 0.56, 0.58])] + \
          [_rec("no_distillation", s, a, 100.0) for s, a in enumerate([0.54, 0.545, 0.55, 0.548])]
    new = [_rec("ctkd", s, a, 110.0 + 2 * s) for s, a in enumerate([0.58, 0.60, 0.59, 0.61])] + \
          [_rec("logit_std", s, a, 90.0) for s, a in enumerate([0.50, 0.60, 0.55, 0.56])]
    _write(root, "authors", six)
    _write(root, "beyond", new)
    comp = B.comparison_records(root=root)
    assert len(comp["authors"]) == 8 and [r["config"]["method"] for r in comp["beyond"]] == ["ctkd"] * 4 + ["logit_std"] * 4
    recs = comp["authors"] + comp["beyond"]
    t = B.accuracy_cost_table(recs).set_index("method")
    ctkd_acc = np.array([0.58, 0.60, 0.59, 0.61])
    assert t.loc["ctkd", "mean"] == pytest.approx(ctkd_acc.mean()) and t.loc["ctkd", "std"] == pytest.approx(ctkd_acc.std())
    assert t.loc["ctkd", "accuracy"] == f"{ctkd_acc.mean():.4f} ({ctkd_acc.max():.4f}) ± {ctkd_acc.std():.4f}"
    assert t.loc["ctkd", "wall_time_s"] == pytest.approx(113.0) and t.loc["gradient", "hypergradients"] == 4500
    assert t.loc["gradient_std", "runs"] == 0 and t.loc["gradient_std", "accuracy"] == "—"
    v = B.verdict(recs).set_index(["method", "reference"])
    # ctkd is above gradient by 0.03 on every seed: the interval excludes zero; logit_std scatters around it
    assert v.loc[("ctkd", "gradient"), "separated"] and v.loc[("ctkd", "gradient"), "mean"] == pytest.approx(0.03)
    assert not v.loc[("logit_std", "gradient"), "separated"]
    assert ("gradient_std", "gradient") not in v.index
    curves = B.temperature_curves(recs)
    assert set(curves.method) == {"ctkd", "gradient"} and len(curves) == 16
    # a record of another protocol, a duplicate cell, or a paper method in the folder is refused, naming the file
    _write(root, "beyond", [_rec("gradient_std", 0, 0.5, 1.0, loss_form="ce")])
    with pytest.raises(ValueError, match="gradient_std__seed0.*not made under the authors' protocol"):
        B.load_beyond(root=root)
    (root / "cifar10_reduced" / "beyond" / "runs" / "cifar10_reduced__gradient_std__seed0.json").unlink()
    _write(root, "beyond", [_rec("naive", 0, 0.5, 1.0)])
    with pytest.raises(ValueError, match="method 'naive' does not belong here"):
        B.load_beyond(root=root)


def test_page_says_the_archive_is_empty_and_reads_it_once_filled(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from kdlib.book import beyond_page

    shown: list = []
    monkeypatch.setattr(beyond_page, "show_markdown", lambda text: shown.append(text))
    monkeypatch.setattr(beyond_page, "show_table", lambda df, **kw: shown.append(df))
    monkeypatch.setattr(beyond_page.plt, "show", lambda: None)
    root = tmp_path / "archive"
    _write(root, "authors", [_rec("gradient", s, 0.55 + 0.01 * s, 300.0, evals=4500) for s in range(3)])
    monkeypatch.setenv("KDLIB_ARCHIVE", str(root))
    page = beyond_page.BeyondPage("paper", seeds=3)
    page.archive()
    assert "has not been run yet" in shown[0] and "--cpu-kernels avx2" in shown[0] and "--seeds 10" in shown[0]
    page.runs()  # the paper profile runs nothing
    table = page.table()
    assert (table.loc[table.method == METHOD_LABELS["ctkd"], "final accuracy, mean (max) ± std"] == "not run yet").all()
    page.figure()
    page.temperatures()
    shown.clear()
    page.verdict()
    assert any("no verdict yet" in s for s in shown if isinstance(s, str))

    _write(root, "beyond", [_rec("ctkd", s, 0.60 + 0.01 * s, 120.0, temps=(15.6, 18.0)) for s in range(3)])
    shown.clear()
    page = beyond_page.BeyondPage("paper", seeds=3)
    page.archive()
    assert "has not been run yet" not in shown[0] and "CTKD (curriculum temperature): 3" in shown[0]
    table = page.table()
    row = table[table.method == METHOD_LABELS["ctkd"]].iloc[0]
    assert row["final accuracy, mean (max) ± std"].startswith("0.6100 (0.6200)") and row["runs"] == 3
    page.temperatures()
    shown.clear()
    out = page.verdict()
    v = out[beyond_page.ARCHIVE_SOURCE].set_index("reference")
    assert v.loc["gradient", "mean"] == pytest.approx(0.05) and v.loc["gradient", "separated"]
    text = next(s for s in shown if isinstance(s, str) and "Differences larger than the seed spread" in s)
    assert "CTKD (curriculum temperature) − gradient-based = +0.0500 (above)" in text
    assert "0.40× gradient-based" in text and "Wall times compare only" not in text
    assert row["timed on"] == "Test CPU"

    # timed on another CPU model (or one not recorded): no wall-time ratio, and the text says why
    _write(root, "beyond", [_rec("ctkd", s, 0.60 + 0.01 * s, 120.0, temps=(15.6, 18.0), cpu_model=None)
                            for s in range(3)])
    page = beyond_page.BeyondPage("paper", seeds=3)
    page.archive()
    shown.clear()
    page.verdict()
    text = next(s for s in shown if isinstance(s, str) and "Differences larger than the seed spread" in s)
    assert "× gradient-based" not in text
    assert "CTKD (curriculum temperature) was timed on CPU model not recorded" in text
