"""Timing helpers of the benchmarks: medians and interleaved rounds (load drift hits every variant alike),
numbers rounded to significant digits, and warnings silenced inside a timed region."""
from __future__ import annotations

import contextlib
import math
import statistics
import time
import warnings
from typing import Any, Callable

import torch


class Timer:
    """Wall-clock timing of a callable on ``device`` (a CUDA device is synchronised around the timed region)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def median(self, fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            self.sync()  # only around the timed region, never inside fn
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def interleaved(self, fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                    stat: Callable[[list[float]], float] = statistics.median,
                    clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
        """``stat`` (median) of the times of each of ``fns``, called in turn round after round (load drift hits
        all alike). ``clock=time.thread_time``: the calling thread's CPU time (CPU, one intra-op thread only:
        robust to other processes' load on a shared machine)."""
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                self.sync()
                t0 = clock()
                fn()
                self.sync()
                times[k].append(clock() - t0)
        return {k: stat(v) for k, v in times.items()}

    def once(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        self.sync()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t0, out


def rounded(x: float, nd: int = 6) -> float:
    """``x`` to ``nd`` significant digits (NaN for a non-finite ``x``)."""
    return float(f"{x:.{nd}g}") if math.isfinite(x) else float("nan")


@contextlib.contextmanager
def quiet():
    """Warnings silenced (a timed region prints nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
