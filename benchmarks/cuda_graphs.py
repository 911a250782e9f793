"""The stacked step eager against the same step captured into CUDA graphs, per image dataset
(``tools/gpu_check.py``'s stage 5).

The stacked step eager (:mod:`kdlib.train.stacked`) against
the same step captured into CUDA graphs (:mod:`kdlib.train.stacked_graph`, ``engine="stacked_graph"``) for the
fixed step, the authors' finite difference and the unrolled estimator, ``--seeds`` runs at the paper's batch
size: both backends from the same seeds through the same steps (full batches and a shorter last batch, each
captured after its warm-up) and the largest difference of their weights and values (``bit_identical`` when
none), then the step time of each (CUDA events over 20 full-batch steps, the fastest of 2 rounds) and
``graphed_speedup`` = eager / graphed. The dry run takes the graphs' CPU stand-in (the same code, no graph).

kdlib is imported inside the function, so that ``tools/gpu_check.py``'s parent process starts without kdlib's
dependencies (each of its stages is a child process, and a missing package fails that stage, not the run).
"""
from __future__ import annotations

import time
import traceback
from typing import Any, Callable

import torch

from benchmarks.step_times import VARIANTS, variant_config
from benchmarks.timing import Clock

GRAPH_VARIANTS = ("fixed", "gradient_fd", "gradient_unrolled")  # the stacked step eager vs graphed


def bench_graphs(dataset: str, device_name: str, seeds: int, dry: bool, log: Callable[[str], None],
                 flush: Callable[[dict[str, Any]], None] = lambda partial: None) -> dict[str, Any]:
    """Stage 5 on ``dataset``'s shapes (module docstring): per variant of :data:`GRAPH_VARIANTS`, the eager and the
    graphed stacked backend from the same seeds through the same steps, their largest differences, then the step
    time of each; ``flush(partial)`` after each variant."""
    from kdlib.methods import get_method
    from kdlib.models import make_student
    from kdlib.train import Problem, Split
    from kdlib.train import stacked, stacked_graph

    device = torch.device(device_name)
    clock = Clock(device)
    bs = 8 if dry else int(variant_config(dataset, "fixed", 0, device_name).batch_size)
    short = max(1, bs // 2)  # a last batch of another shape: graphs of its own
    rounds, n_time = (2, 4) if dry else (4, 20)
    shape = (1, 28, 28) if dataset == "fashion_mnist" else (3, 32, 32)
    g = torch.Generator().manual_seed(0)
    n = 2 * bs + short
    x = torch.randn(n, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    t = (3 * torch.randn(n, 10, generator=g)).to(device)
    xv = torch.randn(bs, *shape, generator=g).to(device)
    yv = torch.randint(0, 10, (bs,), generator=g).to(device)
    problem = Problem(train=Split(x, y, t), val=Split(xv, yv), test=Split(xv, yv),
                      make_student=lambda: make_student(dataset))
    full_a, full_b = ([(x[i:i + bs], y[i:i + bs], t[i:i + bs])] * seeds for i in (0, bs))
    last = [(x[2 * bs:], y[2 * bs:], t[2 * bs:])] * seeds

    def val() -> tuple[torch.Tensor, torch.Tensor]:
        return xv, yv

    out: dict[str, Any] = dict(setup=dict(
        dataset=dataset, device=device_name, seeds_stacked=seeds, batch_size=bs, last_batch=short,
        equality_steps=3 * rounds, timed_steps=n_time, capturer="CudaGraphs" if clock.cuda else "StandIn (CPU)",
        warmup=stacked_graph.WARMUP, data="random tensors of the dataset's shapes"), variants={})
    for variant in GRAPH_VARIANTS:
        t0 = time.monotonic()
        try:
            method = VARIANTS[variant][0]
            m = get_method(method)
            cfgs = [variant_config(dataset, variant, s, device_name, bs) for s in range(seeds)]
            values = torch.stack([m.initial(c).detach().float().cpu() for c in cfgs])
            schedule = "fixed" if variant == "fixed" else m.schedule
            eager = stacked.build(cfgs, problem, values, schedule)
            graphed = stacked_graph.build(cfgs, problem, values, schedule,
                                          capturer=None if clock.cuda else stacked_graph.StandIn())
            for backend in (eager, graphed):  # the same steps: full, full, last, ... (each key warmed, captured)
                backend.set_lr(float(cfgs[0].lr))
                backend.new_epoch()
                for _ in range(rounds):
                    for b in (full_a, full_b, last):
                        backend.step(b, val)
            clock.sync()
            diff = max(float((eager.params[k] - graphed.params[k]).detach().abs().max()) for k in eager.params)
            bdiff = max((float((eager.buffers[k].double() - graphed.buffers[k].double()).abs().max())
                         for k in eager.buffers), default=0.0)
            vdiff = float((eager.values - graphed.values).abs().max())
            res: dict[str, Any] = dict(max_abs_diff_params=diff, max_abs_diff_buffers=bdiff, max_abs_diff_values=vdiff,
                                       bit_identical=diff == bdiff == vdiff == 0.0,
                                       capturer_after_equality=graphed.capturer.counts())
            for name, backend in (("eager", eager), ("graphed", graphed)):
                evs, walls = [], []
                for _ in range(2):
                    ev, wall = clock.time(lambda: [backend.step(b, val) for b in (full_a, full_b) * (n_time // 2)])
                    evs.append(ev), walls.append(wall)
                res[f"{name}_step_ms"] = round(1e3 * min(evs) / n_time, 4)
                res[f"{name}_step_ms_wall"] = round(1e3 * min(walls) / n_time, 4)
            res["graphed_speedup"] = round(res["eager_step_ms"] / res["graphed_step_ms"], 3) \
                if res["graphed_step_ms"] > 0 else None
            res["capturer"] = graphed.capturer.counts()
            res["seconds"] = round(time.monotonic() - t0, 2)
            log(f"  {dataset} {variant:17s} eager {res['eager_step_ms']:9.3f} ms, graphed "
                f"{res['graphed_step_ms']:9.3f} ms (x{res['graphed_speedup']}), max |diff| {diff:.2e}")
        except Exception as exc:  # noqa: BLE001 - a measurement reports its error, the others still run
            if isinstance(exc, ValueError) and ("cannot train" in str(exc) or "stacked tuned backend" in str(exc)):
                res = dict(unsupported=str(exc)[:400])  # a variant a backend refuses: its reason
                log(f"  {dataset} {variant:17s} unsupported: {str(exc)[:100]}")
            else:
                res = dict(error=f"{type(exc).__name__}: {exc}"[:600], traceback=traceback.format_exc()[-2000:])
                log(f"  {dataset} {variant:17s} ERROR {type(exc).__name__}: {str(exc)[:200]}")
        out["variants"][variant] = res
        flush(out)
    return out
