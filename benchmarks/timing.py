"""Timing helpers of the benchmarks: medians and interleaved rounds (load drift hits every variant alike),
numbers rounded to significant digits, warnings silenced inside a timed region, and :class:`Clock` for the GPU
check (CUDA events, the device's busy time, host synchronisations)."""
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


class Clock(Timer):
    """Seconds of a call: CUDA events around it (and the wall clock), synchronised only outside it
    (:class:`Timer`'s device and synchronisation)."""

    def time(self, fn: Callable[[], Any]) -> tuple[float, float]:
        """(event seconds, wall seconds); on the CPU both are the wall clock."""
        self.sync()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            w0 = time.perf_counter()
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0, time.perf_counter() - w0
        w0 = time.perf_counter()
        fn()
        w = time.perf_counter() - w0
        return w, w

    def busy(self, fn: Callable[[], Any]) -> float | None:
        """Seconds the device was busy during ``fn`` (union of the kernels' and copies' intervals,
        ``torch.profiler``); None on the CPU."""
        if not self.cuda:
            return None
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        self.sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            self.sync()
        spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                       if e.device_type == DeviceType.CUDA and e.time_range.end > e.time_range.start)
        total, cur_s, cur_e = 0.0, None, None
        for s, e in spans:
            if cur_e is None or s > cur_e:
                if cur_e is not None:
                    total += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        if cur_e is not None:
            total += cur_e - cur_s
        return total / 1e6  # microseconds

    def syncs(self, fn: Callable[[], Any]) -> int | None:
        """Host synchronisations during ``fn`` (``torch.cuda.set_sync_debug_mode("warn")``); None on the CPU."""
        if not self.cuda:
            return None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message).lower() for w in caught)
