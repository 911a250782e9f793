"""Experiment runner: config -> data -> teacher -> method -> one record per run in the config-keyed store.

:func:`run_experiments` checks everything it can before any compute (every config field, the output
directory, the data and teacher files), then runs each missing (dataset, method, seed) cell, in this process or
fanned out over processes or a SLURM array (:mod:`kdlib.experiments.executors`), writing each finished
record atomically and rewriting ``results.csv``/``config.json`` from ``runs/`` after every finished cell. A
rerun skips the cells whose record of the same config is stored, so a sweep killed at any point resumes
without loss. A run whose loss or parameters become non-finite is stored with ``status: "diverged"`` and
``final_accuracy: null``, with a warning.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

import pandas as pd
import torch

from kdlib import precision
from kdlib.errors import CellsFailed, ConfigError
from kdlib.experiments import executors
from kdlib.experiments.config import ExperimentConfig
from kdlib.experiments.problem import build_problem, load_bundle, load_teacher, problem_for, teacher_key
from kdlib.experiments.profiles import RESERVED_FIELDS, profile_seeds
from kdlib.experiments.store import (RESULT_COLUMNS, aggregate, checkpoint_dir, git_commit,
                                     load_records, load_results, make_record, pin_commit, prepare_out_dir,
                                     read_record, record_key, record_path, resolve_configs, run_threads,
                                     write_record)
from kdlib.methods import METHODS, FixedController, NonFiniteHypergradient, get_method
from kdlib.train import Choice, evaluate, select_backend, train_student
from kdlib.train.checkpoint import Checkpoints

__all__ = ["run_experiments", "run_one", "run_cells", "fixed_grid", "load_records", "load_results", "aggregate",
           "RESULT_COLUMNS", "load_bundle", "load_teacher", "build_problem"]


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads (restored on exit): a run's result depends on it on the CPU."""
    saved = torch.get_num_threads()
    if saved != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != saved:
            torch.set_num_threads(saved)


# ------------------------------------------------------------------------------------------------ one run
def divergence(history: list[dict[str, Any]], model: torch.nn.Module | None = None) -> str | None:
    """Why a run diverged (a non-finite validation loss in its history, or non-finite parameters of its
    model), or None."""
    for row in history:
        v = row.get("val_loss")
        if v is None or not math.isfinite(float(v)):
            return f"non-finite validation loss ({v}) at step {row.get('step')}"
    if model is not None:
        for name, p in model.named_parameters():
            if not torch.isfinite(p.detach()).all():
                return f"non-finite values in the student's parameter {name!r} at the end of the run"
    return None


def finish_record(cfg: ExperimentConfig, history: list[dict[str, Any]], summary: dict[str, Any], threads: int,
                  model: torch.nn.Module | None = None, reason: str | None = None) -> dict[str, Any]:
    """Add the status (``ok`` or ``diverged``, with a warning) and provenance to a run's results."""
    reason = reason or divergence(history, model)
    summary = dict(summary, status="diverged" if reason else "ok")
    if reason:
        summary["final_accuracy"] = None
        summary["diverged"] = reason
        # meta_lr is a fix only for a method whose metaparameters move by hypergradient
        meta = f" or meta_lr (now {cfg.meta_lr})" if get_method(cfg.method).schedule != "fixed" else ""
        warnings.warn(f"{cfg.key()} ({cfg.method}): the run diverged: {reason}; stored with status 'diverged' "
                      f"and final_accuracy null (counted apart, never averaged). Fix: a smaller lr "
                      f"(now {cfg.lr}){meta}", stacklevel=2)
    elif summary.get("nan_skipped"):
        warnings.warn(f"{cfg.key()}: {summary['nan_skipped']} non-finite hypergradient(s) were skipped",
                      stacklevel=2)
    return make_record(cfg, history, summary, threads)


def _teacher_summary(teacher) -> dict[str, Any] | None:
    if teacher is None:
        return None
    return dict(name=teacher.name, source=teacher.source, test_accuracy=teacher.test_accuracy,
                train_agreement=teacher.train_agreement)


def run_one(cfg: ExperimentConfig, progress: bool = False, threads: int = 1,
            checkpoints: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run one (dataset, method, seed) cell at ``threads`` intra-op threads under its TF32 setting
    (:func:`kdlib.precision.tf32`, which the record's provenance reads); return its store record.

    ``checkpoints``: a folder where the run's trainings save their state after every epoch and resume from it
    (:mod:`kdlib.train.checkpoint`; the caller deletes the files once the record is written). A resumed run's
    wall time counts every sitting and its provenance lists ``resumed`` (training, epoch, commit of the save)."""
    with precision.tf32(cfg.tf32, cfg.device):
        return _run_one(cfg, progress, threads, checkpoints)


def _run_one(cfg: ExperimentConfig, progress: bool, threads: int,
             folder: str | os.PathLike | None = None) -> dict[str, Any]:
    ck = None if folder is None else Checkpoints(folder, record_key(cfg, threads), commit=git_commit())
    with intra_op_threads(run_threads(cfg, threads)):
        t0 = time.perf_counter()
        problem, bundle, teacher = problem_for(cfg, progress=progress)
        base = dict(data_source=bundle.source, teacher=_teacher_summary(teacher))
        try:
            result = get_method(cfg.method).run(cfg, problem, progress=progress, checkpoints=ck)
        except NonFiniteHypergradient as e:
            summary = dict(base, final_accuracy=None, wall_time=time.perf_counter() - t0, hypergrad_evals=None,
                           full_trainings=None, nan_skipped=None, extra={})
            return finish_record(cfg, [], summary, threads, reason=f"every hypergradient was non-finite ({e})")
        wall = time.perf_counter() - t0 + (ck.restored_seconds if ck is not None else 0.0)
    summary = _finished_summary(base, result.history, wall, result.full_trainings, result.extra)
    rec = finish_record(cfg, result.history, summary, threads, model=getattr(result, "model", None))
    if ck is not None and ck.resumed:  # where it went on from, and when the earlier sittings ran (column_timing)
        rec["provenance"].update(resumed=ck.resumed, earlier_sittings_s=round(ck.restored_seconds, 3),
                                 earlier_sittings=[[_iso(a), _iso(b), c] for a, b, c in sorted(ck.sittings)])
    return rec


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="seconds")  # as provenance.created


def _finished_summary(base: dict[str, Any], history: list[dict[str, Any]], wall: float, full_trainings: int,
                      extra: dict[str, Any], **more: Any) -> dict[str, Any]:
    """The summary of a finished run (its history gets ``full_trainings`` on every row): final accuracy and
    counters from the last row, the wall time, ``base`` (data source, teacher) and ``more``."""
    for row in history:
        row["full_trainings"] = full_trainings
    last = history[-1]
    return dict(base, final_accuracy=last["test_accuracy"], wall_time=wall, hypergrad_evals=last["hypergrad_evals"],
                full_trainings=full_trainings, nan_skipped=last["nan_skipped"], extra=extra, **more)


def choose_backend(cfg: ExperimentConfig, runs: int = 1, batched: bool = True) -> Choice:
    """The backend that trains ``runs`` seeds of ``cfg`` together, and why (:func:`kdlib.train.select_backend` for
    this config's method)."""
    method = get_method(cfg.method)
    return select_backend(cfg, method.together(), method.schedule, runs, linear_ok=batched)


# what a record's summary.engine says of the backend that trained it (none for one by one)
ENGINE_LABELS = {"linear": "batched", "stacked": "stacked", "stacked_graph": "stacked_graph"}


def _check_group(cfgs: Sequence[ExperimentConfig]) -> None:
    if not cfgs:
        raise ValueError("run_group needs at least one config")
    ref = {k: v for k, v in cfgs[0].to_dict().items() if k != "seed"}
    for cfg in cfgs[1:]:
        other = {k: v for k, v in cfg.to_dict().items() if k != "seed"}
        if other != ref:
            diff = sorted(k for k in ref if ref[k] != other.get(k))
            raise AssertionError(f"run_group: configs must share everything but the seed; differing: {diff}")
    seeds = [c.seed for c in cfgs]
    if len(set(seeds)) != len(seeds):
        raise AssertionError(f"run_group: duplicate seeds {seeds}")


def run_group(cfgs: Sequence[ExperimentConfig], backend: str, threads: int = 1,
              checkpoints: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The seeds ``cfgs`` of one (dataset, method, config) trained together by the stacking ``backend``
    (``"linear"``, ``"stacked"`` or ``"stacked_graph"``, :meth:`kdlib.methods.Method.run_together`) under their
    TF32 setting; one store record per seed, as :func:`run_one` writes it, with ``summary.engine``
    (:data:`ENGINE_LABELS`) and the group's wall time shared out. ``backend="one"``: :func:`run_one` per config
    (each resuming from ``checkpoints``, a folder; the stacking backends keep none)."""
    if backend == "one":
        return [run_one(c, progress=False, threads=threads, checkpoints=checkpoints) for c in cfgs]
    _check_group(cfgs)
    with precision.tf32(cfgs[0].tf32, cfgs[0].device):  # the run's TF32 setting, read by the records' provenance
        return _run_group(cfgs, backend, threads)


def _run_group(cfgs: Sequence[ExperimentConfig], backend: str, threads: int) -> list[dict[str, Any]]:
    cfg = cfgs[0]
    choice = choose_backend(cfg, len(cfgs))
    if choice.backend != backend:
        raise ValueError(f"{cfg.key()}: the {backend} backend does not train this group: {choice.reason}; "
                         f"(kdlib.experiments.runner.choose_backend picks {choice.backend!r})")
    with intra_op_threads(run_threads(cfg, threads)):
        t0 = time.perf_counter()
        problem, bundle, teacher = problem_for(cfg)
        try:
            results = get_method(cfg.method).run_together(cfgs, problem, backend)
        except NonFiniteHypergradient as e:
            results = None
            dead = e
        wall = time.perf_counter() - t0
    if results is None:
        # a run of the group took only non-finite hypergradients: its one-by-one run is recorded as diverged
        # (run_one), the others as ok; train the group one by one so that every seed gets the record it gets alone
        warnings.warn(f"{cfg.key()}: a run of the {backend} group took only non-finite hypergradients ({dead}); the "
                      f"group's {len(cfgs)} runs are trained one by one", stacklevel=2)
        return [run_one(c, progress=False, threads=threads) for c in cfgs]
    base = dict(data_source=bundle.source, teacher=_teacher_summary(teacher))
    recs = []
    for c, r in zip(cfgs, results):
        summary = _finished_summary(base, r.history, wall / len(cfgs), r.full_trainings, r.extra,
                                    engine=ENGINE_LABELS[backend], batch_size_seeds=len(cfgs), batch_wall_time=wall)
        recs.append(finish_record(c, r.history, summary, threads, model=r.model))
    return recs


def run_cells(configs: Sequence[ExperimentConfig | dict[str, Any]], out_dir: str | os.PathLike, threads: int = 1,
              backend: str = "one") -> list[str]:
    """Run ``configs`` (one cell, or the seeds of one config trained together by ``backend``: see
    :func:`choose_backend`), write each record to ``out_dir`` and return their keys. The unit of work of every
    executor: it writes only its own records and never the aggregate files."""
    cfgs = [c if isinstance(c, ExperimentConfig) else ExperimentConfig.from_dict(c) for c in configs]
    folder = checkpoint_dir(out_dir)
    recs = run_group(cfgs, backend, threads, checkpoints=folder)
    keys = [write_record(out_dir, r).stem for r in recs]
    for key in keys:  # the records are written: their runs' checkpoints are spent
        Checkpoints(folder, key).clear()
    return keys


# ------------------------------------------------------------------------------------------------ the sweep
def _groups(todo: list[ExperimentConfig], batched: bool) -> list[tuple[str, list[ExperimentConfig]]]:
    """``(backend, configs)``: configs that differ only by seed, grouped for the backend :func:`choose_backend`
    picks for them (``batched=False``: no linear backend), and singletons for ``"one"``."""
    by_config: dict[str, list[ExperimentConfig]] = {}
    for cfg in todo:
        by_config.setdefault(json.dumps({k: v for k, v in cfg.to_dict().items() if k != "seed"}, sort_keys=True),
                             []).append(cfg)
    groups: list[tuple[str, list[ExperimentConfig]]] = []
    singles: list[tuple[str, list[ExperimentConfig]]] = []
    for cfgs in by_config.values():
        backend = choose_backend(cfgs[0], len(cfgs), batched).backend
        if backend == "one":
            singles += [("one", [c]) for c in cfgs]
        else:
            groups.append((backend, cfgs))
    return groups + singles


def _cost(cfg: ExperimentConfig) -> float:
    """Relative cost of a cell, for scheduling only: full trainings, x2 with a hypergradient per step."""
    if cfg.method == "hyperopt":
        return float(cfg.hyperopt_evals)
    return 2.0 if get_method(cfg.method).uses_val_split else 1.0


def parse_methods(methods: Sequence[str] | str) -> list[str]:
    """Method names from a list or a comma-separated string; empty or duplicate names are an error."""
    given = methods
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",")]
    methods = list(methods)
    if not methods or any(not isinstance(m, str) or not m for m in methods):
        raise ConfigError(f"--methods: expected comma-separated method names, found {given!r} (an empty name); "
                          f"fix: e.g. --methods no_distillation,gradient")
    dup = sorted({m for m in methods if methods.count(m) > 1})
    if dup:
        raise ConfigError(f"--methods: each method once, found {dup} more than once in {given!r}; fix: drop "
                          f"the repeats")
    return methods


def parse_seeds(seeds: int | Sequence[int] | None, profile: str, dataset: str) -> list[int]:
    """``None``: the profile's count; an int n >= 1: seeds 0..n-1; a list of distinct ints >= 0."""
    if seeds is None:
        return list(range(profile_seeds(profile, dataset)))
    if isinstance(seeds, bool) or (isinstance(seeds, int) and seeds < 1):
        raise ConfigError(f"--seeds: expected a number of seeds >= 1, found {seeds!r}; fix: --seeds 1 or more")
    if isinstance(seeds, int):
        return list(range(seeds))
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: expected distinct integers >= 0, found {seeds!r}; fix: e.g. seeds=[0, 1]")
    return seeds


def _check_positive_int(name: str, value: Any, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{flag}: expected an integer >= 1, found {value!r}; fix: {flag} 1")
    return value


def plan(dataset: str, methods: Sequence[str] | str, seeds: int | Sequence[int] | None = None,
         profile: str = "quick", device: str = "cpu", overrides: dict[str, Any] | None = None
         ) -> list[ExperimentConfig]:
    """The validated configs of a sweep (nothing is run): every error a user can fix is raised here."""
    overrides = dict(overrides or {})
    for name, flag in RESERVED_FIELDS.items():
        if name in overrides:
            raise ConfigError(f"config field {name!r} cannot be overridden (it names the run); fix: use "
                              f"{flag} instead of --set {name}=...")
    methods = parse_methods(methods)
    seed_list = parse_seeds(seeds, profile, dataset)
    return resolve_configs(dataset, methods, seed_list, profile, known_methods=tuple(METHODS), device=device,
                           **overrides)


def preflight(configs: Sequence[ExperimentConfig], threads: int = 1, progress: bool = False) -> None:
    """Open and check the data and teacher files of every config before the first step (and compute each
    teacher once, into its atomic disk cache, before any fan-out)."""
    seen: set[tuple] = set()
    for cfg in configs:
        k = teacher_key(cfg)
        if k in seen:
            continue
        seen.add(k)
        with intra_op_threads(run_threads(cfg, threads)):
            load_teacher(cfg, load_bundle(cfg), progress=progress)


def run_experiments(dataset: str, methods: Sequence[str] | str, seeds: int | Sequence[int] | None = None,
                    profile: str = "quick", out_dir: str | os.PathLike = "results",
                    device: str = "cpu", overrides: dict[str, Any] | None = None,
                    progress: bool = True, batched: bool = True, workers: int = 1, threads: int = 1,
                    executor: str = "local", executor_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run every (method, seed) not yet stored; return the tidy results of exactly the requested runs.

    ``seeds``: an int n (seeds 0..n-1), a list, or None for the profile's count. ``batched``: run the seeds of
    a synthetic method together on the closed-form linear backend (:mod:`kdlib.train.linear`). ``workers``: cells run in that many processes
    (spawned, each at ``threads`` intra-op threads; results do not depend on either). ``executor="submitit"``
    submits the cells as a SLURM array (``executor_options``: ``cluster``, ``folder``, ``timeout_min``,
    ``partition``, ``parallelism``, ...; ``cluster="local"`` runs them as local processes).
    """
    workers = _check_positive_int("workers", workers, "--workers")
    threads = _check_positive_int("threads", threads, "--threads")
    if executor not in ("local", "submitit"):
        raise ConfigError(f"--executor: expected 'local' or 'submitit', found {executor!r}")
    configs = plan(dataset, methods, seeds, profile, device, overrides)
    pin_commit()  # the records say which code ran, even if the checkout moves while this command runs
    out = prepare_out_dir(out_dir)
    todo = [c for c in configs if read_record(record_path(out, c, threads)) is None]
    groups = sorted(_groups(todo, batched), key=lambda g: -_cost(g[1][0]))  # longest first: a short tail
    tasks = [([c.to_dict() for c in g], str(out), threads, backend) for backend, g in groups]
    fan_out = executor == "local" and workers > 1 and len(groups) > 1
    bar = None
    failures: list[str] = []
    method = executors.start_method(device)
    with contextlib.ExitStack() as stack:
        def start_pool() -> executors.LocalPool:
            return stack.enter_context(executors.LocalPool(run_cells, min(workers, len(groups)), threads, method))

        # spawned workers start (interpreter, imports) while this process checks the data and teachers;
        # forked ones start after it and share what it loaded
        pool = start_pool() if fan_out and method == "spawn" else None
        if todo:
            preflight(todo, threads, progress=progress)
        if fan_out and method == "fork":
            pool = start_pool()
        if progress and todo:
            from tqdm.auto import tqdm

            bar = stack.enter_context(tqdm(total=len(todo), desc=f"{dataset} runs"))

        def done(n: int) -> None:
            aggregate(out)
            if bar is not None:
                bar.update(n)

        try:
            if executor == "submitit":
                failures = executors.run_submitit(run_cells, tasks, out, threads=threads,
                                                  **dict(executor_options or {}))
            elif pool is not None:
                failures = pool.run(tasks, on_done=lambda i, keys: done(len(keys)))
            else:
                for backend, group in groups:
                    run_cells(group, out, threads, backend)
                    done(len(group))
        finally:
            aggregate(out)
    if failures:
        raise CellsFailed(f"{len(failures)} group(s) of cells did not finish; the finished ones are stored in "
                          f"{out / 'runs'}. Rerun the same command to complete them.\n  " + "\n  ".join(failures))
    return load_results(out, configs=configs, threads=threads)


def fixed_grid(cfg: ExperimentConfig, lambda1s: Sequence[float], temperatures: Sequence[float],
               threads: int = 1) -> pd.DataFrame:
    """Train the student of ``cfg`` once per fixed (lambda1, T) on a grid, from the same initialisation.

    Returns one row per grid point: lambda1, temperature, val_loss (L_val at T_val on D_val after training)
    and test_accuracy: the outer objective of the bilevel problem (1)-(2), drawn pointwise.
    """
    rows = []
    with intra_op_threads(run_threads(cfg, threads)):
        problem, _, _ = problem_for(cfg)
        for l1 in lambda1s:
            for temp in temperatures:
                lam = torch.tensor([float(l1), float(temp)], dtype=torch.float32)
                out = train_student(cfg, problem, FixedController(lam))
                _, val_loss = evaluate(out.model, problem.val, cfg.t_val)
                rows.append(dict(lambda1=float(l1), temperature=float(temp), val_loss=val_loss,
                                 test_accuracy=out.history[-1]["test_accuracy"]))
    return pd.DataFrame(rows)


__all__ += ["choose_backend", "run_group", "ENGINE_LABELS", "plan", "preflight", "parse_methods", "parse_seeds", "divergence", "finish_record",
            "intra_op_threads", "record_key", "record_path"]
