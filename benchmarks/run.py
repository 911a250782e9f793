"""Benchmark harness of issue 4: ``python -m benchmarks.run [--device cpu|cuda] [--quick] [--out FILE]``.

Prints ONE JSON object measured in one process (warm-up, then medians over repeats). Ratios are the figures to
read on a shared CPU; absolute seconds are only meaningful on an idle machine or a GPU. This file is the command
line; each measurement family is a module of this package (what it times: :mod:`benchmarks.fixtures`; how:
:mod:`benchmarks.timing`):

* ``plain_step_s[student]``: one distillation SGD step at fixed metaparameters (the floor);
* ``hypergrad_step_s[student][estimator]``: one full ``gradient``-schedule Tuner iteration (hypergradient,
  NaN-skip, clip, metaparameter step, then the SGD step), plus ``hypergrad_ratio`` to ``plain_step_s``
  (:mod:`benchmarks.hypergrad`);
* ``hypergrad_iteration``: issue 10's figure, the hypergradient iteration (estimator + real step) over a plain
  step on the CIFAR-10 student at the paper's SGD lr 1.0, one thread, the loop before issue 10 vs
  ``Tuner.train_step`` (one shared forward) (:mod:`benchmarks.tuner`);
* ``paper_column_cifar10_reduced``: the paper-protocol reduced CIFAR-10 column (6 methods x 10 runs x 50
  epochs) projected from one timed epoch per method at the paper's sizes, per evaluation cadence, 1 and 2 workers
  (:mod:`benchmarks.column`);
* ``fanout_cpu``: plain-step throughput of 1 process, 2 concurrent processes and 1 process with 2 threads (what
  ``--workers 2`` buys on this machine) (:mod:`benchmarks.fanout`);
* ``stacked_runs``: S fixed-metaparameter runs (and S gradient-schedule runs) as one stacked (vmapped) model vs
  one by one, on CPU (the GPU figures are still to be taken) (:mod:`benchmarks.engines`);
* ``tuner_step_s[sgd|adam]``: a :class:`kdlib.Tuner` iteration (fixed; gradient schedule with the unrolled
  and finite-difference estimators through that optimizer; ``*_after_backward``: the same estimators placed after
  the loop's backward, ``placement="after_backward"``; ``*_after_backward_train_step``: ``Tuner.train_step`` in
  that placement) against a plain step, on the CIFAR-10 student, by wall time and (CPU) by the thread's CPU
  time on one intra-op thread (``*_over_plain_thread_time``, robust to a loaded machine) (:mod:`benchmarks.tuner`);
* ``profile``: where the time of one unrolled iteration goes on the CIFAR-10 student (top ops)
  (:mod:`benchmarks.hypergrad`);
* ``run_s[method]``: a short whole run per method (CIFAR-10 student, same epochs), ratios
  ``proposed/gradient`` and ``gradient/no_distillation``; hyperopt counted in full trainings (:mod:`benchmarks.runs`);
* ``estimator_error[student][estimator]``: cosine similarity and relative error against ``unrolled`` steps=1
  on the same batches (:mod:`benchmarks.hypergrad`);
* ``teacher_s``: kdlib.teachers first (trains) vs cached call on a small fabricated dataset, temp cache
  (:mod:`benchmarks.data`);
* ``batches_per_s``: ``ArraySplit.batches`` against a ``DataLoader(TensorDataset)`` on the same tensors
  (:mod:`benchmarks.data`);
* ``synthetic_column_s``: the six methods x 10 seeds x 2,000 iterations on the batched engine vs the authors'
  18.5/84/59/125 s (~330 s in all; they had no naive/random timings, see ``authors_reference_s``)
  (:mod:`benchmarks.engines`);
* ``machine``: platform, CPU count, torch version, threads, device name.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.column import bench_column, measured_column
from benchmarks.data import bench_batching, bench_teacher
from benchmarks.engines import bench_stacked, bench_synthetic_column
from benchmarks.fanout import bench_fanout
from benchmarks.fixtures import make_students
from benchmarks.hypergrad import bench_estimator_error, bench_steps, profile_unrolled
from benchmarks.runs import bench_runs
from benchmarks.timing import Timer, rounded
from benchmarks.tuner import bench_iteration, bench_tuner_step

TARGETS = {
    "unrolled_over_plain_cifar10_cpu": "<= 2.5",
    "proposed_over_gradient": "<= 0.6",
    "teacher_first_over_cached": ">= 50",
    "kdlib_batching_over_dataloader": ">= 5",
    "synthetic_column_speedup": ">= 50",
    "unrolled_iteration_over_plain": "<= 3.0",
    "finite_difference_iteration_over_plain": "<= 3.0",
    "reduced_cifar10_column_h_2_workers": "<= 1.0",
}


def machine(device: torch.device) -> dict[str, Any]:
    """Where the benchmark ran: platform, Python, CPU count and capability, torch, threads, device, load average."""
    name = platform.processor() or platform.machine()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    return dict(platform=platform.platform(), python=sys.version.split()[0], cpu_count=os.cpu_count(),
                torch=torch.__version__, cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
                threads=torch.get_num_threads(), device=str(device), device_name=name,
                load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="shrink everything (< 60 s on 2 cores)")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    p.add_argument("--no-real-data", action="store_true", help="always use fabricated image tensors")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    device = torch.device(a.device)
    if a.quick:  # schema smoke run: one thread avoids OpenMP barrier stalls on a shared, loaded machine
        torch.set_num_threads(1)
    allow_real = not (a.quick or a.no_real_data)
    t_start = time.perf_counter()
    timer = Timer(device)
    result: dict[str, Any] = {"schema": 1, "quick": bool(a.quick), "machine": machine(device)}
    students = make_students(device, a.quick, allow_real)
    result["students"] = {k: v["source"] for k, v in students.items()}
    plain, hyper, ratio, errors = bench_steps(students, timer, a.quick)
    result.update(plain_step_s=plain, hypergrad_step_s=hyper, hypergrad_ratio=ratio)
    if errors:
        result["estimator_failures"] = errors
    result["hypergrad_iteration"] = bench_iteration(students, timer, a.quick)
    result["tuner_step_s"] = bench_tuner_step(students, timer, a.quick)
    result["profile"] = {"cifar10_unrolled": profile_unrolled(students, a.quick)} if device.type == "cpu" else {}
    result.update(bench_runs(device, a.quick, allow_real))
    result["fanout_cpu"] = bench_fanout(a.quick) if device.type == "cpu" else {"skipped": "a GPU run"}
    col_proj = bench_column(device, a.quick, allow_real)
    scaling = result["fanout_cpu"].get("scaling", {}).get("two_processes")
    if scaling:  # two workers at the throughput this machine actually gives two concurrent processes
        col_proj["column_two_workers_at_measured_fanout_h"] = {
            k: rounded(v / scaling, 4) for k, v in col_proj["column_one_worker_h"].items()}
    col_proj["measured_end_to_end"] = measured_column()
    result["paper_column_cifar10_reduced"] = col_proj
    result["stacked_runs"] = bench_stacked(device, a.quick)
    result["estimator_error"] = bench_estimator_error(students, a.quick)
    result["teacher_s"] = bench_teacher(a.quick)
    result["batches_per_s"] = bench_batching(a.quick)
    result["synthetic_column_s"] = bench_synthetic_column(device, a.quick)
    col = result["synthetic_column_s"]
    result["targets"] = {
        k: dict(target=v, measured=m) for k, v, m in (
            ("unrolled_over_plain_cifar10_cpu", TARGETS["unrolled_over_plain_cifar10_cpu"],
             ratio.get("cifar10", {}).get("unrolled")),
            ("proposed_over_gradient", TARGETS["proposed_over_gradient"], result["run_ratios"]["proposed/gradient"]),
            ("teacher_first_over_cached", TARGETS["teacher_first_over_cached"], result["teacher_s"]["ratio"]),
            ("kdlib_batching_over_dataloader", TARGETS["kdlib_batching_over_dataloader"],
             result["batches_per_s"]["in_order"]["ratio"]),
            ("synthetic_column_speedup", TARGETS["synthetic_column_speedup"], col["speedup_vs_authors"]["total"]),
            ("unrolled_iteration_over_plain", TARGETS["unrolled_iteration_over_plain"],
             result["hypergrad_iteration"]["over_plain"]["unrolled_train_step"]),
            ("finite_difference_iteration_over_plain", TARGETS["finite_difference_iteration_over_plain"],
             result["hypergrad_iteration"]["over_plain"]["finite_difference_train_step"]),
            ("reduced_cifar10_column_h_2_workers", TARGETS["reduced_cifar10_column_h_2_workers"],
             result["paper_column_cifar10_reduced"]["column_two_workers_h"]["eval_every_5"]),
            ("reduced_cifar10_column_h_2_workers_at_measured_fanout", TARGETS["reduced_cifar10_column_h_2_workers"],
             result["paper_column_cifar10_reduced"].get("column_two_workers_at_measured_fanout_h", {}).get(
                 "eval_every_5")),
            ("reduced_cifar10_column_h_2_workers_measured", TARGETS["reduced_cifar10_column_h_2_workers"],
             result["paper_column_cifar10_reduced"]["measured_end_to_end"].get("busy_h")))
        if m is not None}
    result["total_benchmark_s"] = rounded(time.perf_counter() - t_start, 4)
    result["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["machine"]["note"] = ("shared machine: the load averages (1, 5, 15 min) at start and end are recorded; only "
                                 "ratios measured in the same run are meaningful, absolute seconds are not")
    text = json.dumps(result, indent=1, sort_keys=False)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        with open(a.out, "w") as fh:
            fh.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
