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
from typing import Any, Iterator, Sequence

import pandas as pd
import torch

import kdlib.batched as batched_engine
from kdlib.errors import CellsFailed, ConfigError
from kdlib.experiments import executors
from kdlib.experiments.config import ExperimentConfig
from kdlib.experiments.problem import build_problem, load_bundle, load_teacher, problem_for, teacher_key
from kdlib.experiments.profiles import RESERVED_FIELDS, profile_seeds
from kdlib.experiments.store import (RESULT_COLUMNS, aggregate, final_accuracy, load_records, load_results,
                                     make_record, pin_commit, prepare_out_dir, read_record, record_key, record_path,
                                     resolve_configs, run_threads, summarize, write_record)
from kdlib.methods import METHODS, FixedController, NonFiniteHypergradient, get_method
from kdlib.stacked import StackedTuned
from kdlib.train import evaluate, train_student, train_students_stacked

__all__ = ["run_experiments", "run_one", "run_cells", "fixed_grid", "load_records", "load_results", "aggregate",
           "final_accuracy", "summarize", "RESULT_COLUMNS", "load_bundle", "load_teacher", "build_problem"]


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
        warnings.warn(f"{cfg.key()} ({cfg.method}): the run diverged: {reason}; stored with status 'diverged' "
                      f"and final_accuracy null (counted apart, never averaged). Fix: a smaller lr "
                      f"(now {cfg.lr}) or meta_lr (now {cfg.meta_lr})", stacklevel=2)
    elif summary.get("nan_skipped"):
        warnings.warn(f"{cfg.key()}: {summary['nan_skipped']} non-finite hypergradient(s) were skipped",
                      stacklevel=2)
    return make_record(cfg, history, summary, threads)


def _teacher_summary(teacher) -> dict[str, Any] | None:
    if teacher is None:
        return None
    return dict(name=teacher.name, source=teacher.source, test_accuracy=teacher.test_accuracy,
                train_agreement=teacher.train_agreement)


def run_one(cfg: ExperimentConfig, progress: bool = False, threads: int = 1) -> dict[str, Any]:
    """Run one (dataset, method, seed) cell at ``threads`` intra-op threads; return its store record."""
    with intra_op_threads(run_threads(cfg, threads)):
        t0 = time.perf_counter()
        problem, bundle, teacher = problem_for(cfg, progress=progress)
        base = dict(data_source=bundle.source, teacher=_teacher_summary(teacher))
        try:
            result = get_method(cfg.method).run(cfg, problem, progress=progress)
        except NonFiniteHypergradient as e:
            summary = dict(base, final_accuracy=None, wall_time=time.perf_counter() - t0, hypergrad_evals=None,
                           full_trainings=None, nan_skipped=None, extra={})
            return finish_record(cfg, [], summary, threads, reason=f"every hypergradient was non-finite ({e})")
        wall = time.perf_counter() - t0
    summary = _finished_summary(base, result.history, wall, result.full_trainings, result.extra)
    return finish_record(cfg, result.history, summary, threads, model=getattr(result, "model", None))


def _finished_summary(base: dict[str, Any], history: list[dict[str, Any]], wall: float, full_trainings: int,
                      extra: dict[str, Any], **more: Any) -> dict[str, Any]:
    """The summary of a finished run (its history gets ``full_trainings`` on every row): final accuracy and
    counters from the last row, the wall time, ``base`` (data source, teacher) and ``more``."""
    for row in history:
        row["full_trainings"] = full_trainings
    last = history[-1]
    return dict(base, final_accuracy=last["test_accuracy"], wall_time=wall, hypergrad_evals=last["hypergrad_evals"],
                full_trainings=full_trainings, nan_skipped=last["nan_skipped"], extra=extra, **more)


STACKED_FIXED_METHODS = ("no_distillation", "naive", "random")
STACKED_TUNED_METHODS = ("gradient", "proposed")


def stacked_supports(cfg: ExperimentConfig) -> bool:
    """True when ``cfg`` asks for ``engine="stacked"`` and :mod:`kdlib.stacked` implements it: an image dataset
    (synthetic has the batched engine), kdlib's own method, no T^2 factor; the fixed-metaparameter methods with
    any optimizer, gradient-based and proposed with the one-step unrolled estimator, the paper's loss and plain
    SGD. Anything else runs one by one (hyperopt included)."""
    if cfg.engine != "stacked" or cfg.dataset == "synthetic" or cfg.t2_scaling:
        return False
    method = METHODS.get(cfg.method)
    if method is None or method.__module__ != "kdlib.methods":
        return False  # a user re-registered the name
    if cfg.method in STACKED_FIXED_METHODS:
        return True
    return cfg.method in STACKED_TUNED_METHODS and StackedTuned.unsupported(cfg) is None


def run_stacked(cfgs: Sequence[ExperimentConfig], threads: int = 1) -> list[dict[str, Any]]:
    """The seeds ``cfgs`` of one (dataset, method, config) as one stacked model
    (:func:`kdlib.train.train_students_stacked`); one store record per seed, as :func:`run_one` writes it, with
    ``summary.engine = "stacked"`` and the group's wall time shared out."""
    for c in cfgs:
        if not stacked_supports(c):
            raise ValueError(f"{c.key()}: the stacked engine does not implement this config "
                             "(see kdlib.experiments.runner.stacked_supports); set engine='one'")
    cfg = cfgs[0]
    method = get_method(cfg.method)
    with intra_op_threads(run_threads(cfg, threads)):
        t0 = time.perf_counter()
        problem, bundle, teacher = problem_for(cfg)
        values = torch.stack([method.initial(c).detach().float().cpu() for c in cfgs])
        outs = train_students_stacked(cfgs, problem, values, schedule=method.schedule)
        wall = time.perf_counter() - t0
    recs = []
    base = dict(data_source=bundle.source, teacher=_teacher_summary(teacher))
    for c, out in zip(cfgs, outs):
        summary = _finished_summary(base, out.history, wall / len(cfgs), 1, {}, engine="stacked",
                                    batch_size_seeds=len(cfgs), batch_wall_time=wall)
        recs.append(finish_record(c, out.history, summary, threads, model=out.model))
    return recs


def run_cells(configs: Sequence[ExperimentConfig | dict[str, Any]], out_dir: str | os.PathLike, threads: int = 1,
              on_batched: bool = False) -> list[str]:
    """Run ``configs`` (one cell; the seeds of one synthetic config on the batched engine; or the seeds of one
    image config with ``engine="stacked"`` as one stacked model), write each record to ``out_dir`` and return
    their keys. The unit of work of every executor: it writes only its own records and never the aggregate
    files."""
    cfgs = [c if isinstance(c, ExperimentConfig) else ExperimentConfig.from_dict(c) for c in configs]
    if on_batched:
        with intra_op_threads(1):  # also covers the teacher set-up done before the engine starts
            raw = batched_engine.run_batched(cfgs, problem_factory=problem_for)
        recs = [finish_record(c, r["history"], r["summary"], threads) for c, r in zip(cfgs, raw)]
    elif len(cfgs) > 1 and all(stacked_supports(c) for c in cfgs):
        recs = run_stacked(cfgs, threads)
    else:
        recs = [run_one(c, progress=False, threads=threads) for c in cfgs]
    return [write_record(out_dir, r).stem for r in recs]


# ------------------------------------------------------------------------------------------------ the sweep
def _groups(todo: list[ExperimentConfig], batched: bool) -> list[tuple[bool, list[ExperimentConfig]]]:
    """``(on_batched, configs)``: configs that differ only by seed, grouped for the batched engine (synthetic)
    or the stacked one (images, ``engine="stacked"``), and singletons for the generic loop where neither
    applies (or ``batched`` is off)."""
    groups: dict[str, tuple[bool, list[ExperimentConfig]]] = {}
    singles: list[tuple[bool, list[ExperimentConfig]]] = []
    for cfg in todo:
        on_batched = batched and batched_engine.supports(cfg)
        if on_batched or stacked_supports(cfg):
            key = json.dumps({k: v for k, v in cfg.to_dict().items() if k != "seed"}, sort_keys=True)
            groups.setdefault(key, (on_batched, []))[1].append(cfg)
        else:
            singles.append((False, [cfg]))
    return list(groups.values()) + singles


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
    a synthetic method together on :mod:`kdlib.batched`. ``workers``: cells run in that many processes
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
    tasks = [([c.to_dict() for c in g], str(out), threads, on_b) for on_b, g in groups]
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
                for on_b, group in groups:
                    run_cells(group, out, threads, on_b)
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


__all__ += ["plan", "preflight", "parse_methods", "parse_seeds", "divergence", "finish_record",
            "intra_op_threads", "record_key", "record_path"]
