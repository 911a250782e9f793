"""The runner: tidy results on disk, atomic per-run records, resume without redoing finished seeds, CLI errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import torch
import pytest

import kdlib.experiments.runner as runner
from kdlib.experiments import store
from kdlib.experiments.profiles import resolve_config


# one cache for this module: the synthetic teacher (20,000 SGD steps) is trained once, then loaded
pytestmark = pytest.mark.usefixtures("shared_module_cache")


def test_results_csv_schema_and_values(tmp_path):
    out = tmp_path / "res"
    df = runner.run_experiments("synthetic", ["no_distillation", "gradient"], 2, "smoke", out, progress=False)
    on_disk = pd.read_csv(out / "results.csv")
    assert set(runner.RESULT_COLUMNS) <= set(on_disk.columns)
    assert len(on_disk) == len(df) > 0
    assert set(on_disk["method"]) == {"no_distillation", "gradient"}
    assert set(on_disk["seed"]) == {0, 1}
    # each run's record holds the same history as the CSV rows
    rec = json.loads(store.record_path(out, resolve_config("synthetic", "gradient", "smoke", 1)).read_text())
    rows = on_disk[(on_disk.method == "gradient") & (on_disk.seed == 1)].sort_values("step")
    assert list(rows["test_accuracy"]) == [h["test_accuracy"] for h in rec["history"]]
    assert rec["summary"]["final_accuracy"] == rec["history"][-1]["test_accuracy"]
    assert rec["summary"]["hypergrad_evals"] == rec["config"]["iterations"]
    configs = json.loads((out / "config.json").read_text())
    assert len(configs) == 4


def test_resume_skips_finished_runs(tmp_path, monkeypatch):
    out = tmp_path / "res"
    calls: list[str] = []
    real = runner.run_one

    def interrupted(cfg, progress=False, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the sweep is killed during its third run
        calls.append(cfg.key())
        return real(cfg, progress, **kw)

    monkeypatch.setattr(runner, "run_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiments("synthetic", ["naive", "random"], 2, "smoke", out, progress=False, batched=False)
    assert len(list((out / "runs").glob("*.json"))) == 2
    assert not list((out / "runs").glob(".*tmp"))  # no half-written record

    resumed: list[str] = []

    def counting(cfg, progress=False, **kw):
        resumed.append(cfg.key())
        return real(cfg, progress, **kw)

    monkeypatch.setattr(runner, "run_one", counting)
    df = runner.run_experiments("synthetic", ["naive", "random"], 2, "smoke", out, progress=False, batched=False)
    assert sorted(resumed) == sorted({"synthetic__naive__seed0", "synthetic__naive__seed1",
                                      "synthetic__random__seed0", "synthetic__random__seed1"} - set(calls))
    assert len(df.groupby(["method", "seed"])) == 4
    # a third call has nothing left to do
    resumed.clear()
    runner.run_experiments("synthetic", ["naive", "random"], 2, "smoke", out, progress=False)  # batched too
    assert resumed == []


def test_changed_config_is_recomputed(tmp_path, monkeypatch):
    out = tmp_path / "res"
    runner.run_experiments("synthetic", ["gradient"], 1, "smoke", out, progress=False)
    seen: list[str] = []
    real = runner.run_one
    monkeypatch.setattr(runner, "run_one", lambda cfg, progress=False, **kw: (seen.append(cfg.key()), real(cfg, **kw))[1])
    runner.run_experiments("synthetic", ["gradient"], 1, "smoke", out, progress=False, overrides={"meta_lr": 0.5},
                           batched=False)
    assert seen == ["synthetic__gradient__seed0"]


def test_cli_unknown_method_exits_with_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kdlib", "run", "--dataset", "synthetic", "--methods", "bogus",
                           "--seeds", "1", "--profile", "smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown method 'bogus'" in proc.stderr and "gradient" in proc.stderr


def test_cli_runs_and_prints_json(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kdlib", "run", "--dataset", "synthetic", "--methods",
                           "no_distillation,naive", "--seeds", "1", "--profile", "smoke", "--out", str(tmp_path),
                           "--no-progress", "--set", "iterations=20"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert set(summary) == {"no_distillation", "naive"}
    assert (tmp_path / "results.csv").exists()


def test_linear_backend_is_used_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "res"
    groups: list[list[str]] = []
    real = runner.run_group

    def spy(configs, backend, *a, **k):
        if backend == "linear":
            groups.append([c.key() for c in configs])
        return real(configs, backend, *a, **k)

    monkeypatch.setattr(runner, "run_group", spy)
    runner.run_experiments("synthetic", ["gradient", "naive"], 3, "smoke", out, progress=False)
    assert sorted(map(len, groups)) == [3, 3]  # one batch of three seeds per method
    store.record_path(out, resolve_config("synthetic", "gradient", "smoke", 1)).unlink()
    groups.clear()
    df = runner.run_experiments("synthetic", ["gradient", "naive"], 3, "smoke", out, progress=False)
    assert groups == [["synthetic__gradient__seed1"]]
    assert len(df.groupby(["method", "seed"])) == 6


def test_fixed_grid_matches_single_runs(tmp_path):
    from kdlib.methods import FixedController
    from kdlib.train import train_student

    cfg = resolve_config("synthetic", "gradient", "smoke", 0, variant="authors")
    grid = runner.fixed_grid(cfg, [0.0, 1.0], [0.5, 5.0])
    assert len(grid) == 4
    # lambda1 = 1 is pure label training: T has no effect
    pure = grid[grid.lambda1 == 1.0]
    assert pure.val_loss.nunique() == 1 and pure.test_accuracy.nunique() == 1
    bundle = runner.load_bundle(cfg)
    problem = runner.build_problem(cfg, bundle, runner.load_teacher(cfg, bundle))
    out = train_student(cfg, problem, FixedController(torch.tensor([0.0, 5.0])))
    row = grid[(grid.lambda1 == 0.0) & (grid.temperature == 5.0)].iloc[0]
    assert row.test_accuracy == out.history[-1]["test_accuracy"]


def test_cli_export_round_trip(tmp_path):
    import numpy as np

    from conftest import make_fmnist_root
    from kdlib.data import read_npz

    (xtr, ytr), (xte, yte) = make_fmnist_root(tmp_path / "root", n_train=12, n_test=5)
    proc = subprocess.run([sys.executable, "-m", "kdlib", "export", "--dataset", "fashion_mnist", "--root",
                           str(tmp_path / "root"), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    images, labels = read_npz(tmp_path / "out" / "fashion_mnist" / "train.npz")
    np.testing.assert_array_equal(images, xtr)
    np.testing.assert_array_equal(labels, ytr)


def test_the_data_memo_follows_kdlib_data(tmp_path, monkeypatch):
    """The in-process memo of datasets keys on the resolved data root: a process that points $KDLIB_DATA at
    another folder (a notebook, a test) gets that folder's images, not the ones it loaded before."""
    from conftest import make_fmnist_root

    roots = {}
    for n, name in ((30, "a"), (40, "b")):
        roots[name] = tmp_path / name
        make_fmnist_root(roots[name], n_train=n, n_test=10, seed=n)
    cfg = resolve_config("fashion_mnist", "no_distillation", "smoke", 0)
    sizes = []
    for name in ("a", "b", "a"):
        monkeypatch.setenv("KDLIB_DATA", str(roots[name]))
        sizes.append(len(runner.load_bundle(cfg).train_full))
    assert sizes == [30, 40, 30]


def test_cli_seed_list_runs_only_those_seeds_under_the_column_keys(tmp_path):
    """`--seed-list 1` stores seed 1 alone, under the key the whole column's command (`--seeds 2`) gives it; with
    --seeds as well, or a list that is not integers, it stops before any compute with the fix."""
    base = [sys.executable, "-m", "kdlib", "run", "--dataset", "synthetic", "--methods", "no_distillation",
            "--profile", "smoke", "--no-progress", "--set", "iterations=20"]
    proc = subprocess.run([*base, "--seed-list", "1", "--out", str(tmp_path / "one")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    names = [p.name for p in (tmp_path / "one" / "runs").glob("*.json")]
    assert names == [store.record_path(tmp_path, resolve_config("synthetic", "no_distillation", "smoke", 1,
                                                                iterations=20)).name]
    both = subprocess.run([*base, "--seeds", "2", "--seed-list", "1", "--out", str(tmp_path / "both")],
                          capture_output=True, text=True)
    assert both.returncode == 2 and "give one" in both.stderr and not (tmp_path / "both" / "runs").exists()
    bad = subprocess.run([*base, "--seed-list", "1,x", "--out", str(tmp_path / "bad")], capture_output=True, text=True)
    assert bad.returncode == 2 and "comma-separated integers" in bad.stderr
