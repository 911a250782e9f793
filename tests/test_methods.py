"""The six methods and their controllers: box, determinism, Algorithm 1's phases, NaN handling, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import kdlib.methods as methods
import kdlib.tuner as tuner_mod
from kdlib.experiments.profiles import resolve_config
from kdlib.metaparams import in_box
from kdlib.names import METHOD_NAMES
from kdlib.train import Problem, Split


def _problem(seed: int = 0, n: int = 15, n_val: int = 60) -> Problem:
    """A small fixed logistic problem in the synthetic shape: 3 features, 2 classes."""
    g = torch.Generator().manual_seed(1234 + seed)
    x = torch.randn(n + n_val, 3, generator=g)
    y = ((x[:, 0] * x[:, 1] + 0.5 * torch.randn(n + n_val, generator=g)) > 0).long()
    teacher = torch.stack([-x[:, 0] * x[:, 1], x[:, 0] * x[:, 1]], 1) * 2.0
    return Problem(train=Split(x[:n], y[:n], teacher[:n]), val=Split(x[n:], y[n:]), test=Split(x[n:], y[n:]),
                   make_student=lambda: nn.Linear(3, 2))


def _cfg(method: str, **kw):
    seed = kw.pop("seed", 0)
    base = dict(iterations=40, log_every=1)
    base.update(kw)
    return resolve_config("synthetic", method, "smoke", seed=seed, **base)


def _strip(history):
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in history]


@pytest.mark.parametrize("method", METHOD_NAMES)  # the paper's six: ctkd's tau lives in (1, 21) by design
def test_history_never_leaves_the_box(method):
    # an aggressive metaparameter learning rate pushes against the box at every step
    cfg = _cfg(method, meta_lr=500.0, meta_clip=1.0, e1=3, e2=7, hyperopt_evals=2)
    res = methods.get_method(method).run(cfg, _problem())
    lam = torch.tensor([[r["lambda1"], r["temperature"]] for r in res.history])
    assert len(res.history) == 40
    assert in_box(lam, atol=1e-6), lam


def test_gradient_moves_towards_the_box_edges_with_large_steps():
    cfg = _cfg("gradient", meta_lr=500.0, meta_clip=1.0)
    res = methods.get_method("gradient").run(cfg, _problem())
    lam = torch.tensor([[r["lambda1"], r["temperature"]] for r in res.history])
    # with huge steps the iterates must hit a face of the box (projection is active), not stay inside
    on_face = (lam[:, 0] == 0) | (lam[:, 0] == 1) | (lam[:, 1] == 0.1) | (torch.isclose(lam[:, 1], torch.tensor(10.0)))
    assert on_face.any()


@pytest.mark.parametrize("method", list(methods.METHODS))
def test_same_seed_same_history(method):
    cfg = _cfg(method, e1=3, e2=4, hyperopt_evals=2)
    a = methods.get_method(method).run(cfg, _problem()).history
    b = methods.get_method(method).run(cfg, _problem()).history
    assert _strip(a) == _strip(b)


def test_different_seeds_differ():
    a = methods.get_method("gradient").run(_cfg("gradient", seed=0), _problem()).history
    b = methods.get_method("gradient").run(_cfg("gradient", seed=1), _problem()).history
    assert a[0]["lambda1"] != b[0]["lambda1"]


def test_proposed_follows_algorithm1():
    e1, e2 = 4, 3
    cfg = _cfg("proposed", e1=e1, e2=e2, iterations=3 * (e1 + e2), meta_lr=5.0, meta_clip=1.0)
    hist = methods.get_method("proposed").run(cfg, _problem()).history
    phases = [r["phase"] for r in hist]
    expected = (["gradient"] * e1 + ["extrapolate"] * e2) * 3
    assert phases == expected
    lam = np.array([[r["lambda1"], r["temperature"]] for r in hist])
    for c in range(3):
        start = c * (e1 + e2)
        grad_part = lam[start:start + e1]
        for d in range(2):
            line = np.polyfit(np.arange(e1), grad_part[:, d], 1)
            pred = np.polyval(line, np.arange(e1, e1 + e2))
            lo, hi = (0.0, 1.0) if d == 0 else (0.1, 10.0)
            np.testing.assert_allclose(lam[start + e1:start + e1 + e2, d], np.clip(pred, lo, hi), atol=1e-5)
    # hypergradients are only evaluated in the gradient phase: e1 per cycle
    assert hist[-1]["hypergrad_evals"] == 3 * e1


def test_proposed_costs_about_half_of_gradient_in_hypergradients():
    g = methods.get_method("gradient").run(_cfg("gradient", iterations=40), _problem()).history
    p = methods.get_method("proposed").run(_cfg("proposed", iterations=40), _problem()).history
    assert g[-1]["hypergrad_evals"] == 40
    assert p[-1]["hypergrad_evals"] == 20


def test_fixed_methods_keep_their_values():
    nd = methods.get_method("no_distillation").run(_cfg("no_distillation"), _problem()).history
    nv = methods.get_method("naive").run(_cfg("naive"), _problem()).history
    assert {(r["lambda1"], r["temperature"]) for r in nd} == {(1.0, 1.0)}
    assert {(r["lambda1"], r["temperature"]) for r in nv} == {(0.5, 1.0)}
    rnd = methods.get_method("random").run(_cfg("random"), _problem()).history
    assert len({(r["lambda1"], r["temperature"]) for r in rnd}) == 1


def test_random_law_authors_is_the_authors_sequence_shared_with_the_tuned_starts():
    """The authors' random run i is fixed at their i-th draw of np.random.seed(42), the start of their tuned run i:
    run 0 of their logs is lambda1_a = 0.37454, T = 10 ** (2 * 0.95071 - 1) = 7.96945 (kdlib lambda1 = 1 - lambda1_a)."""
    state = np.random.RandomState(42)
    for seed in range(4):
        la, t = state.uniform(0, 1), 10.0 ** state.uniform(-1, 1)
        rnd = methods.get_method("random").initial(_cfg("random", seed=seed, random_law="authors"))
        tuned = methods.get_method("gradient").initial(_cfg("gradient", seed=seed, init_law="authors"))
        assert torch.equal(rnd, tuned)
        assert rnd.tolist() == pytest.approx([1.0 - la, t], rel=1e-6)
    assert methods.get_method("random").initial(_cfg("random", seed=0, random_law="authors"))[1].item() == \
        pytest.approx(7.969455, rel=1e-6)
    # the seed's own draw is another number
    own = methods.get_method("random").initial(_cfg("random", seed=0, random_law="loguniform"))
    assert abs(own[1].item() - 7.969455) > 1.0


def test_random_law_uniform_vs_loguniform():
    from kdlib.metaparams import sample_random_baseline

    uni = np.array([float(sample_random_baseline(np.random.default_rng(s), "uniform")[1]) for s in range(400)])
    log = np.array([float(sample_random_baseline(np.random.default_rng(s), "loguniform")[1]) for s in range(400)])
    # U(0.1, 10) has median ~5; 10^U(-1,1) has median 1
    assert 4.0 < np.median(uni) < 6.0
    assert 0.7 < np.median(log) < 1.4


def test_nan_hypergradient_is_skipped_and_counted(monkeypatch):
    real = tuner_mod.hypergradient
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        g = real(*args, **kwargs)
        if calls["n"] % 3 == 0:
            return torch.full_like(g, float("nan"))
        return g

    monkeypatch.setattr(tuner_mod, "hypergradient", flaky)
    hist = methods.get_method("gradient").run(_cfg("gradient", iterations=30), _problem()).history
    assert hist[-1]["nan_skipped"] == 10
    lam = np.array([[r["lambda1"], r["temperature"]] for r in hist])
    assert np.isfinite(lam).all()
    # a skipped step leaves the metaparameters where they were
    for step in (2, 5, 8):
        np.testing.assert_array_equal(lam[step], lam[step - 1])


def test_hyperopt_counts_full_trainings():
    res = methods.get_method("hyperopt").run(_cfg("hyperopt", hyperopt_evals=3), _problem())
    assert res.full_trainings == 3
    assert len(res.extra["trials"]) == 3


def test_hyperopt_final_run_is_the_best_trial_retrained_exactly():
    """The returned run (the best trial's own) equals training once more at the best point, as the authors did."""
    from kdlib.methods import fixed_tuner
    from kdlib.train import train_student

    cfg = _cfg("hyperopt", hyperopt_evals=3)
    problem = _problem()
    res = methods.get_method("hyperopt").run(cfg, problem)
    best = max(res.extra["trials"], key=lambda t: t["best_val_accuracy"])
    lam = torch.tensor([res.history[-1]["lambda1"], res.history[-1]["temperature"]], dtype=torch.float32)
    assert (float(lam[0]), float(lam[1])) == (best["lambda1"], best["temperature"])
    again = train_student(cfg, problem, fixed_tuner(lam)).history
    strip = lambda h: [{k: v for k, v in r.items() if k != "wall_time"} for r in h]  # noqa: E731
    assert strip(again) == strip(res.history)


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="nope"), "unknown method"),
    (dict(dataset="mnist"), "unknown dataset"),
    (dict(profile="huge"), "unknown profile"),
    (dict(e1=1), "e1"),
    (dict(init_lambda1=1.5), "outside"),
    (dict(init_temperature=0.01), "outside"),
    (dict(estimator="magic"), "unknown estimator"),
    (dict(bogus_field=3), "unknown config field"),
])
def test_bad_input_names_the_fix(kwargs, match):
    args = dict(dataset="synthetic", method="gradient", profile="smoke")
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(ValueError, match=match):
        resolve_config(args["dataset"], args["method"], args["profile"], 0, **kwargs)


def test_authors_initial_sequence():
    from kdlib.metaparams import authors_initial, initial_metaparams

    # the authors' runs 0 and 2 in their convention (lambda1_a weights the distillation term): (0.375, 7.97),
    # (0.156, 0.205); kdlib's lambda1 = 1 - lambda1_a
    run0, run2 = authors_initial(0), authors_initial(2)
    assert abs((1 - float(run0[0])) - 0.375) < 5e-4 and abs(float(run0[1]) - 7.97) < 5e-3
    assert abs((1 - float(run2[0])) - 0.156) < 5e-4 and abs(float(run2[1]) - 0.205) < 5e-4
    state = np.random.get_state()[1].copy()
    assert torch.equal(initial_metaparams("authors", 2), run2)
    assert (np.random.get_state()[1] == state).all()  # the global numpy stream is not touched
    cfg = _cfg("gradient", init_law="authors", seed=2, iterations=2)
    assert torch.equal(methods.get_method("gradient").initial(cfg), run2)
    with pytest.raises(ValueError, match="init_law"):
        initial_metaparams("sobol", 0)


def test_run_returns_the_trained_model():
    res = methods.get_method("naive").run(_cfg("naive"), _problem())
    model = res.model
    p = _problem()
    with torch.no_grad():
        acc = int((model(p.test.x).argmax(1) == p.test.y).sum()) / len(p.test)
    assert acc == res.history[-1]["test_accuracy"]


def test_optimizer_spec_reaches_the_student():
    from kdlib.train import Settings, make_optimizer

    sgd = methods.get_method("naive").run(_cfg("naive"), _problem()).history
    adam = methods.get_method("naive").run(_cfg("naive", optimizer="adam", lr=0.05), _problem()).history
    assert _strip(sgd) != _strip(adam)
    opt = make_optimizer(nn.Linear(2, 2).parameters(), Settings(optimizer="sgd", momentum=0.9, nesterov=True,
                                                                 weight_decay=1e-4, lr=0.3))
    assert type(opt) is torch.optim.SGD and opt.defaults["nesterov"] and opt.defaults["weight_decay"] == 1e-4
    opt = make_optimizer(nn.Linear(2, 2).parameters(), Settings(optimizer="adamw", betas=(0.8, 0.9)))
    assert type(opt) is torch.optim.AdamW and opt.defaults["betas"] == (0.8, 0.9)
    with pytest.raises(ValueError, match="momentum/nesterov are SGD settings"):
        Settings(optimizer="adam", momentum=0.9, iterations=1).validate()


def test_a_users_problem_needs_no_dataset_name():
    from kdlib.train import Settings

    st = Settings(iterations=12, batch_size=4, lr=0.5, e1=3, e2=3, log_every=4)
    assert st.shuffle and st.lr_step_epochs is None  # user defaults, no paper preset
    res = methods.get_method("proposed").run(st, _problem())
    assert [r["step"] for r in res.history] == [0, 4, 8, 11]
    assert res.history[-1]["hypergrad_evals"] == 6 and res.model is not None
    with pytest.raises(ValueError, match="exactly one of iterations"):
        methods.get_method("naive").run(Settings(), _problem())


def test_generic_loop_equals_the_tuner_in_a_hand_written_loop():
    # train_student is the README loop: the same Tuner calls by hand give the same student
    import kdlib
    from kdlib.train import Settings

    st = Settings(iterations=15, lr=0.5, e1=3, e2=2, estimator="finite_difference", meta_lr=1.0, meta_clip=0.05,
                  shuffle=False, seed=3)
    res = methods.get_method("proposed").run(st, _problem())
    p = _problem()
    torch.manual_seed(3)
    model = p.make_student()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tuner = kdlib.Tuner(opt, init=methods.get_method("proposed").initial(st), schedule="proposed", e1=3, e2=2,
                        estimator="finite_difference", meta_lr=1.0, meta_clip=0.05, seed=3)
    for _ in range(15):
        tuner.step(model, (p.train.x, p.train.y, p.train.teacher), (p.val.x, p.val.y))
        loss = tuner.loss(model(p.train.x), p.train.teacher, p.train.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for a, b in zip(model.state_dict().values(), res.model.state_dict().values()):
        assert torch.equal(a, b)
    assert float(tuner.metaparams[0]) == res.history[-1]["lambda1"]


def test_fixed_tuner_uses_the_runs_loss_options():
    # kdlib.experiments.runner.fixed_grid trains through methods.FixedController(lam): the run's loss options must apply
    from kdlib.train import train_student

    lam = torch.tensor([0.5, 3.0])
    a = train_student(_cfg("naive"), _problem(), methods.FixedController(lam))
    b = train_student(_cfg("naive", t2_scaling=True), _problem(), methods.FixedController(lam))
    assert a.tuner.form == b.tuner.form == "ce" and b.tuner.t2_scaling and not a.tuner.t2_scaling
    assert [r["val_loss"] for r in a.history] != [r["val_loss"] for r in b.history]
