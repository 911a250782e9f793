"""The benchmark's JSON (``python -m benchmarks.run``) for a reader: its targets, measured against the goals."""
from __future__ import annotations

import operator
from typing import Any

import pandas as pd

_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


def target_met(target: str, measured: float | None) -> bool | None:
    """``"<= 3.0"`` against ``measured``; None when either side is missing or not of that form."""
    parts = str(target).split()
    if measured is None or len(parts) != 2 or parts[0] not in _OPS:
        return None
    return bool(_OPS[parts[0]](float(measured), float(parts[1])))


TARGET_LABELS = {
    "unrolled_over_plain_cifar10_cpu": "unrolled hypergradient step / plain step (CIFAR-10 student)",
    "proposed_over_gradient": "proposed / gradient-based, whole run",
    "teacher_first_over_cached": "teacher: first call / cached call",
    "kdlib_batching_over_dataloader": "kdlib batching / DataLoader, batches per second",
    "synthetic_column_speedup": "synthetic column: authors' time / ours",
    "unrolled_iteration_over_plain": "unrolled iteration (estimator + real step) / plain step",
    "finite_difference_iteration_over_plain": "finite-difference iteration (estimator + real step) / plain step",
    "reduced_cifar10_column_h_2_workers": "reduced CIFAR-10 paper column, hours, 2 workers (projected, ideal)",
    "reduced_cifar10_column_h_2_workers_at_measured_fanout":
        "reduced CIFAR-10 paper column, hours, 2 workers (projected at the measured fan-out)",
    "reduced_cifar10_column_h_2_workers_measured": "reduced CIFAR-10 paper column, hours, 2 workers (measured, CLI)",
}


def targets_table(bench: dict[str, Any]) -> pd.DataFrame:
    """One row per target of a benchmark run: what, goal, measured, met (yes / no / -)."""
    rows = []
    for name, t in (bench.get("targets") or {}).items():
        met = target_met(t.get("target"), t.get("measured"))
        rows.append({"target": TARGET_LABELS.get(name, name.replace("_", " ")), "goal": t.get("target"), "measured": t.get("measured"),
                     "met": "-" if met is None else ("yes" if met else "no")})
    return pd.DataFrame(rows, columns=["target", "goal", "measured", "met"])


def machine_text(bench: dict[str, Any]) -> str:
    """Where and how a benchmark ran: platform, torch, threads, device and the load average at its start."""
    m = bench.get("machine") or {}
    load = m.get("load_average") or []
    return (f"{m.get('device', '?')} ({m.get('device_name', '?')}), {m.get('cpu_count', '?')} cores, torch "
            f"{m.get('torch', '?')}, {m.get('threads', '?')} thread(s)"
            + (f", load average {load[0]:.1f} at the start" if load else "")
            + ("" if not bench.get("quick") else "; quick mode (schema and ratios only)"))
