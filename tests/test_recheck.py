"""kdlib.experiments.recheck and `kdlib recheck`: a stored record regenerates to itself (whole, or its first
logged points); a record whose final accuracy or branch moved is caught, and the command exits 1."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from kdlib.experiments import store
from kdlib.experiments.profiles import resolve_config
from kdlib.experiments.recheck import FINAL_TOLERANCE, recheck
from kdlib.experiments.runner import run_experiments


# one cache for this module and the CLI processes it starts: the synthetic teacher is trained once
pytestmark = pytest.mark.usefixtures("shared_module_cache")


@pytest.fixture(scope="module")
def stored(tmp_path_factory, module_cache):
    """One stored synthetic gradient-based record (smoke scale) and its path."""
    root = tmp_path_factory.mktemp("recheck")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDLIB_CACHE", str(module_cache))
        run_experiments("synthetic", ["gradient"], seeds=[0], profile="smoke", out_dir=root / "out",
                        progress=False)
    path = store.record_path(root / "out", resolve_config("synthetic", "gradient", "smoke", 0))
    return path, json.loads(path.read_text())


def test_a_stored_record_regenerates_to_itself_whole_and_in_part(stored):
    _, rec = stored
    whole = recheck(rec)
    assert whole["ok"] and whole["whole"] and whole["rows"] == len(rec["history"]) and whole["first_epoch_off"] is None
    assert whole["same_cpu_kernels"] is True and "note" not in whole
    assert whole["branch"][0] == whole["branch"][1]
    assert whole["final_accuracy"][0] == whole["final_accuracy"][1] == rec["summary"]["final_accuracy"]
    assert max(whole["max_difference"].values()) == 0.0  # same machine, one thread: bit for bit
    part = recheck(rec, first_rows=2)
    assert part["ok"] and not part["whole"] and part["rows"] == 2 and "branch" not in part


def test_a_moved_final_accuracy_or_branch_is_caught(stored):
    _, rec = stored
    moved = copy.deepcopy(rec)
    moved["summary"]["final_accuracy"] += 2 * FINAL_TOLERANCE
    out = recheck(moved)
    assert not out["ok"] and out["branch"][0] == out["branch"][1]
    flipped = copy.deepcopy(rec)
    last = max(flipped["history"], key=lambda h: h["step"])
    last["lambda1"] = 0.0 if last["lambda1"] > 0.5 else 1.0  # the authors' convention 1 - lambda1: other end
    out = recheck(flipped)
    assert not out["ok"] and out["branch"][0] != out["branch"][1]
    assert not out["rows_ok"] and out["max_difference"]["lambda1"] > 0.4 and out["first_epoch_off"] == last["epoch"]


def test_cli_recheck_prints_one_verdict_per_record_and_exits_1_on_a_stale_one(stored, tmp_path):
    path, rec = stored
    stale = copy.deepcopy(rec)
    stale["summary"]["final_accuracy"] += 2 * FINAL_TOLERANCE
    stale_path = tmp_path / "stale.json"
    stale_path.write_text(json.dumps(stale))
    proc = subprocess.run([sys.executable, "-m", "kdlib", "recheck", str(path), str(stale_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [v["ok"] for v in lines] == [True, False] and lines[1]["record"] == str(stale_path)
    assert "1 of 2 record(s) did not come back" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "kdlib", "recheck", str(path), "--rows", "1", "--save",
                           str(tmp_path / "rerun")], capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)["rows"] == 1
    (saved,) = (tmp_path / "rerun" / "runs").glob("*.json")
    again = json.loads(saved.read_text())
    fields = ("step", "epoch", "test_accuracy", "lambda1", "temperature")
    assert {f: again["history"][0][f] for f in fields} == {f: rec["history"][0][f] for f in fields}


def test_cli_recheck_refuses_bad_input_before_any_compute(stored, tmp_path):
    path, _ = stored
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"config": {}}))
    hyperopt = tmp_path / "hyperopt.json"
    rec = json.loads(path.read_text())
    rec["config"]["method"] = "hyperopt"
    hyperopt.write_text(json.dumps(rec))
    for args, message in [([str(path), str(hyperopt), "--rows", "1"],
                           "hyperopt.json: a hyperopt record is re-checked whole"),
                          ([str(path), "--rows", "0"], "--rows 0"),
                          ([str(path), str(tmp_path / "missing.json")], "missing.json: no such record file"),
                          ([str(bad)], "bad.json: missing 'history'")]:
        proc = subprocess.run([sys.executable, "-m", "kdlib", "recheck", *args], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr and proc.stdout == "", (args, proc.stderr)


def test_across_cpu_kernels_the_accuracy_is_shown_and_the_metaparameters_still_compared(stored):
    """A record made with other (or unrecorded) CPU kernels cannot come back bit for bit: its accuracy is not
    compared, λ1 and T are, within CROSS_CPU_TOLERANCE; with this machine's kernels everything is compared."""
    from kdlib.experiments.recheck import (CROSS_CPU_STEPS, CROSS_CPU_TOLERANCE, RECHECK_TOLERANCE,
                                           cross_cpu_tolerance, same_kernels, tolerance_for)
    from kdlib.experiments.store import cpu_capability

    _, stored_rec = stored
    rec = copy.deepcopy(stored_rec)
    assert rec["provenance"]["cpu_capability"] == cpu_capability() and same_kernels(rec) is True
    assert tolerance_for(rec) is RECHECK_TOLERANCE
    other = copy.deepcopy(rec)
    other["provenance"]["cpu_capability"] = "SOME_OTHER_ISA"
    unknown = copy.deepcopy(rec)
    del unknown["provenance"]["cpu_capability"]
    # the same kernels on another CPU model (vendor), or on a model the record does not name: not strict either
    other_cpu = copy.deepcopy(rec)
    other_cpu["provenance"]["cpu_model"] = "AuthenticAMD AMD EPYC (test)"
    unnamed_cpu = copy.deepcopy(rec)
    del unnamed_cpu["provenance"]["cpu_model"]
    assert same_kernels(other) is False and same_kernels(unknown) is None
    assert same_kernels(other_cpu) is False and same_kernels(unnamed_cpu) is None
    cross = cross_cpu_tolerance(rec)
    step = rec["config"]["meta_lr"] * rec["config"]["meta_clip"]
    assert cross["test_accuracy"] is None
    assert cross["lambda1"] == cross["temperature"] == pytest.approx(max(CROSS_CPU_TOLERANCE["lambda1"],
                                                                         CROSS_CPU_STEPS * step))
    for r in (other, unknown, other_cpu, unnamed_cpu):
        assert tolerance_for(r) == cross
    for r in (other, rec):
        r["history"][0]["test_accuracy"] += 0.05
    out = recheck(other, first_rows=1)
    assert out["ok"] and out["same_cpu_kernels"] is False and out["max_difference"]["test_accuracy"] > 0.04
    assert "other CPU kernels, or on another or unrecorded CPU model" in out["note"]
    assert not recheck(rec, first_rows=1)["ok"]  # the same change with this machine's kernels is caught
    other["history"][0]["lambda1"] += 2 * cross["lambda1"]
    out = recheck(other, first_rows=1)
    assert not out["ok"] and out["first_epoch_off"] == other["history"][0]["epoch"]
