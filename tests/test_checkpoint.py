"""A run killed after an epoch and started again resumes from its checkpoint and writes the record it would have
written had it never stopped (kdlib.train.checkpoint): the same history, summary and trained model bit for bit,
wall times and provenance aside."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_fmnist_root
from kdlib.train import Problem, Split, train_student
from kdlib.train.checkpoint import Checkpoint, Checkpoints, peek
from kdlib.train.loop import _val_cycle

N_TRAIN, N_TEST = 48, 16
# the authors' protocol knobs that carry state across epochs: StepLR, the virtual step at the initial lr, the
# per-epoch reset of Algorithm 1, reshuffled and augmented batches, D_val cycled in batches and augmented
OVER = dict(epochs=4, batch_size=16, eval_every=2, lr_step_epochs=1, lr_gamma=0.5, e1=2, e2=1,
            hyperopt_evals=2, estimator="finite_difference", fd_virtual_lr="initial", proposed_reset="epoch",
            shuffle=True, augment="flip_crop", augment_val=True, loss_form="kl")


class Killed(BaseException):
    """The process dies (not an Exception: nothing in the runner may catch it)."""


@pytest.fixture
def teacher_file(isolated_kdlib_env, tmp_path):
    (_, ytr), _ = make_fmnist_root(isolated_kdlib_env["data"], n_train=N_TRAIN, n_test=N_TEST)
    table = np.random.default_rng(0).normal(size=(N_TRAIN, 10)).astype(np.float32)
    table[np.arange(N_TRAIN), ytr] += 4.0
    path = tmp_path / "teacher.npy"
    np.save(path, table)
    return path


def _kill_after(monkeypatch, saves: int) -> dict:
    """Make the ``saves``-th checkpoint write the last thing this 'process' does."""
    real = Checkpoint.save
    seen = {"n": 0}

    def save(self, settings, **state):
        real(self, settings, **state)
        seen["n"] += 1
        if seen["n"] == saves:
            raise Killed()

    monkeypatch.setattr(Checkpoint, "save", save)
    seen["revive"] = lambda: monkeypatch.setattr(Checkpoint, "save", real)  # not monkeypatch.undo(): the test's
    return seen  # isolated KDLIB_DATA / KDLIB_CACHE (the same monkeypatch) must stay


def _run(out: Path, method: str, teacher: Path, **over) -> dict:
    from kdlib.experiments import runner

    runner.run_experiments("fashion_mnist", method, [1], "smoke", out, progress=False,
                           overrides={**OVER, "teacher": f"file:{teacher}", **over})
    (path,) = sorted((out / "runs").glob("*.json"))
    return json.loads(path.read_text())


def _without_clocks(rec: dict) -> dict:
    rec = json.loads(json.dumps(rec))
    rec.pop("provenance")
    rec["summary"].pop("wall_time")
    for row in rec["history"]:
        row.pop("wall_time")
    return rec


@pytest.mark.parametrize("method,kill_at", [("gradient", 1), ("proposed", 2), ("ctkd", 3), ("no_distillation", 2),
                                            ("hyperopt", 6)])
def test_killed_run_resumes_to_the_same_record(teacher_file, tmp_path, monkeypatch, method, kill_at):
    """Killed right after its ``kill_at``-th epoch checkpoint (hyperopt: in its second training of 4 epochs), the
    run started again by the same command resumes there and stores the uninterrupted run's record."""
    ref = _run(tmp_path / "ref", method, teacher_file)
    assert "resumed" not in ref["provenance"]
    assert not list((tmp_path / "ref" / ".partial").glob("*.pt"))  # spent checkpoints are deleted

    out = tmp_path / "killed"
    seen = _kill_after(monkeypatch, kill_at)
    with pytest.raises(Killed):
        _run(out, method, teacher_file)
    assert seen["n"] == kill_at and not list((out / "runs").glob("*.json"))
    seen["revive"]()
    left = sorted((out / ".partial").glob("*.pt"))
    assert left, "the killed run left no checkpoint"

    got = _run(out, method, teacher_file)
    resumed = got["provenance"]["resumed"]
    last = max(resumed, key=lambda r: r["training"])
    assert last["training"] == (kill_at - 1) // OVER["epochs"]  # the killed training resumed after its last save
    assert last["epoch"] == (kill_at - 1) % OVER["epochs"] + 1
    assert _without_clocks(got) == _without_clocks(ref)
    prov = got["provenance"]
    assert 0 < prov["earlier_sittings_s"] < got["summary"]["wall_time"]
    assert len(prov["earlier_sittings"]) == len(resumed)  # one earlier sitting per training restored
    assert all(a <= b <= prov["created"] for a, b, _ in prov["earlier_sittings"])
    assert {c for *_, c in prov["earlier_sittings"]} == {prov["commit"]}  # one commit ran every sitting here
    assert got["summary"]["wall_time"] >= max(r["wall_time"] for r in got["history"]) > 0
    assert not list((out / ".partial").glob("*.pt"))


def _problem() -> Problem:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    t = torch.randn(40, 3, generator=g)
    return Problem(train=Split(x[:24], y[:24], t[:24]), val=Split(x[24:32], y[24:32]), test=Split(x[32:], y[32:]),
                   make_student=lambda: torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.3),
                                                            torch.nn.Linear(8, 3)))


def _settings(**kw):
    from kdlib.train import Settings

    return Settings(**{**dict(epochs=3, batch_size=8, lr=0.1, momentum=0.9, estimator="unrolled"), **kw})


def _tuner(optimizer, st):
    from kdlib.train import make_tuner

    return make_tuner(st, optimizer, torch.tensor([0.5, 2.0]), "gradient")


def test_loop_resume_restores_dropout_momentum_and_the_rng(tmp_path, monkeypatch):
    """At the loop: a dropout student under SGD with momentum, killed after epoch 1 and resumed, ends with the
    uninterrupted run's parameters and rows; resuming without the saved global RNG state would not."""
    ref = train_student(_settings(), _problem(), _tuner)
    path = tmp_path / "run.0.pt"
    seen = _kill_after(monkeypatch, 1)
    with pytest.raises(Killed):
        train_student(_settings(), _problem(), _tuner, checkpoint=Checkpoint(path))
    seen["revive"]()
    after_epoch_0 = torch.load(path, weights_only=False)
    assert after_epoch_0["epoch"] == 1
    got = train_student(_settings(), _problem(), _tuner, checkpoint=Checkpoint(path))
    for a, b in zip(got.model.parameters(), ref.model.parameters()):
        assert torch.equal(a, b)
    strip = lambda h: [{k: v for k, v in r.items() if k != "wall_time"} for r in h]  # noqa: E731
    assert strip(got.history) == strip(ref.history)

    # the same resume with the global RNG (dropout's masks) left where a fresh process has it differs
    after_epoch_0["rng"] = torch.manual_seed(12345).get_state()
    torch.save(after_epoch_0, path)
    other = train_student(_settings(), _problem(), _tuner, checkpoint=Checkpoint(path))
    assert not all(torch.equal(a, b) for a, b in zip(other.model.parameters(), ref.model.parameters()))


def test_checkpoint_of_other_settings_or_kernels_is_not_used(tmp_path):
    path = tmp_path / "run.0.pt"
    train_student(_settings(epochs=2), _problem(), _tuner, checkpoint=Checkpoint(path))
    assert path.exists()  # a finished training keeps its last checkpoint until its record is written
    owner = Checkpoints(tmp_path, "run")
    with pytest.warns(UserWarning, match=r"not used: written for other settings \(differing: \['epochs'\]\)"):
        train_student(_settings(epochs=3), _problem(), _tuner, checkpoint=owner.next())
    assert owner.resumed == []
    state = torch.load(path, weights_only=False)
    state["environment"]["cpu_capability"] = "VSX"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="not used: written under"):
        train_student(_settings(epochs=3), _problem(), _tuner, checkpoint=Checkpoint(path))
    path.write_bytes(b"torn")
    with pytest.warns(UserWarning, match="could not be read"):
        train_student(_settings(epochs=3), _problem(), _tuner, checkpoint=Checkpoint(path))


def test_checkpoint_written_before_a_settings_field_existed_is_used_at_its_default(tmp_path):
    """A field added to the settings later (``augment_val``) is absent from older checkpoints: they continue a run
    that leaves it at its default, and not one that sets it."""
    path = tmp_path / "run.0.pt"
    train_student(_settings(epochs=2), _problem(), _tuner, checkpoint=Checkpoint(path))
    state = torch.load(path, weights_only=False)
    del state["settings"]["augment_val"]
    torch.save(state, path)
    owner = Checkpoints(tmp_path, "run")
    train_student(_settings(epochs=2), _problem(), _tuner, checkpoint=owner.next())
    assert [r["epoch"] for r in owner.resumed] == [2]
    with pytest.warns(UserWarning, match=r"differing: \['augment', 'augment_val'\]"):
        assert Checkpoint(path).load(_settings(epochs=2, augment="flip_crop", augment_val=True)) is None


def test_finished_training_restores_without_a_step(tmp_path):
    """A training whose last checkpoint is its end (a finished hyperopt trial) returns its rows and model as
    saved, and counts the earlier sitting's wall time."""
    owner = Checkpoints(tmp_path, "run")
    ref = train_student(_settings(), _problem(), _tuner, checkpoint=owner.next())
    again = Checkpoints(tmp_path, "run")
    got = train_student(_settings(), _problem(), _tuner, checkpoint=again.next())
    assert got.history == ref.history  # wall times included: nothing ran
    assert again.resumed == [dict(training=0, epoch=3, commit=None)]
    assert len(again.sittings) == 1 and again.sittings[0][0] <= again.sittings[0][1]
    assert again.restored_seconds == pytest.approx(ref.history[-1]["wall_time"], rel=0.5)
    assert all(torch.equal(a, b) for a, b in zip(got.model.parameters(), ref.model.parameters()))
    assert [peek(p) for p in again.files()] == [dict(seed=0, epoch=3, epochs=3, training=0)]
    again.clear()
    assert not list(tmp_path.glob("*.pt"))


def test_checkpoint_without_sittings_dates_its_sitting_by_the_file(tmp_path):
    """Checkpoints written before sittings were saved (da77fd3) still resume; their sitting ends when the file
    was written and lasted its elapsed time."""
    path = tmp_path / "run.0.pt"
    train_student(_settings(), _problem(), _tuner, checkpoint=Checkpoint(path))
    state = torch.load(path, weights_only=False)
    del state["sittings"]
    torch.save(state, path)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    owner = Checkpoints(tmp_path, "run")
    train_student(_settings(), _problem(), _tuner, checkpoint=owner.next())
    assert owner.sittings == [[1_700_000_000 - state["elapsed"], 1_700_000_000, None]]


@pytest.mark.parametrize("batch_size,drawn", [(3, 0), (3, 4), (3, 7), (None, 5), (20, 2)])
def test_val_cycle_resumes_where_it_was(batch_size, drawn):
    val = Split(torch.arange(8.0).view(8, 1), torch.arange(8))
    fresh = _val_cycle(val, batch_size)
    for _ in range(drawn):
        next(fresh)
    resumed = _val_cycle(val, batch_size, drawn)
    for _ in range(5):
        a, b = next(fresh), next(resumed)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
