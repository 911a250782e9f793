"""kdlib.cpu_kernels and its use by the runner and the re-check: a pin takes effect only in a process started
with it and is refused otherwise; a pinned record is keyed and recorded as such, and is re-checked under its pin
from an unpinned process, strictly (a moved value that the cross-CPU tolerance would pass is caught)."""
from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdlib import cpu_kernels
from kdlib.experiments import store
from kdlib.experiments.profiles import resolve_config
from kdlib.experiments.recheck import RECHECK_TOLERANCE, cross_cpu_tolerance, recheck

pytestmark = pytest.mark.usefixtures("shared_module_cache")

PIN_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def _has_avx2() -> bool:
    try:
        return " avx2 " in f" {Path('/proc/cpuinfo').read_text().replace(chr(10), ' ')} "
    except OSError:
        return False


needs_avx2 = pytest.mark.skipif(not _has_avx2(), reason="the avx2 pin needs an x86-64 CPU with AVX2")


@pytest.fixture(autouse=True)
def unpinned(monkeypatch):
    """This (test) process computes natively, whatever the environment it was started with."""
    for var in (cpu_kernels.ENV, *PIN_VARS):
        monkeypatch.delenv(var, raising=False)


def _kdlib(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdlib", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_pin_names_and_environments():
    env = cpu_kernels.pin_environment("avx2")
    assert env[cpu_kernels.ENV] == "avx2" and all(v in env for v in PIN_VARS)
    assert cpu_kernels.pin_environment("native") == {}
    with pytest.raises(ValueError, match="expected one of native, avx2"):
        cpu_kernels.check_name("avx9")
    pinned = cpu_kernels.environment_for("avx2", {"PATH": "/bin"})
    assert pinned["PATH"] == "/bin" and pinned["ATEN_CPU_CAPABILITY"] == "avx2"
    assert cpu_kernels.environment_for("native", pinned) == {"PATH": "/bin"}  # a native child drops every pin
    assert cpu_kernels.needs_restart("avx2") and not cpu_kernels.needs_restart("native")


def test_a_pin_that_did_not_take_effect_is_refused(monkeypatch):
    assert cpu_kernels.in_effect() == "native"
    monkeypatch.setenv(cpu_kernels.ENV, "avx2")  # asked for, but the libraries' variables were not set at start
    with pytest.raises(cpu_kernels.PinError, match="ATEN_CPU_CAPABILITY=avx2.*not set"):
        cpu_kernels.in_effect()
    with pytest.raises(cpu_kernels.PinError, match="ATEN_CPU_CAPABILITY"):
        store.provenance(1)  # so no record can claim the pin
    monkeypatch.setenv(cpu_kernels.ENV, "avx9")
    with pytest.raises(cpu_kernels.PinError, match=r"\$KDLIB_CPU_KERNELS"):
        cpu_kernels.requested()


@needs_avx2
def test_a_process_started_with_the_pin_computes_with_avx2_kernels():
    code = ("import torch; from kdlib import cpu_kernels; "
            "print(cpu_kernels.in_effect(), torch.backends.cpu.get_cpu_capability())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=cpu_kernels.environment_for("avx2"))
    assert out.stdout.split() == ["avx2", "AVX2"]


def test_the_pin_enters_the_key_and_native_keys_are_unchanged():
    cfg = resolve_config("synthetic", "gradient", "smoke", 0)
    # the native hash is the pre-pin formula, computed here independently of config_hash
    blob = json.dumps({"config": store.hashed_config(cfg), "threads": 1, "store": store.STORE_VERSION},
                      sort_keys=True, separators=(",", ":"), allow_nan=False)
    assert store.config_hash(cfg, 1) == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert store.config_hash(cfg, 1, "native") == store.config_hash(cfg, 1)
    assert store.config_hash(cfg, 1, "avx2") != store.config_hash(cfg, 1)
    assert store.record_key(cfg).endswith(store.config_hash(cfg, 1))  # this process is native


@pytest.fixture(scope="module")
def pinned_record(tmp_path_factory, module_cache):
    """A synthetic smoke run made with `kdlib run --cpu-kernels avx2` from the environment of a native process."""
    if not _has_avx2():
        pytest.skip("the avx2 pin needs an x86-64 CPU with AVX2")
    out = tmp_path_factory.mktemp("pinned") / "out"
    env = cpu_kernels.environment_for("native")
    env["KDLIB_CACHE"] = str(module_cache)
    proc = _kdlib("run", "--dataset", "synthetic", "--methods", "gradient", "--seeds", "1", "--profile", "smoke",
                  "--out", str(out), "--no-progress", "--cpu-kernels", "avx2", env=env)
    assert proc.returncode == 0, proc.stderr
    (path,) = sorted((out / "runs").glob("*.json"))
    return path, json.loads(path.read_text())


def test_a_pinned_run_is_recorded_and_keyed_under_its_pin(pinned_record):
    path, rec = pinned_record
    assert rec["provenance"]["cpu_kernels"] == "avx2" and rec["provenance"]["cpu_capability"] == "AVX2"
    cfg = resolve_config("synthetic", "gradient", "smoke", 0)
    assert rec["config_hash"] == store.config_hash(cfg, 1, "avx2") != store.config_hash(cfg, 1)
    assert store.check_record(rec, path.stem) is None


def test_a_pinned_record_is_rechecked_under_its_pin_and_strictly(pinned_record):
    _, rec = pinned_record
    assert cpu_kernels.in_effect() == "native"  # so the re-run goes to a pinned child process
    out = recheck(rec)
    assert out["ok"] and out["same_cpu_kernels"] is True and "note" not in out
    assert out["cpu_kernels"] == [["avx2", "AVX2"], ["avx2", "AVX2"]]
    assert max(out["max_difference"].values()) == 0.0  # bit for bit under the pin
    # a λ1 moved by less than the cross-CPU tolerance but more than the strict one is caught
    shift = (RECHECK_TOLERANCE["lambda1"] + cross_cpu_tolerance(rec)["lambda1"]) / 2
    moved = copy.deepcopy(rec)
    first = min(moved["history"], key=lambda h: h["step"])
    first["lambda1"] = first["lambda1"] + shift if first["lambda1"] < 0.5 else first["lambda1"] - shift
    bad = recheck(moved, first_rows=1)
    assert not bad["ok"] and bad["first_epoch_off"] == first["epoch"]
    assert bad["max_difference"]["lambda1"] == pytest.approx(shift, abs=1e-6)


def test_cli_pin_from_the_environment_and_bad_names(module_cache, tmp_path):
    env = cpu_kernels.environment_for("native")
    env.update(KDLIB_CACHE=str(module_cache), KDLIB_CPU_KERNELS="avx9")
    proc = _kdlib("run", "--dataset", "synthetic", "--methods", "gradient", "--seeds", "1", "--profile", "smoke",
                  "--out", str(tmp_path / "o"), "--no-progress", env=env)
    assert proc.returncode == 2 and "KDLIB_CPU_KERNELS" in proc.stderr and not (tmp_path / "o" / "runs").exists()
    proc = _kdlib("run", "--dataset", "synthetic", "--cpu-kernels", "avx9", "--out", str(tmp_path / "o"), env=env)
    assert proc.returncode == 2 and "--cpu-kernels" in proc.stderr
    if _has_avx2():  # only the pin's name in the environment: the command re-starts itself with the variables
        env["KDLIB_CPU_KERNELS"] = "avx2"
        proc = _kdlib("run", "--dataset", "synthetic", "--methods", "gradient", "--seeds", "1", "--profile",
                      "smoke", "--out", str(tmp_path / "p"), "--no-progress", env=env)
        assert proc.returncode == 0, proc.stderr
        (path,) = (tmp_path / "p" / "runs").glob("*.json")
        assert json.loads(path.read_text())["provenance"]["cpu_kernels"] == "avx2"
        # `kdlib recheck` too: a native record re-run under the pin the environment names (its first point)
        native = cpu_kernels.environment_for("native")
        native.update(KDLIB_CACHE=str(module_cache))
        proc = _kdlib("run", "--dataset", "synthetic", "--methods", "gradient", "--seeds", "1", "--profile",
                      "smoke", "--out", str(tmp_path / "n"), "--no-progress", env=native)
        assert proc.returncode == 0, proc.stderr
        (path,) = (tmp_path / "n" / "runs").glob("*.json")
        assert json.loads(path.read_text())["provenance"]["cpu_kernels"] == "native"
        proc = _kdlib("recheck", str(path), "--rows", "1", env=env)
        assert proc.returncode in (0, 1), proc.stderr  # across kernels a verdict, either way
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["cpu_kernels"][0][0] == "native" and out["cpu_kernels"][1] == ["avx2", "AVX2"]


def test_a_host_without_the_pinned_set_refuses_before_any_compute(pinned_record, monkeypatch):
    import torch

    from kdlib.experiments.recheck import rerun

    _, rec = pinned_record
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert not cpu_kernels.host_offers("avx2") and cpu_kernels.host_offers("native")
    with pytest.raises(cpu_kernels.PinError, match="pin 'avx2', which this host does not offer.*DEFAULT"):
        rerun(rec, first_rows=1)
