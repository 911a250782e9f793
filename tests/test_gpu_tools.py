"""tools/gpu_check.py and tools/gpu_stage.py on the CPU: the GPU check's dry run writes its JSON with every stage,
its projection counts the paper's protocol exactly, and the staging writes data kdlib reads back, checks wheels'
requirements and measures what travels to the device machine."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.cuda_graphs import GRAPH_VARIANTS
from benchmarks.step_times import VARIANTS
from conftest import make_cifar_npz

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load("gpu_check")
gpu_stage = _load("gpu_stage")


def test_gpu_check_dry_run_writes_every_stage(tmp_path):
    """The dry run CI runs (``--device cpu``): one folder, flat, with the JSON of every stage; the cuda-marked tests
    skip, the step times of each variant and engine are there (or the stacked engine's reason), and without the
    data the column is only planned, the random baseline in an invocation of its own (its own random_law)."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--device", "cpu", "--out", str(out),
                           "--datasets", "fashion_mnist"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu_check.log", "pytest-cuda.xml", "results-cuda.json"]  # no folders, under the 8-file limit
    r = json.loads((out / "results-cuda.json").read_text())
    assert r["dry_run"] is True and r["errors"] == []
    assert {k: v["status"] for k, v in r["stages"].items()} == dict.fromkeys(
        ["environment", "tests", "step_times", "projection", "graphs", "tuner", "column"], "ok")
    env_ = r["environment"]
    assert env_["torch"] and env_["python"] and env_["tf32"] == {"cudnn": False, "matmul": False}
    assert env_["tf32_setting"] == r["tf32"] == "off"
    assert env_["packages"]["hyperopt"] and env_["packages"]["higher"]
    t = r["tests"]
    assert t["status"] == "ok" and t["failed"] == [] and t["skipped"] >= 30 and t["passed"] >= 2
    variants = r["step_times"]["fashion_mnist"]["variants"]
    assert set(variants) == set(VARIANTS)
    for name, engines in variants.items():
        assert "step_ms" in engines["one_by_one"], (name, engines)
        stacked = engines["stacked"]
        assert "step_ms" in stacked or "unsupported" in stacked, (name, stacked)
        assert "error" not in stacked
    for name in VARIANTS:  # the stacked engine implements every variant, the authors' FD ones included
        assert "step_ms" in variants[name]["stacked"]
    # stage 5 through the graphs' CPU stand-in: the same static-buffer path, bit-equal to the eager stacked step
    graphs = r["graphs"]["fashion_mnist"]
    assert graphs["complete"] and graphs["setup"]["capturer"] == "StandIn (CPU)"
    assert set(graphs["variants"]) == set(GRAPH_VARIANTS)
    for name, res in graphs["variants"].items():
        assert res["bit_identical"] is True and res["capturer"]["captures"] >= 1, (name, res)
        assert res["eager_step_ms"] > 0 and res["graphed_step_ms"] > 0 and res["graphed_speedup"] > 0
    # stage 6: benchmarks.tuner.bench_tuner_step on the device, issue 22's ratios gathered
    issue22 = r["tuner"]["issue_22"]
    assert r["tuner"]["complete"] and set(issue22["after_backward_over_plain"]) == {"unrolled", "finite_difference"}
    assert all(v > 1 for v in issue22["after_backward_over_plain"].values())
    proj = r["projection"]
    assert set(proj["table2_min"]) == {"one_by_one", "today", "all_stacked"}
    assert set(proj["per_column"]["fashion_mnist"]["per_method"]) == {
        "no_distillation", "naive", "random", "gradient", "hyperopt", "proposed"}
    col = r["column"]
    assert col["status"] == "planned" and "not found" in col["reason"]
    assert [i["methods"] for i in col["invocations"]] == [["gradient"], ["no_distillation", "naive"], ["random"],
                                                          ["proposed"], ["hyperopt"]]
    assert all(i["planned_runs"] == 2 * len(i["methods"]) for i in col["invocations"])
    random_cmd = next(i["command"] for i in col["invocations"] if i["methods"] == ["random"])
    assert "--set=random_law=authors" in random_cmd and "--set=engine=stacked" in random_cmd
    assert "tf32" not in random_cmd  # TF32 off: the runs' default, their keys unchanged


def test_tf32_is_one_setting_passed_to_the_runs_and_refused_on_the_cpu(tmp_path):
    """``--tf32 on`` reaches the column's runs as their config field (and nothing process-wide is set); on the CPU
    it is refused before anything runs."""
    cmd = gpu_check.column_command(("gradient",), tmp_path, "cuda", 1, True, tf32=True)
    assert "--set=tf32=True" in cmd and cmd[1:3] == ["-m", "kdlib"]
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--device", "cpu", "--tf32", "on",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "--tf32 on" in proc.stderr and not (tmp_path / "out").exists()


def test_stage_data_reads_back_through_kdlib(tmp_path, monkeypatch):
    """The staged data root holds kdlib's npz cache (LZMA-zipped) of at most the first 12,800 training images, the
    test set and the verified teacher logits; kdlib reads it back equal to the source."""
    src = tmp_path / "src"
    (xtr, ytr), (xte, yte) = make_cifar_npz(src, n_train=30, n_test=12, random_pixels=True)
    logits = src / "authors" / "teacher_logits" / "logits_resnet.npy"
    logits.parent.mkdir(parents=True)
    np.save(logits, np.random.default_rng(0).normal(size=(30, 10)).astype(np.float32))
    entry = gpu_stage.AUTHORS_LOGITS["authors_resnet"]
    monkeypatch.setitem(gpu_stage.AUTHORS_LOGITS, "authors_resnet",
                        entry._replace(sha256=hashlib.sha256(logits.read_bytes()).hexdigest(), rows=30))
    dest = tmp_path / "stage" / "data"
    rep = gpu_stage.stage_data(src, dest)
    assert rep["train_images"] == 30 and rep["test_images"] == 12
    with zipfile.ZipFile(dest / "cifar10" / "train.npz") as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_LZMA}
    from kdlib.data.sources import clear_memo, load_raw

    clear_memo()
    arrays, _ = load_raw("cifar10_reduced", dest)
    assert np.array_equal(arrays["train"][0], xtr) and np.array_equal(arrays["test"][1], yte)
    assert (dest / "authors" / "teacher_logits" / "logits_resnet.npy").read_bytes() == logits.read_bytes()
    monkeypatch.setitem(gpu_stage.AUTHORS_LOGITS, "authors_resnet", entry)  # the real hash: the fake is refused
    with pytest.raises(Exception, match="SHA-256"):
        gpu_stage.stage_data(src, tmp_path / "other")


def test_wheel_requirements_and_device_packages(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("demo-1.0.dist-info/METADATA", "\n".join([
            "Metadata-Version: 2.1", "Name: demo", "Requires-Dist: numpy (>=1.17)", "Requires-Dist: Py4J",
            "Requires-Dist: typing_extensions; python_version < \"3.8\"", "Requires-Dist: pytest; extra == \"dev\"",
            "Requires-Dist: cloud.pickle>=1.2"]))
    assert gpu_stage.requires(wheel) == ["numpy", "py4j", "cloud-pickle"]
    pkgs = gpu_stage.device_packages()
    assert {"torch", "numpy", "scipy", "networkx", "cloudpickle", "tqdm"} <= pkgs
    assert "hyperopt" not in pkgs and "higher" not in pkgs  # what the wheels bring
    assert gpu_stage.device_packages(tmp_path / "absent.md") == gpu_stage.DEVICE_PACKAGES


def test_travel_size_counts_tracked_untracked_and_carried(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    (repo / "a.txt").write_bytes(b"x" * 100)
    subprocess.run(git + ["add", "a.txt"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "a"], cwd=repo, check=True)
    (repo / "b.txt").write_bytes(b"y" * 10)  # untracked, not ignored: travels
    assert not gpu_stage.ignored(repo)
    path = gpu_stage.exclude(repo)
    gpu_stage.exclude(repo)
    assert path.read_text().splitlines().count("/.gpu/") == 1 and gpu_stage.ignored(repo)
    assert gpu_stage.ignored(REPO)  # this repository's .gitignore: the staged folder is never committed
    (repo / ".gpu" / "data").mkdir(parents=True)
    (repo / ".gpu" / "data" / "f.bin").write_bytes(b"z" * 1000)
    t = gpu_stage.travel_bytes(repo, [".gpu"])
    assert (t["tracked_bytes"], t["untracked_not_ignored_bytes"], t["carried_bytes"]) == (100, 10, {".gpu": 1000})
    assert t["total_bytes"] == 1110 and t["fits"] and t["untracked_files"] == ["b.txt"]
    assert len(gpu_stage.commit_of(repo)) == 40  # clean: no "+dirty" (untracked files do not count)


def test_device_call_fits_the_tool_and_the_check_accepts_it():
    call = gpu_stage.device_call()
    assert call["command_chars"] <= 2000 and call["carry"] == [".gpu"]
    cmd = call["command"]
    budget = float(cmd.split("--budget-s")[1].split()[0])
    assert budget <= 8 * 60 and call["timeout_s"] >= budget + 60 and call["timeout_s"] <= 600
    assert "--target /tmp/site .gpu/whl/*.whl" in cmd and "KDLIB_DATA=$PWD/.gpu/data" in cmd
    assert "tools/gpu_check.py --device cuda --out \"$OUT\"" in cmd
