"""The student's step one by one and stacked at the paper profile, per image dataset (``tools/gpu_check.py``'s
stage 3).

Per variant of :data:`VARIANTS`, the step one by one (:func:`kdlib.train.train_student`, the Tuner's
shared-forward step) and stacked (:func:`kdlib.train.train_students_stacked`, ``seeds`` runs as one vmapped
model), fixed metaparameters and tuned (gradient and proposed, with the finite difference of the authors' protocol
and with the unrolled estimator), at the paper profile's student and batch size on random tensors of the dataset's
shapes (the real data cannot travel to a device machine; a step's cost does not depend on the pixel values).
Each time is a difference of two whole training runs through the loop, of N1 and N2 steps, after a warm-up run:
``step = (T(N2) - T(N1)) / (N2 - N1)``, timed with CUDA events (and the wall clock), so that the loop's own
per-step work (batch slicing, stacking) is in it and the set-up and the one evaluation at the end of each run
cancel; ``eval = T(N1) - N1 * step`` is the cost of one evaluation on the paper-size test and validation sets
(plus the run's set-up). The same pair of runs under ``torch.profiler`` gives the device's busy time per step
(:meth:`benchmarks.timing.Clock.busy`) and the ``busy fraction = busy time per step / step``; under
``torch.cuda.set_sync_debug_mode("warn")`` it counts the host synchronisations per step. Peak memory is that of
the N2 run. A stacked variant the engine does not implement is reported as ``unsupported`` with the engine's
reason. N1 = 5, N2 = 25: the 20 steps between them are one whole cycle of Algorithm 1 (e1 + e2 = 20), so the
proposed method's step is its mean over both phases.

kdlib is imported inside the functions, so that ``tools/gpu_check.py``'s parent process starts without kdlib's
dependencies (each of its stages is a child process, and a missing package fails that stage, not the run).
"""
from __future__ import annotations

import time
import traceback
from typing import Any, Callable

import torch

from benchmarks.timing import Clock

# variant -> (method, protocol, estimator override): what one step of each Table 2 method costs
VARIANTS: dict[str, tuple[str, str, str | None]] = {
    "fixed": ("naive", "authors", None),  # no distillation, naive, random and every hyperopt trial
    "gradient_fd": ("gradient", "authors", None),  # the authors' protocol: finite difference, per-epoch reset, KL
    "proposed_fd": ("proposed", "authors", None),
    "gradient_unrolled": ("gradient", "defaults", "unrolled"),  # the paper's defaults with the exact estimator
    "proposed_unrolled": ("proposed", "defaults", "unrolled"),
}


def _sizes(dataset: str, dry: bool) -> dict[str, Any]:
    from kdlib.experiments.profiles import PAPER_IMAGES

    n = PAPER_IMAGES[dataset]
    if dry:
        return dict(n_val=16, n_test=16, n1=1, n2=2, repeats=1, batch_size=8)
    return dict(n_val=n // 10, n_test=10_000, n1=5, n2=25, repeats=2, batch_size=None)


def variant_config(dataset: str, variant: str, seed: int, device_name: str, batch_size: int | None = None):
    """The paper profile's config of ``variant`` (:data:`VARIANTS`) on ``dataset``: one epoch, lr 0.1 (random data
    stay finite; a step's cost does not depend on the lr), ``batch_size`` when given."""
    from kdlib.experiments.protocol import authors_protocol
    from kdlib.experiments.profiles import resolve_config

    method, protocol, estimator = VARIANTS[variant]
    over: dict[str, Any] = dict(authors_protocol(method, dataset)) if protocol == "authors" else {}
    if estimator is not None:
        over["estimator"] = estimator
    over.update(epochs=1, lr=0.1, lr_step_epochs=None, eval_every=1, device=device_name)
    if batch_size:
        over["batch_size"] = batch_size
    return resolve_config(dataset, method, "paper", seed=seed, **over)


def bench_step_times(dataset: str, device_name: str, seeds: int, dry: bool,
                     log: Callable[[str], None],
                  flush: Callable[[dict[str, Any]], None] = lambda partial: None) -> dict[str, Any]:
    """Step times of every variant, one by one and stacked, on ``dataset``'s shapes (module docstring);
    ``flush(partial)`` after each measurement, so that a run stopped at its time box keeps what it measured."""
    from kdlib.data import CIFAR_MEAN, CIFAR_STD, FMNIST_MEAN, FMNIST_STD
    from kdlib.data.augment import FlipCrop
    from kdlib.methods import fixed_tuner, get_method
    from kdlib.models import make_student
    from kdlib.train import Problem, Split, make_tuner, train_student, train_students_stacked

    device = torch.device(device_name)
    clock = Clock(device)
    sz = _sizes(dataset, dry)
    shape = (1, 28, 28) if dataset == "fashion_mnist" else (3, 32, 32)
    g = torch.Generator().manual_seed(0)

    def draw(n: int, teacher: bool) -> Split:
        x = torch.randn(n, *shape, generator=g).to(device)
        y = torch.randint(0, 10, (n,), generator=g).to(device)
        return Split(x, y, (3 * torch.randn(n, 10, generator=g)).to(device) if teacher else None)

    def config(variant: str, seed: int):
        return variant_config(dataset, variant, seed, device_name, sz["batch_size"])

    cfg0 = config("fixed", 0)
    bs = int(cfg0.batch_size)
    val, test = draw(sz["n_val"], False), draw(sz["n_test"], False)
    trains = {n: draw(n * bs, True) for n in (sz["n1"], sz["n2"])}

    mean, std = (FMNIST_MEAN, FMNIST_STD) if dataset == "fashion_mnist" else (CIFAR_MEAN, CIFAR_STD)
    augment = FlipCrop.for_normalization(mean, std)  # full CIFAR-10's tuned variants train on augmented batches

    def problem(n: int) -> Problem:
        return Problem(train=trains[n], val=val, test=test, make_student=lambda: make_student(dataset),
                       augment=augment)

    def one_call(variant: str, engine: str) -> Callable[[int], Any]:
        method = VARIANTS[variant][0]
        m = get_method(method)
        if engine == "one_by_one":
            cfg = config(variant, 0)
            init = m.initial(cfg)
            if variant == "fixed":
                return lambda n: train_student(cfg, problem(n), fixed_tuner(init))
            return lambda n: train_student(cfg, problem(n), lambda o, s: make_tuner(s, o, init, m.schedule))
        cfgs = [config(variant, s) for s in range(seeds)]
        values = torch.stack([m.initial(c).detach().float().cpu() for c in cfgs])
        schedule = "fixed" if variant == "fixed" else m.schedule
        return lambda n: train_students_stacked(cfgs, problem(n), values, schedule=schedule)

    out: dict[str, Any] = dict(setup=dict(
        dataset=dataset, device=device_name, student=type(make_student(dataset)).__name__, batch_size=bs,
        input_shape=list(shape), seeds_stacked=seeds, n1=sz["n1"], n2=sz["n2"], repeats=sz["repeats"],
        n_val=sz["n_val"], n_test=sz["n_test"], data="random tensors of the dataset's shapes",
        lr="0.1 (random data; the cost of a step does not depend on it)"), variants={})
    n1, n2 = sz["n1"], sz["n2"]
    for variant in VARIANTS:
        out["variants"][variant] = {}
        for engine in ("one_by_one", "stacked"):
            t0 = time.monotonic()
            try:
                run = one_call(variant, engine)
                if not dry:
                    run(n1)  # warm-up: cuDNN's choices, allocations, vmap's first trace
                t1s, t2s, w1s, w2s = [], [], [], []
                peak = None
                for _ in range(sz["repeats"]):
                    e1, w1 = clock.time(lambda: run(n1))
                    if clock.cuda:
                        torch.cuda.reset_peak_memory_stats()
                    e2, w2 = clock.time(lambda: run(n2))
                    if clock.cuda:
                        peak = torch.cuda.max_memory_allocated() / 2**20
                    t1s.append(e1), t2s.append(e2), w1s.append(w1), w2s.append(w2)
                step = (min(t2s) - min(t1s)) / (n2 - n1)
                step_wall = (min(w2s) - min(w1s)) / (n2 - n1)
                res: dict[str, Any] = dict(step_ms=round(1e3 * step, 4), step_ms_wall=round(1e3 * step_wall, 4),
                                           eval_s=round(max(min(t1s) - n1 * step, 0.0), 5),
                                           run_s=dict(n1=[round(t, 5) for t in t1s], n2=[round(t, 5) for t in t2s]),
                                           peak_memory_mib=None if peak is None else round(peak, 1),
                                           noisy=bool(step <= 0 or step_wall <= 0))  # a difference lost in noise
                try:  # the profiler's reading is extra: its failure keeps the step time
                    b1, b2 = clock.busy(lambda: run(n1)), clock.busy(lambda: run(n2))
                    if b1 is not None and b2 is not None:
                        busy = (b2 - b1) / (n2 - n1)
                        res.update(busy_ms_per_step=round(1e3 * busy, 4),
                                   busy_fraction=round(busy / step, 4) if step > 0 else None)
                except Exception as exc:  # noqa: BLE001
                    res["busy_error"] = f"{type(exc).__name__}: {exc}"[:300]
                try:
                    s1, s2 = clock.syncs(lambda: run(n1)), clock.syncs(lambda: run(n2))
                    if s1 is not None and s2 is not None:
                        res["syncs_per_step"] = round((s2 - s1) / (n2 - n1), 3)
                except Exception as exc:  # noqa: BLE001
                    res["syncs_error"] = f"{type(exc).__name__}: {exc}"[:300]
                res["seconds"] = round(time.monotonic() - t0, 2)
                log(f"  {dataset} {variant:17s} {engine:10s} step {res['step_ms']:9.3f} ms"
                    + (f", busy {res['busy_fraction']}" if res.get("busy_fraction") is not None else "")
                    + (f", syncs/step {res['syncs_per_step']}" if "syncs_per_step" in res else ""))
            except Exception as exc:  # noqa: BLE001 - a measurement reports its error, the others still run
                if engine == "stacked" and isinstance(exc, ValueError) and "stacked" in str(exc):
                    res = dict(unsupported=str(exc)[:400])  # the stacked engine says what it does not implement
                    log(f"  {dataset} {variant:17s} {engine:10s} unsupported: {str(exc)[:100]}")
                    out["variants"][variant][engine] = res
                    flush(out)
                    continue
                res = dict(error=f"{type(exc).__name__}: {exc}"[:600], traceback=traceback.format_exc()[-2000:])
                log(f"  {dataset} {variant:17s} {engine:10s} ERROR {type(exc).__name__}: {str(exc)[:200]}")
            out["variants"][variant][engine] = res
            flush(out)
    return out
