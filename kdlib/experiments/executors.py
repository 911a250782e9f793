"""Executors: run the cells of a sweep in worker processes on this machine, or as a SLURM array (submitit).

A task is the argument tuple of a module-level work function (the runner's ``run_cells``): it runs one cell
(or the seeds of one config trained together by a stacking backend) and writes only its own records. Aggregation is the caller's
separate step. Workers are forked for CPU runs on platforms that can (they share the parent's imports and loaded data;
:func:`start_method`) and spawned otherwise (a clean interpreter, no forked CUDA state); each cell runs at a
fixed number of intra-op threads, so a result does not depend on how many workers or cores there are.

:func:`run_local_processes` keeps ``workers`` processes busy; a worker that dies (killed, out of memory) loses
only the cell it was running: it is reported, a fresh worker takes the remaining cells, and a rerun of the
same sweep completes the lost one. :func:`run_submitit` submits the tasks as a job array through
`submitit <https://github.com/facebookincubator/submitit>`_ (``cluster="local"`` runs them as local
processes, which the tests use; ``"slurm"`` on a cluster).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_any
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

Task = tuple  # the positional arguments of the work function: (cell config dicts, out_dir, threads, backend)


def task_label(task: Task) -> str:
    """The cells of a task, e.g. ``fashion_mnist__gradient__seed1``."""
    cells = task[0]
    return ", ".join(f"{c['dataset']}__{c['method']}__seed{c['seed']}" for c in cells)


def _worker_main(conn: Connection, threads: int, work: Callable[..., Any]) -> None:
    """A worker: receive ``(index, task)``, run ``work(*task)``, answer ``("done"|"error", index, payload)``."""
    torch.set_num_threads(threads)
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        idx, task = item
        try:
            conn.send(("done", idx, work(*task)))
        except Exception as e:  # reported to the parent, which names the cell
            conn.send(("error", idx, f"{type(e).__name__}: {e}"))


@dataclass
class _Slot:
    proc: Any
    conn: Connection
    task: tuple[int, Task] | None = None


def start_method(device: str) -> str:
    """``"fork"`` for CPU runs where the platform has it (a worker starts at once, sharing the parent's imports
    and the data and teacher it already loaded), else ``"spawn"`` (a clean interpreter: required once CUDA
    may be initialised, and the only method on some platforms)."""
    cpu = str(device).split(":")[0] == "cpu"
    return "fork" if cpu and "fork" in mp.get_all_start_methods() else "spawn"


class LocalPool:
    """``workers`` processes running ``work(*task)`` at ``threads`` intra-op threads each.

    ``method="spawn"``: start it early (``with LocalPool(...) as pool``) so that the workers' interpreter
    start-up and imports overlap the caller's own preparation; ``"fork"``: start it after that preparation,
    whose results (imported modules, memoised data and teachers) the workers then share. Then :meth:`run` the
    tasks."""

    def __init__(self, work: Callable[..., Any], workers: int, threads: int = 1, method: str = "spawn") -> None:
        self.work, self.workers, self.threads = work, workers, threads
        self.ctx = mp.get_context(method)
        self.slots: list[_Slot] = []

    def _start(self) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, args=(child, self.threads, self.work), daemon=True,
                                name=f"kdlib-worker-{len(self.slots)}")
        proc.start()
        child.close()
        self.slots.append(_Slot(proc, parent))

    def __enter__(self) -> "LocalPool":
        for _ in range(self.workers):
            self._start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for s in self.slots:
            if s.proc.is_alive():
                try:
                    s.conn.send(None)
                except OSError:
                    pass
        for s in self.slots:
            s.proc.join(timeout=10)
            if s.proc.is_alive():
                s.proc.terminate()
                s.proc.join(timeout=10)
        self.slots.clear()

    def run(self, tasks: Sequence[Task], on_done: Callable[[int, Any], None] | None = None) -> list[str]:
        """Run every task; ``on_done(index, result)`` is called here after each finished one. Returns one line
        per task that did not finish (its worker died, or it raised), naming its cells."""
        pending: deque[tuple[int, Task]] = deque(enumerate(tasks))
        failures: list[str] = []
        restarts = 0
        while self.slots and (pending or any(s.task is not None for s in self.slots)):
            for s in list(self.slots):
                if s.task is None and pending:
                    task = pending.popleft()
                    try:
                        s.conn.send(task)
                        s.task = task
                    except OSError:  # the worker died before its first task: the task goes back
                        pending.appendleft(task)
                        s.proc.join()
                        self.slots.remove(s)
                        restarts += 1
                        if restarts <= 2 * self.workers:
                            self._start()
            if not any(s.task is not None for s in self.slots):
                continue
            busy = [s for s in self.slots if s.task is not None]
            ready = set(wait_any([s.conn for s in busy] + [s.proc.sentinel for s in busy]))
            for s in list(busy):
                if s.conn not in ready and s.proc.sentinel not in ready:
                    continue
                msg = None
                try:
                    if s.conn.poll():
                        msg = s.conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is not None:
                    kind, idx, payload = msg
                    if kind == "done":
                        if on_done is not None:
                            on_done(idx, payload)
                    else:
                        failures.append(f"{task_label(tasks[idx])}: {payload}")
                    s.task = None
                elif not s.proc.is_alive():
                    s.proc.join()
                    failures.append(f"{task_label(s.task[1])}: its worker process {s.proc.pid} died "
                                    f"(exit code {s.proc.exitcode}); the cell was lost")
                    self.slots.remove(s)
                    s.conn.close()
                    if pending:
                        self._start()  # a fresh worker takes the remaining cells
        failures += [f"{task_label(t)}: not run (no worker left)" for _, t in pending]
        return failures


def run_local_processes(work: Callable[..., Any], tasks: Sequence[Task], workers: int, threads: int = 1,
                        on_done: Callable[[int, Any], None] | None = None, method: str = "spawn") -> list[str]:
    """Run ``work(*task)`` for every task in ``workers`` processes (see :class:`LocalPool`)."""
    with LocalPool(work, min(workers, max(len(tasks), 1)), threads, method) as pool:
        return pool.run(tasks, on_done)


def _call(work: Callable[..., Any], task: Task) -> Any:
    return work(*task)


def run_submitit(work: Callable[..., Any], tasks: Sequence[Task], out_dir: str | os.PathLike, threads: int = 1,
                 cluster: str | None = None, folder: str | os.PathLike | None = None, timeout_min: int = 60,
                 partition: str | None = None, parallelism: int | None = None, mem_gb: float | None = None,
                 gpus_per_node: int | None = None, wait: bool = True, **slurm: Any) -> list[str]:
    """Submit every task as one element of a job array (``cluster``: None auto-detects SLURM, ``"local"``
    runs local processes, ``"debug"`` runs in this process). Each job writes only its own records; with
    ``wait`` (default) returns one line per failed task, else returns at once after printing the job ids
    (aggregate later with ``kdlib aggregate --out DIR``). Extra ``slurm_*`` keywords go to submitit as is."""
    try:
        import submitit  # optional dependency (extra "cluster")
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("--executor submitit needs the optional dependency submitit; fix: "
                          "pip install 'kdlib[cluster]'") from e

    folder = Path(folder) if folder is not None else Path(out_dir) / "submitit" / "%j"
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict[str, Any] = dict(timeout_min=timeout_min, cpus_per_task=threads, name="kdlib")
    if partition:
        params["slurm_partition"] = partition
    if parallelism:
        params["slurm_array_parallelism"] = parallelism
    if mem_gb:
        params["mem_gb"] = mem_gb
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    params.update(slurm)
    ex.update_parameters(**params)
    tasks = list(tasks)
    if not tasks:
        return []
    # the local executor has no array throttle: submit it ``parallelism`` jobs at a time
    wave = parallelism if (ex.cluster == "local" and parallelism) else len(tasks)
    if not wait:
        wave = len(tasks)
    failures: list[str] = []
    for start in range(0, len(tasks), wave):
        chunk = tasks[start:start + wave]
        jobs = ex.map_array(_call, [work] * len(chunk), chunk)
        print(f"kdlib: submitted {len(jobs)} job(s) ({ex.cluster}): {', '.join(j.job_id for j in jobs)}; logs in "
              f"{folder}", file=sys.stderr, flush=True)
        if not wait:
            return []
        for job, task in zip(jobs, chunk):
            try:
                job.result()
            except Exception as e:  # submitit re-raises the job's error with its log
                failures.append(f"{task_label(task)}: job {job.job_id} failed: "
                                f"{str(e).strip().splitlines()[-1]}")
    return failures
