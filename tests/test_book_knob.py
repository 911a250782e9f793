"""The CIFAR-10 page's *Which knob?* sections (:func:`kdlib.book.archive_page.show_knob`,
:func:`~kdlib.book.archive_page.show_baseline_knob`) on a tiny archive and a tiny authors' log: the numbers they
show are the records' and the log's, and a record that departs from the authors' protocol in more than the knob is
refused."""
from __future__ import annotations

import json

import matplotlib
import pytest

matplotlib.use("Agg")

from kdlib.book import archive_page as AP  # noqa: E402
from kdlib.experiments.protocol import authors_protocol  # noqa: E402


def _record(method, seed, accs, temps, **over):
    cfg = dict(dataset="cifar10", method=method, seed=seed, **{**authors_protocol(method, "cifar10"), **over})
    hist = [dict(step=e, epoch=e, test_accuracy=a, lambda1=0.0, temperature=t, phase="gradient")
            for e, (a, t) in enumerate(zip(accs, temps))]
    return dict(config=cfg, history=hist, summary=dict(status="ok", final_accuracy=accs[-1], wall_time=1.0),
                provenance=dict(kdlib_version="0", commit="abc", torch="2", threads=1, machine="t",
                                created="2026-01-01T00:00:00"))


def _write(folder, name, rec):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(rec))


@pytest.fixture
def tiny(tmp_path, monkeypatch, isolated_kdlib_env):
    root = tmp_path / "archive"
    monkeypatch.setenv("KDLIB_ARCHIVE", str(root))
    logs = isolated_kdlib_env["data"] / "authors" / "logs"
    logs.mkdir(parents=True)
    # the authors' convention: lambda1 weights the distillation term; "temp" is T
    opt = [dict(results=[dict(epoch=e, accuracy=a, temp=10.0, lambda1=1.0) for e, a in enumerate(accs)])
           for accs in ([0.40, 0.70], [0.44, 0.72])]
    nod = [dict(results=[dict(epoch=e, accuracy=a) for e, a in enumerate(accs)]) for accs in ([0.46, 0.60], [0.48, 0.62])]
    (logs / "exp20_full_cifar__opt.jsonl").write_text("\n".join(json.dumps(r) for r in opt))
    (logs / "exp20_full_cifar__nodistil.jsonl").write_text("\n".join(json.dumps(r) for r in nod))
    for other in ("distil", "random", "splines"):  # the other Table 2 logs the late-spread table reads
        (logs / f"exp20_full_cifar__{other}.jsonl").write_text("\n".join(json.dumps(r) for r in opt))
    AP.show_table = lambda *a, **k: None  # the sections' tables are returned; nothing to display here
    AP.show_markdown = lambda *a, **k: None
    monkeypatch.setattr(AP.plt, "show", lambda: None)
    return root


def test_knob_runs_beside_the_column_and_the_authors(tiny):
    _write(tiny / "cifar10" / "without_augment" / "runs", "a.json",
           _record("gradient", 1, [0.45, 0.66], [2.0, 9.0], augment="none", augment_val=False))
    _write(tiny / "pending" / "cifar10" / "authors" / "runs", "b.json", _record("gradient", 1, [0.47, 0.71], [2.0, 10.0]))
    table = AP.show_knob("cifar10")
    row = table.loc[1]
    assert row["authors: final accuracy"] == pytest.approx(0.72)
    assert row["ours without the authors' augmentation: final accuracy"] == pytest.approx(0.66)
    assert row["ours, authors' protocol: final accuracy"] == pytest.approx(0.71)
    assert row["ours, authors' protocol: final T"] == pytest.approx(10.0)
    _write(tiny / "cifar10" / "without_augment" / "runs", "c.json",
           _record("gradient", 2, [0.45, 0.66], [2.0, 9.0], augment="none", augment_val=False,
                   fd_virtual_lr="current"))
    with pytest.raises(ValueError, match="departs from the authors' protocol in .*fd_virtual_lr"):
        AP.show_knob("cifar10")


def test_baseline_knob_means_per_epoch(tiny):
    for s, accs in enumerate(([0.40, 0.58], [0.42, 0.60])):
        _write(tiny / "cifar10" / "baseline_augment" / "runs", f"n{s}.json",
               _record("no_distillation", s, accs, [1.0, 1.0], augment="flip_crop", epochs=2))
    _write(tiny / "pending" / "cifar10" / "authors" / "runs", "p.json", _record("no_distillation", 0, [0.47, 0.61], [1, 1]))
    table = AP.show_baseline_knob("cifar10")
    assert list(table.index) == [0, 1]
    assert table.loc[0, "authors' logs"] == "0.4700 ± 0.0100 (2)"
    assert table.loc[0, "ours with augment='flip_crop'"] == "0.4100 ± 0.0100 (2)"
    assert table.loc[1, "ours, authors' protocol (augment as stored)"] == "0.6100 ± 0.0000 (1)"
    _write(tiny / "cifar10" / "baseline_augment" / "runs", "n9.json",
           _record("no_distillation", 9, [0.4, 0.5], [1, 1], augment="flip_crop", epochs=2, shuffle=True))
    with pytest.raises(ValueError, match="shuffle"):
        AP.show_baseline_knob("cifar10")


def test_val_knob_runs_depart_in_augment_val_alone(tiny):
    _write(tiny / "cifar10" / "val_not_augmented" / "runs", "a.json",
           _record("gradient", 1, [0.45, 0.69], [2.0, 10.0], augment_val=False))
    _write(tiny / "pending" / "cifar10" / "authors" / "runs", "b.json", _record("gradient", 1, [0.47, 0.71], [2.0, 10.0]))
    table = AP.show_knob("cifar10", "val_not_augmented")
    assert table.loc[1, "ours with the training batches augmented only: final accuracy"] == pytest.approx(0.69)
    assert table.loc[1, "ours, authors' protocol: final accuracy"] == pytest.approx(0.71)
    _write(tiny / "cifar10" / "val_not_augmented" / "runs", "c.json",
           _record("gradient", 2, [0.45, 0.66], [2.0, 9.0], augment="none", augment_val=False))
    with pytest.raises(ValueError, match=r"departs from the authors' protocol in \['augment', 'augment_val'\]"):
        AP.show_knob("cifar10", "val_not_augmented")


def test_val_augment_sets_the_archives_loss_ratio_beside_the_authors(tiny, isolated_kdlib_env):
    logs = isolated_kdlib_env["data"] / "authors" / "logs"
    full = [dict(results=[{"epoch": 0, "accuracy": 0.4, "temp": 5.0, "lambda1": 0.5, "val loss": v, "test loss": t}])
            for v, t in ((1.05, 1.0), (2.2, 2.0))]
    (logs / "exp20_full_cifar__opt.jsonl").write_text("\n".join(json.dumps(r) for r in full))
    reduced = [dict(results=[{"epoch": 0, "accuracy": 0.3, "temp": 5.0, "lambda1": 0.5, "val loss": 0.99,
                              "test loss": 1.0}])]
    (logs / "exp33_opt.jsonl").write_text(json.dumps(reduced[0]))
    rec = _record("gradient", 0, [0.4, 0.7], [5.0, 10.0])
    rec["history"][0].update(val_loss=1.6, test_loss=1.5)  # epoch 0
    _write(tiny / "pending" / "cifar10" / "authors" / "runs", "g.json", rec)
    table = AP.show_val_augment("cifar10").set_index(["source", "method"])
    theirs = table.loc[("authors' logs, cifar10", "gradient")]
    assert theirs.runs == 2 and theirs["mean"] == pytest.approx((1.05 + 1.1) / 2) and theirs["max"] == pytest.approx(1.1)
    assert table.loc[("authors' logs, cifar10_reduced", "gradient"), "mean"] == pytest.approx(0.99)
    ours = table.loc[("ours, authors' protocol (D_val augmented)", "gradient")]
    assert ours.runs == 1 and ours["mean"] == pytest.approx(1.6 / 1.5)
    assert ("ours, authors' protocol (D_val augmented)", "proposed") not in table.index  # no proposed run yet
    assert AP.show_val_augment("fashion_mnist") is None  # its protocol does not augment D_val
