"""Hypergradient estimators (:mod:`kdlib.hypergrad`): what one costs and how far it is from the exact one.

* ``plain_step_s`` / ``hypergrad_step_s`` / ``hypergrad_ratio`` (:func:`bench_steps`): a plain distillation step
  against one ``gradient``-schedule Tuner iteration per estimator, per student;
* ``estimator_error`` (:func:`bench_estimator_error`): cosine and relative error of each estimator against the
  exact greedy hypergradient of eq. (3) (``unrolled``, steps=1) on the same batches;
* ``profile`` (:func:`profile_unrolled`): where the time of an unrolled hypergradient goes (top ops).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.fixtures import plain_step, train_step_iteration
from benchmarks.timing import Timer, quiet, rounded
from kdlib.hypergrad import hypergradient
from kdlib.tuner import Tuner

ESTIMATOR_SPECS = {  # name -> (kdlib.hypergrad method, steps)
    "unrolled": ("unrolled", 1),
    "unrolled_k3": ("unrolled", 3),
    "finite_difference": ("finite_difference", 1),
    "neumann": ("neumann", 1),
    "forward": ("forward", 1),
}


def bench_steps(students, timer: Timer, quick: bool) -> tuple[dict, dict, dict, dict]:
    """Per student: the plain step, one ``Tuner.train_step`` iteration per estimator of :data:`ESTIMATOR_SPECS`,
    their ratio to the plain step, and the estimators that failed (reported, not fatal)."""
    plain, hyper, ratio, errors = {}, {}, {}, {}
    repeats = 3 if quick else 7
    for name, s in students.items():
        reps = repeats * (5 if name == "synthetic" else 1)
        torch.manual_seed(0)
        model = s["make"]()
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        lam = torch.tensor([0.5, 2.0], device=s["train"][0].device)
        plain[name] = rounded(timer.median(lambda: plain_step(model, opt, s["train"], lam), reps, warmup=2))
        hyper[name], ratio[name] = {}, {}
        for est, (method, steps) in ESTIMATOR_SPECS.items():
            if quick and est in ("unrolled_k3", "forward", "neumann") and name != "synthetic":
                continue
            tuner = Tuner(opt, init=(0.5, 2.0), schedule="gradient", estimator=method, steps=steps,
                          t_val=s["t_val"])
            try:
                with quiet():
                    t = timer.median(lambda tuner=tuner: train_step_iteration(model, opt, tuner, s), reps, warmup=1)
            except Exception as exc:  # noqa: BLE001 - an estimator that fails here is reported, not fatal
                errors[f"{name}/{est}"] = f"{type(exc).__name__}: {exc}"[:300]
                continue
            hyper[name][est] = rounded(t)
            ratio[name][est] = rounded(t / plain[name], 4)
    return plain, hyper, ratio, errors


def bench_estimator_error(students, quick: bool) -> dict[str, Any]:
    """Per student and estimator: the mean cosine and relative error against ``unrolled`` steps=1."""
    out: dict[str, Any] = {}
    for name in ("synthetic", "cifar10"):
        s = students[name]
        torch.manual_seed(0)
        model = s["make"]()
        batches = s.get("batches", [s["train"]])[: (1 if quick else 3)]
        lams = [torch.tensor([0.5, 2.0]), torch.tensor([0.2, 5.0])][: (1 if quick else 2)]
        acc: dict[str, list[tuple[float, float]]] = {}
        for batch in batches:
            for lam in lams:
                lam = lam.to(batch[0].device)
                ref = hypergradient(model, batch, s["val"], lam, 0.1, t_val=s["t_val"], method="unrolled")
                for est, (method, steps) in ESTIMATOR_SPECS.items():
                    if est == "unrolled" or (quick and est in ("unrolled_k3", "forward", "neumann")
                                             and name != "synthetic"):
                        continue
                    try:
                        with quiet():
                            g = hypergradient(model, batch, s["val"], lam, 0.1, t_val=s["t_val"], method=method,
                                              steps=steps)
                    except Exception:  # noqa: BLE001 - reported by bench_steps
                        continue
                    cos = float(torch.nn.functional.cosine_similarity(g.double(), ref.double(), dim=0))
                    rel = float((g - ref).norm() / ref.norm().clamp_min(1e-30))
                    acc.setdefault(est, []).append((cos, rel))
        out[name] = {est: dict(cosine=rounded(float(np.mean([c for c, _ in v])), 5),
                               rel_error=rounded(float(np.mean([r for _, r in v])), 4), n=len(v))
                     for est, v in acc.items()}
    out["reference"] = "unrolled, steps=1 (exact greedy hypergradient, eq. 3), lr=0.1, same batches"
    return out


def profile_unrolled(students, quick: bool) -> dict[str, Any]:
    """Top ops (self CPU time) of unrolled iterations on the CIFAR-10 student, and a coarse split."""
    s = students["cifar10"]
    torch.manual_seed(0)
    model = s["make"]()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lam = torch.tensor([0.5, 2.0], device=s["train"][0].device)
    n = 2 if quick else 5
    timer = Timer(s["train"][0].device)
    t_plain = timer.median(lambda: plain_step(model, opt, s["train"], lam), n)
    t_hg = timer.median(lambda: hypergradient(model, s["train"], s["val"], lam, 0.1, t_val=1.0,
                                              method="unrolled"), n)
    t_fwd = timer.median(lambda: model(s["train"][0]), n)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            hypergradient(model, s["train"], s["val"], lam, 0.1, t_val=1.0, method="unrolled")
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1.0
    return dict(
        forward_s=rounded(t_fwd), plain_step_s=rounded(t_plain), unrolled_hypergradient_call_s=rounded(t_hg),
        hypergradient_over_plain=rounded(t_hg / t_plain, 4),
        top_ops=[dict(op=e.key, self_cpu_share=rounded(e.self_cpu_time_total / total, 3), calls=int(e.count) // n)
                 for e in rows])
