"""Smoke test of the benchmark harness: ``python -m benchmarks.run --quick`` prints one JSON object with the
documented schema (keys, types, positive numbers). Timings themselves are not checked."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _all_positive(d: dict) -> None:
    assert d, "empty mapping"
    for k, v in d.items():
        if isinstance(v, dict):
            _all_positive(v)
        else:
            assert _positive(v), (k, v)


def test_quick_benchmark_schema(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)  # stdout is exactly one JSON object
    assert json.loads(out.read_text()) == printed
    r = printed
    for key in ("machine", "plain_step_s", "hypergrad_step_s", "hypergrad_ratio", "run_s", "run_ratios",
                "estimator_error", "teacher_s", "batches_per_s", "synthetic_column_s", "targets", "students"):
        assert key in r, key
    m = r["machine"]
    for key in ("platform", "cpu_count", "torch", "cpu_capability", "threads", "device", "device_name"):
        assert key in m, key
    students = ("synthetic", "fashion_mnist", "cifar10")
    for s in students:
        assert _positive(r["plain_step_s"][s])
        assert {"unrolled", "finite_difference"} <= set(r["hypergrad_step_s"][s])
        _all_positive(r["hypergrad_step_s"][s])
        _all_positive(r["hypergrad_ratio"][s])
    from kdlib.hypergrad import METHODS

    # every estimator kdlib.hypergrad offers is timed (at least on the synthetic student)
    assert set(METHODS) <= set(r["hypergrad_step_s"]["synthetic"])
    for method in ("no_distillation", "naive", "random", "gradient", "hyperopt", "proposed"):
        assert _positive(r["run_s"][method])
    _all_positive(r["run_ratios"])
    assert r["run_info"]["hyperopt"]["full_trainings"] >= 2
    for name in ("synthetic", "cifar10"):
        for est, e in r["estimator_error"][name].items():
            assert -1.0 - 1e-6 <= e["cosine"] <= 1.0 + 1e-6 and e["rel_error"] >= 0, (name, est, e)
    t = r["teacher_s"]
    assert _positive(t["first_s"]) and _positive(t["cached_s"]) and _positive(t["ratio"])
    assert t["identical_logits"] is True
    for k in ("in_order", "shuffled"):
        _all_positive(r["batches_per_s"][k])
    col = r["synthetic_column_s"]
    assert set(col["per_method_s"]) == {"no_distillation", "naive", "random", "gradient", "hyperopt", "proposed"}
    _all_positive(col["per_method_s"])
    assert _positive(col["total_s"]) and _positive(col["speedup_vs_authors"]["total"])
    assert col["scale"]["seeds"] == 10 and col["scale"]["iterations"] >= 1
    fan = r["fanout_cpu"]
    assert "skipped" in fan or (_positive(fan["steps_per_s"]["one_process"]) and len(fan["steps_per_s"][
        "two_processes_each"]) == 2 and fan["scaling"]["two_processes"] > 0)
    for k, v in r["targets"].items():
        assert "target" in v and _positive(v["measured"]), (k, v)
