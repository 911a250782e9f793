"""kdlib.analysis: one final accuracy (diverged runs counted apart), Table 2, the cost table, and the archive of
paper-protocol runs read against the authors' logs, on tiny records and logs built here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdlib import analysis
from kdlib.analysis import archive as A
from kdlib.experiments import protocol as P


# ------------------------------------------------------------------------------------------ final accuracy

def _frame(rows):
    return pd.DataFrame(rows, columns=["dataset", "method", "seed", "step", "test_accuracy", "phase"])


def test_final_accuracy_is_the_last_step_and_a_nan_last_step_is_diverged():
    df = _frame([
        ("synthetic", "gradient", 0, 0, 0.5, "gradient"), ("synthetic", "gradient", 0, 10, 0.7, "gradient"),
        # seed 1 diverged at its last logged step: its earlier 0.9 must not stand in for it
        ("synthetic", "gradient", 1, 0, 0.9, "gradient"), ("synthetic", "gradient", 1, 10, np.nan, "gradient"),
        # hyperopt: the search trials (no test accuracy, or a better one) are not the reported run
        ("synthetic", "hyperopt", 0, 0, 0.99, "search0"), ("synthetic", "hyperopt", 0, 10, np.nan, "search0"),
        ("synthetic", "hyperopt", 0, 0, 0.4, "fixed"), ("synthetic", "hyperopt", 0, 10, 0.6, "fixed"),
    ]).sample(frac=1.0, random_state=0)  # order of rows must not matter
    fin = analysis.final_accuracy(df).set_index(["method", "seed"])
    assert fin.loc[("gradient", 0), "test_accuracy"] == 0.7 and not fin.loc[("gradient", 0), "diverged"]
    assert np.isnan(fin.loc[("gradient", 1), "test_accuracy"]) and fin.loc[("gradient", 1), "diverged"]
    assert fin.loc[("hyperopt", 0), "test_accuracy"] == 0.6


def test_final_rows_by_other_keys_keep_all_columns():
    df = pd.DataFrame(dict(loss_form=["ce", "ce", "kl", "kl"], seed=[0, 0, 0, 0], step=[0, 5, 0, 5],
                           test_accuracy=[0.1, 0.2, 0.3, 0.4], lambda1=[0.5, 0.6, 0.7, 0.8]))
    f = analysis.final_rows(df, by=("loss_form", "seed")).set_index("loss_form")
    assert f.loc["ce", "lambda1"] == 0.6 and f.loc["kl", "test_accuracy"] == 0.4
    with pytest.raises(ValueError, match="lacks column"):
        analysis.final_rows(df.drop(columns="step"), by=("loss_form", "seed"))


def test_record_final_uses_status_and_null():
    ok = dict(config=dict(dataset="cifar10", method="gradient", seed=3), summary=dict(status="ok", final_accuracy=0.5))
    div = dict(config=dict(dataset="cifar10", method="gradient", seed=4),
               summary=dict(status="diverged", final_accuracy=None))
    # an old record without status whose final accuracy is NaN is diverged too
    old = dict(config=dict(dataset="cifar10", method="gradient", seed=5), summary=dict(final_accuracy=float("nan")))
    f = analysis.records_final([ok, div, old])
    assert f.diverged.tolist() == [False, True, True]
    assert f.test_accuracy.iloc[0] == 0.5 and f.test_accuracy.iloc[1:].isna().all()


def test_summarize_excludes_and_counts_diverged():
    s = analysis.summarize([0.4, None, 0.6, float("nan")])
    assert s == dict(mean=pytest.approx(0.5), max=0.6, std=pytest.approx(0.1), n=2, diverged=2)
    assert analysis.summarize([None])["n"] == 0 and np.isnan(analysis.summarize([None])["mean"])


def test_table2_counts_diverged_in_its_own_column():
    rows = []
    for seed, acc in enumerate([0.5, 0.7, np.nan]):
        for step, a in ((0, 0.3), (10, acc)):
            rows.append(("cifar10_reduced", "gradient", seed, step, a, "gradient"))
    df = _frame(rows)
    num = analysis.table2_numeric(df, datasets=["cifar10_reduced"]).set_index("method")
    g = num.loc["gradient"]
    assert g["mean"] == pytest.approx(0.6) and g["max"] == pytest.approx(0.7) and g["n"] == 2 and g["diverged"] == 1
    t = analysis.table2(df, datasets=["cifar10_reduced"])
    assert t.loc["gradient", "cifar10_reduced"] == "0.6000 (0.7000) ± 0.1000"
    assert t.loc["gradient", "diverged"] == 1 and t.loc["naive", "cifar10_reduced"] == "—"
    # no diverged run: no extra column (the layout of Table 2 is unchanged)
    assert "diverged" not in analysis.table2(df[df.seed < 2], datasets=["cifar10_reduced"]).columns


def test_cost_table_display_has_labels_units_and_no_nan():
    costs = pd.DataFrame(dict(dataset=["synthetic"] * 2, method=["gradient", "proposed"], seeds=[3, 3],
                              hypergrad_evals=[100.0, 52.0], full_trainings=[1.0, 1.0], wall_time_s=[10.0, 10.5],
                              saving_vs_gradient_evals=[np.nan, 0.48], saving_vs_gradient_time=[np.nan, -0.05]))
    d = analysis.cost_table_display(costs)
    assert d["Method"].tolist() == ["Gradient-based", "Proposed"] and d["Dataset"].iloc[0] == "Synthetic"
    assert d.loc[1, "vs gradient-based: hypergradients"] == "48% fewer"
    assert d.loc[1, "vs gradient-based: wall time"] == "5% more"
    assert d.loc[0, "vs gradient-based: wall time"] == ""
    assert not d.isna().any().any() and "nan" not in d.to_string().lower()


def test_cost_table_median_wall_time_ignores_a_slowed_run():
    """On a shared machine one slowed run moves the mean wall time, not the median; the counts are means either
    way, and the proposed method's saving follows the statistic asked for."""
    rows = [("gradient", 0, 100, 300.0), ("gradient", 1, 100, 330.0), ("gradient", 2, 100, 3000.0),
            ("proposed", 0, 50, 200.0), ("proposed", 1, 50, 210.0), ("proposed", 2, 50, 220.0)]
    s = pd.DataFrame([dict(dataset="cifar10", method=m, seed=k, hypergrad_evals=h, full_trainings=1, wall_time=w,
                           final_accuracy=0.7, diverged=False) for m, k, h, w in rows])
    med = analysis.cost_table(None, summaries=s, wall_time="median").set_index("method")
    mean = analysis.cost_table(None, summaries=s).set_index("method")
    assert med.loc["gradient", "wall_time_s"] == 330.0 and mean.loc["gradient", "wall_time_s"] == 1210.0
    assert med.loc["proposed", "saving_vs_gradient_time"] == pytest.approx(1 - 210 / 330)
    assert med.loc["proposed", "saving_vs_gradient_evals"] == mean.loc["proposed", "saving_vs_gradient_evals"] == 0.5
    with pytest.raises(ValueError, match="wall_time"):
        analysis.cost_table(None, summaries=s, wall_time="max")


def test_display_path_never_absolute(tmp_path):
    p = tmp_path / "data" / "cifar10" / "train.npz"
    assert analysis.display_path(p, {"[data root]": tmp_path / "data"}) == "[data root]/cifar10/train.npz"
    assert analysis.display_path(analysis.REPO_ROOT / "archive" / "x.json") == "archive/x.json"
    assert analysis.display_path("/somewhere/else/file.npy") == "file.npy"


# ------------------------------------------------------------------------------------------ archive

def _authors_log(path: Path, runs):
    """runs: list of (T0, lambda1_authors_0, T_final, lambda1_authors_final, final_accuracy)."""
    with open(path, "w") as fh:
        for t0, l0, tf, lf, acc in runs:
            res = [dict(epoch=0, accuracy=0.3, lambda1=l0, temp=t0), dict(epoch=49, accuracy=acc, lambda1=lf, temp=tf)]
            fh.write(json.dumps({"results": res, "version": "33"}) + "\n")


def _record(method, seed, lam_authors, temps, accs, status="ok", dataset="cifar10_reduced"):
    history = [dict(step=e, epoch=e, test_accuracy=a, lambda1=1.0 - la, temperature=t, phase="gradient")
               for e, (la, t, a) in enumerate(zip(lam_authors, temps, accs))]
    final = accs[-1] if status == "ok" else None
    return dict(config=dict(dataset=dataset, method=method, seed=seed, **P.authors_protocol(method, dataset)),
                history=history, summary=dict(status=status, final_accuracy=final, wall_time=100.0),
                provenance=dict(kdlib_version="0.1.0", commit="abc1234", torch="2.x", threads=1, machine="test",
                                created="2026-01-01T00:00:00"))


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    logs.mkdir()
    # authors: run 0 high T -> distillation; run 1 low T -> pure CE; run 2 ends between
    _authors_log(logs / "exp33_opt.jsonl", [(8.06, 0.57, 10.0, 1.0, 0.607), (0.36, 0.0, 0.43, 0.0, 0.535),
                                            (1.3, 0.4, 1.5, 0.5, 0.55)])
    _authors_log(logs / "exp33_splines.jsonl", [(8.0, 0.6, 9.0, 1.087, 0.60)])
    root = tmp_path / "archive"
    recs = {"authors": [_record("gradient", 0, [0.56, 1.0], [8.07, 10.0], [0.38, 0.595]),
                        _record("gradient", 1, [0.0, 0.0], [0.37, 0.43], [0.30, 0.532]),
                        _record("gradient", 2, [0.3, 0.95], [1.2, 3.0], [0.3, np.nan], status="diverged"),
                        _record("no_distillation", 0, [0.0, 0.0], [1.0, 1.0], [0.3, 0.55])],
            "defaults": [_record("gradient", 0, [0.2, 0.3], [0.5, 0.5], [0.3, 0.53])]}
    for protocol, rs in recs.items():
        d = root / "cifar10_reduced" / protocol / "runs"
        d.mkdir(parents=True)
        for r in rs:
            c = r["config"]
            (d / f"cifar10_reduced__{c['method']}__seed{c['seed']}.json").write_text(
                json.dumps(r).replace("NaN", "null"))
    monkeypatch.setenv("KDLIB_ARCHIVE", str(root))
    return logs, root


def test_branch_rule():
    assert A.branch_of(1.0) == "distillation" and A.branch_of(A.DISTILLATION_MIN) == "distillation"
    assert A.branch_of(0.0) == "pure CE" and A.branch_of(1.087) == "distillation"
    assert A.branch_of(0.5) == "between" and A.branch_of(float("nan")) == "diverged"


def test_empty_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_ARCHIVE", str(tmp_path / "nothing"))
    arch = A.load_archive("cifar10_reduced")
    assert A.archive_is_empty(arch) and A.archive_table2(arch) == {}
    assert len(A.run_table(arch)) == 0


def test_archive_run_by_run_against_the_authors(tiny):
    logs, _ = tiny
    arch = A.load_archive("cifar10_reduced")
    assert [len(arch[p]) for p in P.PROTOCOLS] == [4, 1]
    theirs = A.authors_run_table(logs)
    g = theirs[theirs.method == "gradient"].set_index("run")
    assert g.branch.tolist() == ["distillation", "pure CE", "between"]
    assert g.loc[0, "temperature_0"] == 8.06 and g.loc[0, "lambda1_authors_0"] == pytest.approx(0.57)
    assert theirs[theirs.method == "proposed"].branch.tolist() == ["distillation"]  # unclamped 1.087
    seq = A.authors_initial_sequence(logs)
    assert seq.temperature_0.tolist() == [8.06, 0.36, 1.3]

    ours = A.run_table(arch)
    assert set(ours.method) == {"gradient"}  # the baselines have no trajectory to compare
    a = ours[ours.source == "kdlib, authors' protocol"].set_index("run")
    assert a.loc[0, "lambda1_authors_final"] == pytest.approx(1.0) and a.loc[0, "branch"] == "distillation"
    assert a.loc[2, "diverged"] and a.loc[2, "branch"] == "diverged" and np.isnan(a.loc[2, "final_accuracy"])

    comp = A.branch_comparison(ours, theirs)
    auth = comp[comp.source == "kdlib, authors' protocol"].set_index("run")
    assert auth.same_branch.tolist() == [True, True, False]
    d = comp[comp.source == "kdlib, kdlib defaults"].set_index("run")
    assert d.loc[0, "branch (ours)"] == "between" and not d.loc[0, "same_branch"]
    agg = A.agreement(comp).set_index("source")
    assert agg.loc["kdlib, authors' protocol", "same branch"] == 2 and agg.loc["kdlib, authors' protocol", "runs"] == 3
    assert agg.loc["kdlib, authors' protocol", "mean final accuracy (ours)"] == pytest.approx((0.595 + 0.532) / 2)


def test_archive_table2_column_excludes_diverged(tiny):
    arch = A.load_archive("cifar10_reduced")
    t = A.archive_table2(arch)
    col = t["authors"]
    m, s = np.mean([0.595, 0.532]), np.std([0.595, 0.532])
    assert col.loc["gradient", "cifar10_reduced"] == f"{m:.4f} ({0.595:.4f}) ± {s:.4f}"
    assert col.loc["gradient", "diverged"] == 1 and col.loc["naive", "cifar10_reduced"] == "—"
    assert "diverged" not in t["defaults"].columns
    prov = A.provenance_table(arch).set_index("protocol")
    assert prov.loc["authors' protocol", "records"] == 4 and prov.loc["authors' protocol", "commit"] == "abc1234"
    assert prov.loc["authors' protocol", "CPU kernels"] == "native, not recorded"
    curves = A.archive_curves(arch)
    assert len(curves) == 10 and set(curves.protocol) == {"authors", "defaults"}


def test_archive_rejects_bad_records_naming_the_file(tiny):
    _, root = tiny
    bad = root / "cifar10_reduced" / "authors" / "runs" / "broken.json"
    bad.write_text(json.dumps({"config": {"dataset": "cifar10_reduced", "method": "gradient", "seed": 9},
                               "history": [{"epoch": 0}], "summary": {}, "provenance": {}}))
    with pytest.raises(ValueError, match=r"broken.json: history\[0\] lacks"):
        A.load_archive("cifar10_reduced")
    bad.write_text(json.dumps({"config": {"dataset": "cifar10_reduced", "method": "gradient", "seed": 9},
                               "history": [{"epoch": 0, "test_accuracy": 0.1, "lambda1": 0.5, "temperature": 1}],
                               "summary": {"status": "weird"}, "provenance": {}}))
    with pytest.raises(ValueError, match="summary.status"):
        A.load_archive("cifar10_reduced")
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        A.load_archive("cifar10_reduced")
    with pytest.raises(ValueError, match="protocol"):
        P.archive_dir("cifar10_reduced", "mine")


def test_archive_random_baseline_takes_the_authors_draws(tmp_path):
    """Under the authors' protocol the random baseline's law is the authors' sequence ("authors"); random_law
    does not act on the other methods, whose records keep "loguniform" (the archived reduced CIFAR-10 column)."""
    runs = tmp_path / "cifar10_reduced" / "authors" / "runs"
    runs.mkdir(parents=True)
    grad = _record("gradient", 0, [0.5, 1.0], [8.0, 10.0], [0.3, 0.6])
    assert grad["config"]["random_law"] == "loguniform"
    rnd = _record("random", 0, [0.37, 0.37], [7.97, 7.97], [0.3, 0.5])
    assert rnd["config"]["random_law"] == "authors"
    (runs / "cifar10_reduced__gradient__seed0__aaaa.json").write_text(json.dumps(grad))
    (runs / "cifar10_reduced__random__seed0__aaaa.json").write_text(json.dumps(rnd))
    assert len(A.load_archive(root=tmp_path)["authors"]) == 2
    rnd["config"]["random_law"] = "loguniform"  # each run's own draw: not the authors' baseline
    (runs / "cifar10_reduced__random__seed0__aaaa.json").write_text(json.dumps(rnd))
    with pytest.raises(ValueError, match="not the authors' protocol.*random_law"):
        A.load_archive(root=tmp_path)


def test_pending_column_is_read_only_when_asked_and_only_while_nothing_is_archived(tmp_path):
    """A column being computed (archive/pending/<dataset>/<protocol>/runs) is read with pending=True, under the
    same checks, until the protocol folder holds records; the default readers never look there."""
    pend = P.pending_dir("cifar10", "authors", tmp_path)
    pend.mkdir(parents=True)
    rec = _record("gradient", 0, [0.66, 1.0], [8.2, 10.0], [0.4, 0.716], dataset="cifar10")
    (pend / "cifar10__gradient__seed0__aaaa.json").write_text(json.dumps(rec))
    assert A.column_states("cifar10", tmp_path) == {"authors": "in progress", "defaults": "empty"}
    assert A.archive_is_empty(A.load_archive("cifar10", root=tmp_path))
    got = A.load_archive("cifar10", root=tmp_path, pending=True)
    assert len(got["authors"]) == 1 and got["defaults"] == []
    bad = json.loads(json.dumps(rec))
    bad["config"]["fd_virtual_lr"] = "current"
    (pend / "cifar10__gradient__seed1__bbbb.json").write_text(json.dumps(dict(bad, config=dict(bad["config"], seed=1))))
    with pytest.raises(ValueError, match="pending/cifar10/authors/runs/.*not the authors' protocol"):
        A.load_archive("cifar10", root=tmp_path, pending=True)
    del bad["config"]["augment"]  # a full CIFAR-10 tuned run without the authors' augmentation is another protocol
    bad["config"]["fd_virtual_lr"] = "initial"
    (pend / "cifar10__gradient__seed1__bbbb.json").write_text(json.dumps(dict(bad, config=dict(bad["config"], seed=1))))
    with pytest.raises(ValueError, match="not the authors' protocol: {'augment': None}"):
        A.load_archive("cifar10", root=tmp_path, pending=True)
    (pend / "cifar10__gradient__seed1__bbbb.json").unlink()
    done = P.archive_dir("cifar10", "authors", tmp_path)
    done.mkdir(parents=True)
    (done / "cifar10__gradient__seed0__cccc.json").write_text(json.dumps(dict(rec, summary=dict(rec["summary"],
                                                                                             final_accuracy=0.7))))
    assert A.column_states("cifar10", tmp_path)["authors"] == "archived"
    assert A.load_archive("cifar10", root=tmp_path, pending=True)["authors"][0]["summary"]["final_accuracy"] == 0.7


def test_against_authors_and_the_per_dataset_protocol(tmp_path, tiny):
    logs, _ = tiny
    # the authors' table for the fabricated logs: gradient 0.607, 0.535, 0.55 -> mean 0.564
    _authors_log(logs / "exp33_nodistil.jsonl", [(1.0, 0.0, 1.0, 0.0, 0.53), (1.0, 0.0, 1.0, 0.0, 0.55)])
    arch = {"authors": [_record("gradient", s, [0.5, 1.0], [8.0, 10.0], [0.3, a]) for s, a in enumerate((0.57, 0.58))]
            + [_record("no_distillation", 0, [0.0, 0.0], [1.0, 1.0], [0.3, 0.50])]}
    t = A.against_authors(arch, logs, "cifar10_reduced").set_index("method")
    assert t.loc["gradient", "runs"] == 2 and t.loc["gradient", "ours"] == pytest.approx(0.575)
    assert t.loc["gradient", "authors"] == pytest.approx((0.607 + 0.535 + 0.55) / 3)
    assert t.loc["gradient", "within"]  # 0.575 - 0.564 = 0.011 <= 0.015
    assert t.loc["no_distillation", "difference"] == pytest.approx(0.50 - 0.54) and not t.loc["no_distillation", "within"]
    assert A.MEAN_TOLERANCE["fashion_mnist"] == 0.01 and A.MEAN_TOLERANCE["cifar10"] == 0.015
    # Fashion-MNIST hyperopt trials run 40 epochs, as the authors' only log of it; nothing else departs
    assert P.authors_protocol("hyperopt", "fashion_mnist")["epochs"] == 40
    assert "epochs" not in P.authors_protocol("hyperopt", "cifar10") and "epochs" not in P.authors_protocol("gradient", "fashion_mnist")
    # full CIFAR-10's tuned methods train on augmented batches (the authors' use_aug=True); nothing else does
    for m in ("gradient", "proposed", "hyperopt"):
        assert P.authors_protocol(m, "cifar10")["augment"] == "flip_crop"
        assert "augment" not in P.authors_protocol(m, "cifar10_reduced") and "augment" not in P.authors_protocol(m, "fashion_mnist")
    for m in ("no_distillation", "naive", "random"):
        assert "augment" not in P.authors_protocol(m, "cifar10")


def test_archive_refuses_two_configs_of_one_cell_and_a_mislabelled_protocol(tmp_path):
    runs = tmp_path / "cifar10_reduced" / "authors" / "runs"
    runs.mkdir(parents=True)
    rec = _record("gradient", 0, [0.5, 1.0], [8.0, 10.0], [0.3, 0.6])
    (runs / "cifar10_reduced__gradient__seed0__aaaa.json").write_text(json.dumps(rec))
    assert len(A.load_archive(root=tmp_path)["authors"]) == 1
    (runs / "cifar10_reduced__gradient__seed0__bbbb.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="same cell"):
        A.load_archive(root=tmp_path)
    (runs / "cifar10_reduced__gradient__seed0__bbbb.json").unlink()
    rec["config"]["fd_virtual_lr"] = "current"
    (runs / "cifar10_reduced__gradient__seed0__aaaa.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="not the authors' protocol.*fd_virtual_lr"):
        A.load_archive(root=tmp_path)
    rec["config"]["fd_virtual_lr"] = "initial"
    (runs / "cifar10_reduced__gradient__seed0__aaaa.json").write_text(json.dumps(rec))
    pinned = json.loads(json.dumps(rec))
    pinned["config"]["seed"] = 1
    pinned["provenance"]["cpu_kernels"] = "avx2"
    (runs / "cifar10_reduced__gradient__seed1__cccc.json").write_text(json.dumps(pinned))
    with pytest.raises(ValueError, match="'avx2'.*'native'.*must not mix kernel pins"):
        A.load_archive(root=tmp_path)
    rec["provenance"]["cpu_kernels"] = "avx2"  # one pin throughout: read
    (runs / "cifar10_reduced__gradient__seed0__aaaa.json").write_text(json.dumps(rec))
    assert len(A.load_archive(root=tmp_path)["authors"]) == 2
    assert A.provenance_table(A.load_archive(root=tmp_path))["CPU kernels"].tolist() == ["AVX2 pin"]


def test_benchmark_targets_table_says_which_goals_are_met():
    from kdlib.analysis.benchmarks import target_met, targets_table

    bench = {"targets": {"a_ratio": {"target": "<= 3.0", "measured": 3.3},
                         "b_speedup": {"target": ">= 50", "measured": 133.9},
                         "c_missing": {"target": "<= 1.0", "measured": None}}}
    t = targets_table(bench).set_index("target")
    assert list(t["met"]) == ["no", "yes", "-"] and t.loc["a ratio", "goal"] == "<= 3.0"
    assert target_met("<= 3.0", 3.0) is True and target_met("about 3", 1.0) is None
    # every target the benchmark reports has a reader's label
    from benchmarks.run import TARGETS
    from kdlib.analysis.benchmarks import TARGET_LABELS

    assert set(TARGETS) <= set(TARGET_LABELS)
    named = targets_table({"targets": {"proposed_over_gradient": {"target": "<= 0.6", "measured": 0.7}}})
    assert named.target.tolist() == ["proposed / gradient-based, whole run"]


def _final(pairs, dataset="fashion_mnist"):
    rows = []
    for seed, (g, n) in enumerate(pairs):
        rows += [dict(dataset=dataset, method="gradient", seed=seed, test_accuracy=g, diverged=not np.isfinite(g)),
                 dict(dataset=dataset, method="no_distillation", seed=seed, test_accuracy=n,
                      diverged=not np.isfinite(n))]
    return pd.DataFrame(rows)


def test_paired_difference_separates_a_consistent_gap_and_not_a_noisy_one():
    from kdlib.analysis.separation import paired_difference, separation_text, t975

    steady = paired_difference(_final([(0.60, 0.55), (0.52, 0.47), (0.58, 0.52), (0.49, 0.45)]), "fashion_mnist",
                               "gradient", "no_distillation")
    # paired by seed: the per-seed gaps 0.05, 0.05, 0.06, 0.04 are steady although the runs scatter by 0.1
    assert steady["n"] == 4 and steady["mean"] == pytest.approx(0.05) and steady["separated"]
    assert steady["half_width"] == pytest.approx(t975(3) * steady["std"] / 2)
    assert "above" in separation_text(steady, "Gradient-based", "No distillation")
    noisy = paired_difference(_final([(0.60, 0.50), (0.45, 0.55), (0.58, 0.52), (0.49, 0.53)]), "fashion_mnist",
                              "gradient", "no_distillation")
    assert not noisy["separated"] and noisy["low"] < 0 < noisy["high"]
    assert "not larger than the seed spread" in separation_text(noisy, "Gradient-based", "No distillation")
    # a diverged seed drops its pair; one pair measures no spread; another dataset is ignored
    one = paired_difference(_final([(0.6, 0.5), (float("nan"), 0.5)]), "fashion_mnist", "gradient", "no_distillation")
    assert one["n"] == 1 and not one["separated"]
    assert "not separated" in separation_text(one, "A", "B")
    assert paired_difference(_final([(0.6, 0.5)] * 3, "cifar10"), "fashion_mnist", "gradient",
                             "no_distillation")["n"] == 0
    assert t975(1) == pytest.approx(12.706) and t975(100) == 1.96


def test_protocol_differences_are_read_from_the_config():
    """Every field listed departs from the resolved default; a field the protocol shares with it is not listed."""
    from kdlib.experiments.profiles import resolve_config

    diff = P.protocol_differences("cifar10_reduced").set_index("field")
    default = resolve_config("cifar10_reduced", "gradient", "paper", 0).to_dict()
    assert "shuffle" not in diff.index and "optimizer" not in diff.index  # the same under both
    assert {"init_law", "fd_virtual_lr", "proposed_reset", "eval_every"} <= set(diff.index)
    for f, row in diff.iterrows():
        assert row["authors' protocol"] == P.AUTHORS_PROTOCOL[f] != default[f] == row["kdlib default"]


def test_column_timing_spans_first_start_to_last_end():
    def rec(created, wall):
        return dict(summary=dict(wall_time=wall), provenance=dict(created=created))

    # run a: 10:00:00-10:10:00; run b: 10:05:00-10:20:00; run c: 10:20:00-10:30:00 -> span 30 min, work 35 min
    t = A.column_timing([rec("2026-01-01T10:10:00+00:00", 600.0), rec("2026-01-01T10:20:00+00:00", 900.0),
                         rec("2026-01-01T10:30:00+00:00", 600.0)])
    assert t["runs"] == 3 and t["span_s"] == 1800.0 and t["summed_run_s"] == 2100.0
    assert t["parallelism"] == pytest.approx(2100 / 1800, abs=0.01) and t["span_h"] == 0.5
    assert t["sittings"] == 1 and t["busy_s"] == 1800.0
    assert A.column_timing([]) == {"runs": 0}


def test_column_timing_counts_a_resumed_column_in_sittings():
    def rec(created, wall):
        return dict(summary=dict(wall_time=wall), provenance=dict(created=created))

    # a day apart: 10:00-10:10 and 10:05-10:20, then (resumed) 10:00-10:30 the next day, 10:25-10:35 after it
    recs = [rec("2026-01-01T10:10:00+00:00", 600.0), rec("2026-01-01T10:20:00+00:00", 900.0),
            rec("2026-01-02T10:30:00+00:00", 1800.0), rec("2026-01-02T10:35:00+00:00", 600.0)]
    t = A.column_timing(recs)
    assert t["sittings"] == 2 and t["busy_s"] == 20 * 60 + 35 * 60
    assert t["span_s"] == 24 * 3600 + 35 * 60 and t["summed_run_s"] == 3900.0
    assert t["parallelism"] == pytest.approx(3900 / 3300, abs=0.01)
    # a pause shorter than gap_s is one sitting
    assert A.column_timing(recs[:2] + [rec("2026-01-01T10:35:00+00:00", 600.0)])["sittings"] == 1
    assert A.column_timing(recs[:2] + [rec("2026-01-01T10:35:00+00:00", 600.0)], gap_s=60.0)["sittings"] == 2


def test_column_timing_places_a_checkpoint_resumed_run_in_its_sittings():
    """A run killed at the end of one sitting and resumed from its checkpoint in the next (kdlib.train.checkpoint):
    its 50 minutes are 20 in the first sitting and 30 in the second, not 50 before its end."""
    first = dict(summary=dict(wall_time=1200.0), provenance=dict(created="2026-01-01T10:20:00+00:00"))
    resumed = dict(summary=dict(wall_time=3000.0), provenance=dict(
        created="2026-01-02T10:30:00+00:00", earlier_sittings_s=1200.0,
        earlier_sittings=[["2026-01-01T10:20:00+00:00", "2026-01-01T10:40:00+00:00", "abc"]],
        resumed=[dict(training=0, epoch=7, commit="abc")]))
    t = A.column_timing([first, resumed])
    assert t["sittings"] == 2 and t["summed_run_s"] == 4200.0
    assert t["busy_s"] == 40 * 60 + 30 * 60  # 10:00-10:40 on day 1 (two runs back to back), 10:00-10:30 on day 2
    assert t["first_start"].startswith("2026-01-01T10:00")
    # read as before (its whole wall time before created), it would start at 09:40 on day 2: one 50-min stretch
    plain = dict(resumed, provenance=dict(created=resumed["provenance"]["created"]))
    assert A.column_timing([first, plain])["busy_s"] == 20 * 60 + 50 * 60


def test_provenance_table_names_the_commits_a_resumed_run_ran_under():
    """A run in three sittings (commits 1111111, 3333333+dirty, then 2222222 that wrote the record): the table names
    all three, though the record's ``resumed`` names only the last saver."""
    def rec(commit, sittings=()):
        return dict(summary=dict(wall_time=60.0), provenance=dict(commit=commit, earlier_sittings=list(sittings)))

    recs = [rec("1111111aaaa"), rec("2222222bbbb", [["2026-01-01T10:00:00+00:00", "2026-01-01T11:00:00+00:00",
                                                     "1111111aaaa"],
                                                    ["2026-01-02T10:00:00+00:00", "2026-01-02T11:00:00+00:00",
                                                     "3333333cccc+dirty"]])]
    row = A.provenance_table({"authors": recs}).iloc[0]
    assert row["commit"] == "1111111a, 2222222b, 3333333c+dirty" and row["records"] == 2


def test_branch_summary_counts_runs_per_branch(tiny):
    logs, _ = tiny
    runs = pd.concat([A.run_table(A.load_archive("cifar10_reduced")), A.authors_run_table(logs)],
                     ignore_index=True)
    s = A.branch_summary(runs).set_index(["source", "method", "branch"])
    assert s.loc[("authors' logs", "gradient", "distillation"), "runs"] == 1
    assert s.loc[("kdlib, authors' protocol", "gradient", "pure CE"), "mean final accuracy"] == pytest.approx(0.532)
    assert s.loc[("kdlib, authors' protocol", "gradient", "diverged"), "runs"] == 1
    assert s.runs.sum() == len(runs)
    assert len(A.branch_summary(A.run_table({}))) == 0


def test_late_spread_is_the_median_over_runs_of_the_late_standard_deviation():
    curves = pd.DataFrame(dict(run=[0] * 4 + [1] * 4 + [2] * 4, epoch=[10, 60, 70, 80] * 3,
                               test_accuracy=[0.1, 0.5, 0.5, 0.5, 0.9, 0.6, 0.7, 0.8, 0.2, 0.4, 0.6, 0.4]))
    spreads = [0.0, float(np.std([0.6, 0.7, 0.8])), float(np.std([0.4, 0.6, 0.4]))]  # epoch 10 left out
    assert A.late_spread(curves, 60) == pytest.approx(float(np.median(spreads)))
    assert A.late_spread(curves, 90) != A.late_spread(curves, 90)  # no late point: NaN, not 0
