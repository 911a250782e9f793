"""Fault injection: the faults a user meets end in a clear error before compute or in a correct, honestly
labelled result; nothing is lost or mixed. Tiny fabricated Fashion-MNIST (60 training images) throughout."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_cifar_npz, make_fmnist_root
from kdlib import cli, teachers
from kdlib.errors import ConfigError, DataFileError, OutputDirError, TeacherError
from kdlib.experiments import executors, runner, store
from kdlib.experiments.problem import clear_memo
from kdlib.experiments.profiles import resolve_config

N_TRAIN, N_TEST = 60, 20
FAST = dict(epochs=1, batch_size=32, e1=2, e2=1)


@pytest.fixture(autouse=True)
def _fresh_memo():
    clear_memo()  # bundles/teachers memoised by another test's (now deleted) files must not leak in
    yield
    clear_memo()


@pytest.fixture
def fmnist(isolated_kdlib_env):
    """A tiny Fashion-MNIST under KDLIB_DATA and a good teacher: logits whose argmax is the label on 90 %."""
    root = isolated_kdlib_env["data"]
    (_, ytr), _ = make_fmnist_root(root, n_train=N_TRAIN, n_test=N_TEST)
    rng = np.random.default_rng(0)
    table = rng.normal(size=(N_TRAIN, 10)).astype(np.float32)
    good = np.arange(N_TRAIN) % 10 != 0
    table[np.arange(N_TRAIN)[good], ytr[good]] += 6.0
    return root, ytr, table


def _save(path: Path, table: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, table)
    return path


def _authors_file(root: Path, table: np.ndarray, monkeypatch, trusted: np.ndarray | None = None) -> Path:
    """Write ``table`` as the authors' Fashion-MNIST logits; register the hash of ``trusted`` (default the
    table itself) as the authors' one, with its row count."""
    path = _save(root / "authors" / "teacher_logits" / "logits_resnet_fmnist.npy", table)
    ref = table if trusted is None else trusted
    ref_path = _save(root.parent / "reference.npy", ref)
    entry = teachers.AUTHORS_LOGITS["authors_resnet_fmnist"]
    monkeypatch.setitem(teachers.AUTHORS_LOGITS, "authors_resnet_fmnist", entry._replace(
        sha256=hashlib.sha256(ref_path.read_bytes()).hexdigest(), rows=len(ref), train_agreement=0.9))
    return path


def _run(out, methods="no_distillation", seeds=1, **overrides):
    return runner.run_experiments("fashion_mnist", methods, seeds, "smoke", out, progress=False,
                                  overrides={**FAST, **overrides})


def _cli(*argv: str, capsys) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _no_records(out: Path) -> bool:
    return not list((out / "runs").glob("*.json"))


# ------------------------------------------------------------------------------------------------ teachers
def test_truncated_authors_logits_fail_before_compute(fmnist, tmp_path, monkeypatch):
    root, _, table = fmnist
    _authors_file(root, table[:-1], monkeypatch, trusted=table)  # one row missing
    with pytest.raises(TeacherError, match="SHA-256") as e:
        _run(tmp_path / "out", teacher="authors_resnet_fmnist")
    assert "logits_resnet_fmnist.npy" in str(e.value) and "--download" in str(e.value)
    assert _no_records(tmp_path / "out")
    # even a file whose hash is trusted must have the exact row count
    _authors_file(root, table[:-1], monkeypatch)
    monkeypatch.setitem(teachers.AUTHORS_LOGITS, "authors_resnet_fmnist",
                        teachers.AUTHORS_LOGITS["authors_resnet_fmnist"]._replace(rows=N_TRAIN))
    with pytest.raises(TeacherError, match=f"expected exactly {N_TRAIN} rows .* found {N_TRAIN - 1}"):
        _run(tmp_path / "out", teacher="authors_resnet_fmnist")
    assert _no_records(tmp_path / "out")


def test_shifted_logits_named_as_misaligned(fmnist, tmp_path, monkeypatch, capsys):
    root, ytr, table = fmnist
    shifted = np.roll(table, 1, axis=0)
    user = _save(tmp_path / "mine.npy", shifted)
    rc, out, err = _cli("run", "--dataset", "fashion_mnist", "--methods", "no_distillation", "--seeds", "1",
                        "--profile", "smoke", "--out", str(tmp_path / "out"), "--no-progress",
                        "--set", f"teacher='file:{user}'", "--set", "epochs=1", capsys=capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("kdlib: error: ")
    assert str(user) in err and "misaligned" in err and "shifted" in err and "chance level" in err
    assert _no_records(tmp_path / "out")
    # the same rows under the authors' name fail the checksum, before any agreement is computed
    _authors_file(root, shifted, monkeypatch, trusted=table)
    with pytest.raises(TeacherError, match="SHA-256"):
        _run(tmp_path / "out", teacher="authors_resnet_fmnist")
    # and were the shifted file's hash trusted, its agreement far below the stated one still names it
    _authors_file(root, shifted, monkeypatch)
    with pytest.raises(TeacherError, match="far below its stated 0.9000: the rows are likely misaligned"):
        _run(tmp_path / "out", teacher="authors_resnet_fmnist")
    # the aligned table runs
    ok = _save(tmp_path / "ok.npy", table)
    df = _run(tmp_path / "out", teacher=f"file:{ok}")
    assert set(df.status) == {"ok"}


def test_nan_rows_rejected(fmnist, tmp_path):
    _, _, table = fmnist
    bad = table.copy()
    bad[7, 3] = np.nan
    user = _save(tmp_path / "nan.npy", bad)
    with pytest.raises(TeacherError, match=r"1 row\(s\) with NaN/inf \(first: row 7\)"):
        _run(tmp_path / "out", teacher=f"file:{user}")
    assert _no_records(tmp_path / "out")


def test_foreign_logits_rejected(fmnist, tmp_path, monkeypatch):
    root, _, table = fmnist
    cifar = np.random.default_rng(1).normal(size=(50, 10)).astype(np.float32)  # another dataset's table
    _authors_file(root, cifar, monkeypatch, trusted=table)
    with pytest.raises(TeacherError, match="another dataset's logits"):
        _run(tmp_path / "out", teacher="authors_resnet_fmnist")
    user = _save(tmp_path / "cifar.npy", cifar)
    with pytest.raises(TeacherError, match=f"expected exactly {N_TRAIN} rows"):
        _run(tmp_path / "out", teacher=f"file:{user}")
    assert _no_records(tmp_path / "out")


def test_no_network_without_download(fmnist, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(teachers.urllib.request, "urlopen", lambda *a, **k: calls.append(a))
    with pytest.raises(FileNotFoundError, match="--download"):
        _run(tmp_path / "out", teacher="authors_resnet_fmnist")
    assert calls == [] and _no_records(tmp_path / "out")


# ------------------------------------------------------------------------------------------------ data files
def test_corrupt_npz_and_gz_named(tmp_path, isolated_kdlib_env, fmnist, capsys):
    root = isolated_kdlib_env["data"]
    make_cifar_npz(root, n_train=30, n_test=5)
    npz = root / "cifar10" / "train.npz"
    npz.write_bytes(npz.read_bytes()[:200])  # truncated zip
    rc, _, err = _cli("run", "--dataset", "cifar10", "--methods", "no_distillation", "--seeds", "1", "--profile",
                      "smoke", "--out", str(tmp_path / "o1"), "--no-progress", capsys=capsys)
    assert rc == 2 and err.count("\n") == 1 and str(npz) in err and "damaged" in err and "fix:" in err
    gz = root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-8])  # truncated gzip stream
    with pytest.raises(DataFileError, match="train-labels-idx1-ubyte.gz") as e:
        _run(tmp_path / "o2", teacher="small_cnn")
    assert "EOFError" in str(e.value) or "BadGzipFile" in str(e.value)
    assert _no_records(tmp_path / "o2")


# ------------------------------------------------------------------------------------------------ output dir
def test_file_as_out_fails_before_compute(tmp_path, capsys, monkeypatch):
    target = tmp_path / "results"
    target.write_text("not a directory")
    ran = []
    monkeypatch.setattr(runner, "preflight", lambda *a, **k: ran.append(1))
    rc, out, err = _cli("run", "--dataset", "synthetic", "--methods", "gradient", "--seeds", "1", "--profile",
                        "smoke", "--out", str(target), "--no-progress", capsys=capsys)
    assert rc == 2 and out == "" and ran == []
    assert err == (f"kdlib: error: output directory {target}: expected a directory, found a file; fix: pass "
                   f"another --out (or remove/rename the file {target})\n")
    assert target.read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_out_fails_before_compute(tmp_path):  # pragma: no cover - CI runs as a user
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    with pytest.raises(OutputDirError, match="writable"):
        store.prepare_out_dir(ro / "x")


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("argv, names", [
    (["--seeds", "0"], ["--seeds", "found 0"]),
    (["--methods", ","], ["--methods", "empty name"]),
    (["--methods", "naive,naive"], ["--methods", "more than once"]),
    (["--set", "seed=3"], ["'seed'", "--seeds"]),
    (["--set", "method=naive"], ["'method'", "--methods"]),
    (["--set", "lr=abc"], ["'lr'", "'abc'", "--set lr="]),
    (["--set", "meta_clip=-1"], ["'meta_clip'", "> 0"]),
    (["--set", "e2=2.5"], ["'e2'", "integer", "2.5"]),
    (["--set", "batch_size=0"], ["'batch_size'", ">= 1"]),
    (["--set", "log_every=0"], ["'log_every'", ">= 1"]),
    (["--set", "hyperopt_evals=0"], ["'hyperopt_evals'", ">= 1"]),
    (["--set", "momentum=0.9", "--set", "optimizer='adam'"], ["'momentum'", "sgd"]),
    (["--workers", "0"], ["--workers"]),
])
def test_bad_input_is_one_line_before_compute(tmp_path, capsys, argv, names):
    base = ["run", "--dataset", "synthetic", "--methods", "naive", "--profile", "smoke",
            "--out", str(tmp_path / "out"), "--no-progress"]
    if "--methods" in argv:
        i = base.index("--methods")
        del base[i:i + 2]
    rc, out, err = _cli(*base, *argv, capsys=capsys)
    assert rc == 2 and out == "" and err.startswith("kdlib: error: ") and err.count("\n") == 1, err
    for n in names:
        assert n in err, (n, err)
    assert not (tmp_path / "out").exists()  # nothing created, nothing computed


# ------------------------------------------------------------------------------------------------ divergence
def test_diverging_lr_is_recorded_as_diverged(fmnist, tmp_path):
    _, _, table = fmnist
    user = _save(tmp_path / "t.npy", table)
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = _run(out, "no_distillation,naive,gradient", teacher=f"file:{user}", lr=1e6)
    diverged = [str(w.message) for w in caught if "diverged" in str(w.message)]
    assert len(diverged) == 3 and all("lr" in m for m in diverged)  # one warning per method
    fin = store.run_finals(df)
    assert list(fin.status) == ["diverged"] * 3 and fin.test_accuracy.isna().all()
    assert {m: s["diverged"] for m, s in store.method_summaries(df).items()} == dict.fromkeys(
        ["gradient", "naive", "no_distillation"], 1)
    for p in (out / "runs").glob("*.json"):
        text = p.read_text()
        assert "NaN" not in text and "Infinity" not in text  # standard JSON
        rec = json.loads(text)
        assert rec["summary"]["status"] == "diverged" and rec["summary"]["final_accuracy"] is None
    # the same grid at a sane lr is a different config: stored beside it, both readable apart
    ok = _run(out, "no_distillation", teacher=f"file:{user}")
    assert set(ok.status) == {"ok"} and ok.config_hash.nunique() == 1
    assert len(list((out / "runs").glob("*.json"))) == 4


def test_all_nonfinite_hypergradients_become_a_diverged_record(fmnist, tmp_path, monkeypatch):
    from kdlib import methods

    def broken(self, cfg, problem, progress=False, checkpoints=None):
        raise methods.NonFiniteHypergradient("all 2 hypergradients were NaN")

    monkeypatch.setattr(methods.Gradient, "run", broken)
    _, _, table = fmnist
    user = _save(tmp_path / "t.npy", table)
    with pytest.warns(UserWarning, match="every hypergradient was non-finite"):
        df = _run(tmp_path / "out", "gradient", teacher=f"file:{user}")
    assert list(store.run_finals(df).status) == ["diverged"]


# ------------------------------------------------------------------------------------------------ the store
def test_damaged_records_are_moved_aside_and_recomputed(fmnist, tmp_path):
    _, _, table = fmnist
    user = _save(tmp_path / "t.npy", table)
    out = tmp_path / "out"
    first = _run(out, "no_distillation", 2, teacher=f"file:{user}")
    paths = sorted((out / "runs").glob("*.json"))
    assert len(paths) == 2 and oct(paths[0].stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    paths[0].write_text("{not json")
    rec = json.loads(paths[1].read_text())
    rec["history"] = []
    paths[1].write_text(json.dumps(rec))
    with pytest.warns(UserWarning, match="damaged run record"):
        again = _run(out, "no_distillation", 2, teacher=f"file:{user}")
    assert len(list((out / "runs" / ".damaged").iterdir())) == 2
    pd.testing.assert_frame_equal(first.drop(columns="wall_time"), again.drop(columns="wall_time"))


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_two_writers_with_different_configs_never_mix(fmnist, tmp_path):
    _, _, table = fmnist
    user = _save(tmp_path / "t.npy", table)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1])] + sys.path))
    cmd = [sys.executable, "-m", "kdlib", "run", "--dataset", "fashion_mnist", "--methods",
           "no_distillation,naive", "--seeds", "2", "--profile", "smoke", "--out", str(out), "--no-progress",
           "--set", f"teacher='file:{user}'", "--set", "epochs=1", "--set", "batch_size=32"]
    procs = {lr: subprocess.Popen(cmd + ["--set", f"lr={lr}"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for lr in (0.5, 0.05)}
    printed = {}
    for lr, p in procs.items():
        o, e = p.communicate(timeout=300)
        assert p.returncode == 0, e
        printed[lr] = json.loads(o)
    assert len(list((out / "runs").glob("*.json"))) == 8  # 2 configs x 2 methods x 2 seeds, all kept
    both = pd.read_csv(out / "results.csv")  # derived from runs/ alone, whoever wrote last
    assert both.config_hash.nunique() == 8 and len(json.loads((out / "config.json").read_text())) == 8
    assert sorted(both.lr.unique()) == [0.05, 0.5]
    for lr in (0.5, 0.05):
        mine = store.load_results(out, dataset="fashion_mnist", methods=["no_distillation", "naive"], seeds=2,
                                  profile="smoke", teacher=f"file:{user}", epochs=1, batch_size=32, lr=lr)
        assert len(mine.attrs["missing"]) == 0 and mine.groupby(["method", "seed"]).ngroups == 4
        cfgs = store.resolve_configs("fashion_mnist", ["naive"], 2, "smoke", teacher=f"file:{user}", epochs=1,
                                     batch_size=32, lr=lr)
        assert {r["config"]["lr"] for r in store.load_records(out, configs=cfgs)} == {lr}
        # what each writer printed is the mean of its own config only
        assert printed[lr] == store.method_summaries(mine)


# ------------------------------------------------------------------------------------------------ workers
def _killing_work(cells, out_dir, threads, backend):
    """The runner's unit of work, except that the cell naive/seed1 kills its own worker process."""
    if any(c["method"] == "naive" and c["seed"] == 1 for c in cells):
        os.kill(os.getpid(), signal.SIGKILL)
    return runner.run_cells(cells, out_dir, threads, backend)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_killed_worker_loses_only_its_cell(fmnist, tmp_path, method):
    _, _, table = fmnist
    user = _save(tmp_path / "t.npy", table)
    out = tmp_path / "out"
    over = {**FAST, "teacher": f"file:{user}"}
    cfgs = runner.plan("fashion_mnist", "no_distillation,naive", 2, "smoke", overrides=over)
    store.prepare_out_dir(out)
    tasks = [([c.to_dict()], str(out), 1, "one") for c in cfgs]
    done = []
    failures = executors.run_local_processes(_killing_work, tasks, workers=2, threads=1,
                                             on_done=lambda i, keys: done.extend(keys), method=method)
    assert len(failures) == 1 and "fashion_mnist__naive__seed1" in failures[0] and "SIGKILL" not in failures[0]
    assert "died (exit code -9)" in failures[0]
    assert sorted(p.stem for p in (out / "runs").glob("*.json")) == sorted(done) and len(done) == 3
    before = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    df = runner.run_experiments("fashion_mnist", "no_distillation,naive", 2, "smoke", out, progress=False,
                                overrides=over)  # the rerun completes the lost cell only
    after = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    assert len(after) == 4 and all(after[k] == v for k, v in before.items())
    assert df.groupby(["method", "seed"]).ngroups == 4


def test_workers_give_the_same_records_as_one_process(fmnist, tmp_path):
    _, _, table = fmnist
    user = _save(tmp_path / "t.npy", table)
    hist = {}
    for w in (1, 2):
        out = tmp_path / f"w{w}"
        runner.run_experiments("fashion_mnist", "no_distillation,gradient", 2, "smoke", out, progress=False,
                               overrides={**FAST, "teacher": f"file:{user}"}, workers=w)
        hist[w] = {p.name: [{k: v for k, v in h.items() if k != "wall_time"}
                            for h in json.loads(p.read_text())["history"]]
                   for p in (out / "runs").glob("*.json")}
    assert len(hist[1]) == 4 and hist[1] == hist[2]


def test_stacked_engine_records_equal_one_by_one(fmnist, tmp_path):
    """``engine="stacked"`` runs the seeds of a supported method as one model (summary.engine says so) and its
    records match the one-by-one records within float32 rounding (tests/test_stacked.py states why not bit for
    bit), the finite-difference gradient included; an unsupported one (the Neumann estimator) silently keeps the
    one-run engine."""
    _, _, table = fmnist
    user = _save(tmp_path / "t.npy", table)
    over = {**FAST, "teacher": f"file:{user}", "estimator": "unrolled"}
    recs = {}
    for engine in ("one", "stacked"):
        out = tmp_path / engine
        runner.run_experiments("fashion_mnist", "naive,gradient", 3, "smoke", out, progress=False,
                               overrides={**over, "engine": engine})
        for estimator in ("finite_difference", "neumann"):
            runner.run_experiments("fashion_mnist", "gradient", 2, "smoke", out, progress=False,
                                   overrides={**over, "engine": engine, "estimator": estimator})
        recs[engine] = {(r["config"]["method"], r["config"]["estimator"], r["config"]["seed"]): r
                        for r in map(lambda p: json.loads(p.read_text()), (out / "runs").glob("*.json"))}
    assert set(recs["one"]) == set(recs["stacked"]) and len(recs["one"]) == 10
    for key, ref in recs["one"].items():
        got = recs["stacked"][key]
        stacked = key[1] != "neumann"
        assert got["summary"].get("engine") == ("stacked" if stacked else None), key
        assert ref["summary"].get("engine") is None
        assert len(got["history"]) == len(ref["history"]) > 0
        # the finite difference's quotient carries float32 rounding at about 1e-5 relative per hypergradient
        # (tests/test_stacked_protocol.py), times the smoke profile's large meta_lr
        tol = 1e-4 if key[1] == "finite_difference" else 1e-5
        for a, b in zip(got["history"], ref["history"]):
            assert a["step"] == b["step"] and a["hypergrad_evals"] == b["hypergrad_evals"]
            assert a["lambda1"] == pytest.approx(b["lambda1"], abs=tol), key
            assert a["temperature"] == pytest.approx(b["temperature"], abs=tol), key
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4), key
            assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 1.0 / N_TEST + 1e-12, key
            if not stacked:
                assert a["test_accuracy"] == b["test_accuracy"]
    # the default engine is left out of the record key: records made before the field existed keep theirs
    one = resolve_config("fashion_mnist", "naive", "smoke", 0, **FAST)
    assert "engine" not in store.hashed_config(one)
    assert store.hashed_config(resolve_config("fashion_mnist", "naive", "smoke", 0, **FAST, engine="stacked"))[
        "engine"] == "stacked"


def test_threads_are_recorded_and_keyed(fmnist, tmp_path):
    cfg = resolve_config("fashion_mnist", "naive", "smoke", 0)
    assert store.record_key(cfg, 1) != store.record_key(cfg, 2)
    syn = resolve_config("synthetic", "naive", "smoke", 0)
    assert store.record_key(syn, 1) == store.record_key(syn, 2)  # synthetic runs always use one thread
    moved = resolve_config("fashion_mnist", "naive", "smoke", 0, data_root="/elsewhere", download=True)
    assert store.record_key(moved) == store.record_key(cfg)  # where the data is read from is not the result
    assert store.record_key(resolve_config("fashion_mnist", "naive", "smoke", 0, lr=1)) == \
        store.record_key(resolve_config("fashion_mnist", "naive", "smoke", 0, lr=1.0))
    _, _, table = fmnist
    user = _save(tmp_path / "t.npy", table)
    runner.run_experiments("fashion_mnist", "naive", 1, "smoke", tmp_path / "o", progress=False,
                           overrides={**FAST, "teacher": f"file:{user}"}, threads=2)
    (rec,) = store.load_records(tmp_path / "o")
    assert rec["provenance"]["threads"] == 2 and set(rec["provenance"]) == {
        "kdlib_version", "commit", "torch", "cpu_capability", "cpu_kernels", "cpu_model", "threads", "machine", "created"}
    assert rec["provenance"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert rec["provenance"]["cpu_kernels"] == "native"  # no pin asked for in this process


def test_submitit_local_executor(fmnist, tmp_path):
    pytest.importorskip("submitit")
    _, _, table = fmnist
    user = _save(tmp_path / "t.npy", table)
    out = tmp_path / "out"
    df = runner.run_experiments("fashion_mnist", "no_distillation,naive", 1, "smoke", out, progress=False,
                                overrides={**FAST, "teacher": f"file:{user}"}, executor="submitit",
                                executor_options=dict(cluster="local", timeout_min=5))
    assert df.groupby(["method", "seed"]).ngroups == 2 and set(df.status) == {"ok"}
    assert len([d for d in (out / "submitit").iterdir() if d.name.isdigit()]) == 2  # one job per cell
    (out / "results.csv").unlink()
    assert cli.main(["aggregate", "--out", str(out)]) == 0
    assert len(pd.read_csv(out / "results.csv")) == len(df)


def test_config_errors_are_config_errors():
    with pytest.raises(ConfigError, match="outside the metaparameter box"):
        resolve_config("synthetic", "gradient", "smoke", 0, init_lambda1=2.0)


def test_readers_refuse_cell_names(tmp_path):
    with pytest.raises(ConfigError, match="configs="):
        store.load_records(tmp_path, keys={"synthetic__gradient__seed0"})


def test_a_record_of_a_newer_kdlib_is_skipped_not_moved(tmp_path):
    """A concurrent writer running newer code may store config fields this version does not know: its valid
    record must stay where it is (it was moved to .damaged before), while a truly damaged one is still moved."""
    cfg = resolve_config("synthetic", "naive", "smoke", 0)
    rec = store.make_record(cfg, [dict(step=0, test_accuracy=0.5)], dict(status="ok", final_accuracy=0.5), 1)
    path = store.write_record(tmp_path, rec)
    newer = json.loads(path.read_text())
    newer["config"]["a_field_from_the_future"] = 1
    path.write_text(json.dumps(newer))
    with pytest.warns(UserWarning, match="newer kdlib"):
        assert store.read_record(path) is None
    assert path.exists() and not (path.parent / ".damaged").exists()
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="damaged"):
        assert store.read_record(path) is None
    assert not path.exists() and any((path.parent / ".damaged").iterdir())


def test_records_keep_the_commit_the_command_started_at(fmnist, tmp_path, monkeypatch):
    """A checkout that moves while a long command runs must not relabel its records: run_experiments pins the
    commit (KDLIB_RUN_COMMIT, inherited by its workers) before any compute."""
    _, _, table = fmnist
    user = _save(tmp_path / "t.npy", table)
    monkeypatch.setattr(store, "_COMMIT", None)
    monkeypatch.setenv(store.COMMIT_ENV, "")  # so that teardown restores the variable's state from before
    monkeypatch.delenv(store.COMMIT_ENV)
    counter = tmp_path / "head_calls"  # shared by the forked workers: HEAD moves every time anyone looks
    counter.write_text("0")

    def fake_head(cmd, *args, **kwargs):
        if cmd[:2] != ["git", "rev-parse"]:
            return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")  # git status: clean
        n = int(counter.read_text()) + 1
        counter.write_text(str(n))
        return subprocess.CompletedProcess(cmd, 0, stdout=f"{n:040d}\n", stderr="")

    monkeypatch.setattr(store.subprocess, "run", fake_head)
    out = tmp_path / "o"
    runner.run_experiments("fashion_mnist", "no_distillation,naive", 1, "smoke", out, progress=False,
                           overrides={**FAST, "teacher": f"file:{user}"}, workers=2)
    pinned = os.environ[store.COMMIT_ENV]
    assert pinned == f"{1:040d}"
    commits = {json.loads(p.read_text())["provenance"]["commit"] for p in (out / "runs").glob("*.json")}
    assert commits == {pinned}
