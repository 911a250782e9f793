"""Experiment runner: config -> data -> teacher -> method -> tidy results on disk.

Every finished (dataset, method, seed) run is written atomically to ``out_dir/runs/<key>.json``; a rerun
skips runs whose stored config equals the requested one, so a sweep killed at any point resumes without
loss. ``out_dir/results.csv`` (one row per logged step) and ``out_dir/config.json`` are rewritten,
atomically, after every run.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
import torch

from kdlib.config import ExperimentConfig, profile_seeds, resolve_config
from kdlib.methods import get_method
from kdlib.train import Problem, Split, single_thread

RESULT_COLUMNS = ["dataset", "method", "seed", "profile", "variant", "holdout", "step", "epoch",
                  "test_accuracy", "val_accuracy", "val_loss", "lambda1", "temperature", "hypergrad_evals",
                  "full_trainings", "wall_time", "nan_skipped", "phase", "lr"]

_BUNDLES: dict[tuple, Any] = {}
_TEACHERS: dict[tuple, Any] = {}


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace`` (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_bundle(cfg: ExperimentConfig):
    """The dataset of ``cfg`` (memoised in-process)."""
    from kdlib.data import load_dataset

    key = (cfg.dataset, cfg.variant, cfg.holdout, cfg.n_train, cfg.n_test, cfg.split_seed, cfg.data_root,
           cfg.download)
    if key not in _BUNDLES:
        kwargs: dict[str, Any] = dict(root=cfg.data_root, download=cfg.download, n_train=cfg.n_train,
                                      n_test=cfg.n_test, split_seed=cfg.split_seed)
        if cfg.dataset == "synthetic":
            kwargs.update(variant=cfg.variant, holdout=cfg.holdout)
        _BUNDLES[key] = load_dataset(cfg.dataset, **kwargs)
    return _BUNDLES[key]


def load_teacher(cfg: ExperimentConfig, bundle, progress: bool = False):
    """The teacher's logits for ``bundle`` (trained once and cached on disk by kdlib.teachers)."""
    from kdlib.teachers import get_teacher

    key = (id(bundle), cfg.teacher, cfg.teacher_epochs, cfg.device)
    if key not in _TEACHERS:
        kwargs: dict[str, Any] = dict(kind=cfg.teacher, root=cfg.data_root, device=cfg.device, progress=progress)
        if cfg.teacher_epochs is not None:
            kwargs["epochs"] = cfg.teacher_epochs
        _TEACHERS[key] = get_teacher(bundle, **kwargs)
    return _TEACHERS[key]


def build_problem(cfg: ExperimentConfig, bundle, teacher) -> Problem:
    """The splits the paper gives ``cfg.method``: all of D for the baselines, D_train/D_val for tuning."""
    from kdlib.models import LogReg, make_student

    method = get_method(cfg.method)
    train = bundle.train if method.uses_val_split else bundle.train_full
    device = torch.device(cfg.device)

    def split(part, with_teacher: bool) -> Split:
        p = part.to(device)
        t = teacher.for_split(part).to(device) if with_teacher else None
        return Split(p.x, p.y, t)

    if cfg.dataset == "synthetic":
        cols = list(bundle.meta["student_cols"])
        if cfg.variant == "authors" and cfg.method in ("naive", "random"):
            # the authors' synthetic_base trained these two baselines on the teacher's features
            cols = list(bundle.meta["teacher_cols"])

        def make() -> torch.nn.Module:
            return LogReg(cols, num_classes=bundle.num_classes)
    else:
        def make() -> torch.nn.Module:
            return make_student(cfg.dataset)
    return Problem(train=split(train, True), val=split(bundle.val, False), test=split(bundle.test, False),
                   make_student=make)


def _threads_for(cfg: ExperimentConfig) -> contextlib.AbstractContextManager:
    """One intra-op thread for the tiny synthetic problem (extra threads only add dispatch overhead there)."""
    return single_thread(cfg.device) if cfg.dataset == "synthetic" else contextlib.nullcontext()


def run_one(cfg: ExperimentConfig, progress: bool = False) -> dict[str, Any]:
    """Run one (dataset, method, seed) cell and return its record (config, history, summary)."""
    with _threads_for(cfg):
        return _run_one(cfg, progress)


def _run_one(cfg: ExperimentConfig, progress: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    bundle = load_bundle(cfg)
    teacher = load_teacher(cfg, bundle, progress=progress)
    problem = build_problem(cfg, bundle, teacher)
    result = get_method(cfg.method).run(cfg, problem, progress=progress)
    wall = time.perf_counter() - t0
    history = result.history
    for row in history:
        row["full_trainings"] = result.full_trainings
    last = history[-1]
    summary = dict(final_accuracy=last["test_accuracy"], wall_time=wall,
                   hypergrad_evals=last["hypergrad_evals"], full_trainings=result.full_trainings,
                   nan_skipped=last["nan_skipped"], data_source=bundle.source,
                   teacher=dict(name=teacher.name, source=teacher.source, test_accuracy=teacher.test_accuracy,
                                train_agreement=teacher.train_agreement),
                   extra=result.extra)
    if summary["nan_skipped"]:
        import warnings

        warnings.warn(f"{cfg.key()}: {summary['nan_skipped']} non-finite hypergradient(s) were skipped")
    return dict(config=cfg.to_dict(), history=history, summary=summary)


def _batched_supports(cfg: ExperimentConfig) -> bool:
    from kdlib.batched import supports

    return supports(cfg)


def _groups(todo: list[ExperimentConfig], batched: bool) -> list[tuple[bool, list[ExperimentConfig]]]:
    """``(on_batched, configs)``: configs that differ only by seed, grouped for the batched engine, and
    singletons for the generic loop where the engine does not apply (or ``batched`` is off)."""
    groups: dict[str, list[ExperimentConfig]] = {}
    singles: list[tuple[bool, list[ExperimentConfig]]] = []
    for cfg in todo:
        if batched and _batched_supports(cfg):
            key = json.dumps({k: v for k, v in cfg.to_dict().items() if k != "seed"}, sort_keys=True)
            groups.setdefault(key, []).append(cfg)
        else:
            singles.append((False, [cfg]))
    return [(True, g) for g in groups.values()] + singles


def _same_config(stored: dict[str, Any], cfg: ExperimentConfig) -> bool:
    mine = json.loads(json.dumps(cfg.to_dict()))  # as stored: tuples (betas) become lists
    ignore = {"device", "data_root", "download"}
    return {k: v for k, v in stored.items() if k not in ignore} == {k: v for k, v in mine.items()
                                                                    if k not in ignore}


def records_to_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for rec in records:
        c = rec["config"]
        for h in rec["history"]:
            rows.append(dict(dataset=c["dataset"], method=c["method"], seed=c["seed"], profile=c["profile"],
                             variant=c["variant"], holdout=c["holdout"], **h))
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    cols = [c for c in RESULT_COLUMNS if c in df.columns] + [c for c in df.columns if c not in RESULT_COLUMNS]
    return df[cols]


def run_experiments(dataset: str, methods: Sequence[str] | str, seeds: int | Sequence[int] | None = None,
                    profile: str = "quick", out_dir: str | os.PathLike = "results",
                    device: str = "cpu", overrides: dict[str, Any] | None = None,
                    progress: bool = True, batched: bool = True) -> pd.DataFrame:
    """Run every (method, seed), skipping finished ones; return the tidy results of the whole ``out_dir``.

    ``seeds``: an int n (seeds 0..n-1), a list, or None for the profile's count. ``batched``: run the seeds of
    a synthetic method together on :mod:`kdlib.batched` (same histories as the generic loop, tested), else
    one run at a time on :func:`run_one`. Records are written per (dataset, method, seed) either way.
    """
    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m]
    if seeds is None:
        seeds = profile_seeds(profile, dataset)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    out = Path(out_dir)
    runs_dir = out / "runs"
    configs = [resolve_config(dataset, m, profile, s, device=device, **(overrides or {}))
               for m in methods for s in seed_list]
    todo = []
    for cfg in configs:
        path = runs_dir / f"{cfg.key()}.json"
        if path.exists():
            try:
                if _same_config(json.loads(path.read_text())["config"], cfg):
                    continue
            except (json.JSONDecodeError, KeyError):
                pass  # a damaged record is recomputed
        todo.append(cfg)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"{dataset} runs")
    for on_batched, group in _groups(todo, batched):
        if on_batched:
            from kdlib.batched import run_batched

            with _threads_for(group[0]):  # also covers the teacher set-up done before the engine starts
                recs = run_batched(group)
        else:
            recs = [run_one(group[0], progress=False)]
        for cfg, rec in zip(group, recs):
            atomic_write_text(runs_dir / f"{cfg.key()}.json", json.dumps(rec))
        if bar is not None:
            bar.update(len(group))
    if bar is not None:
        bar.close()
    atomic_write_text(out / "config.json", json.dumps([c.to_dict() for c in configs], indent=1))
    wanted = {c.key() for c in configs}
    df = load_results(out, keys=wanted)
    atomic_write_text(out / "results.csv", df.to_csv(index=False))
    return df


def load_records(out_dir: str | os.PathLike, keys: set[str] | None = None) -> list[dict[str, Any]]:
    """The stored run records of ``out_dir`` (all, or only ``keys``)."""
    runs_dir = Path(out_dir) / "runs"
    recs = []
    for p in sorted(runs_dir.glob("*.json")):
        if keys is not None and p.stem not in keys:
            continue
        recs.append(json.loads(p.read_text()))
    return recs


def load_results(out_dir: str | os.PathLike, keys: set[str] | None = None) -> pd.DataFrame:
    """Tidy results (one row per logged step) of the runs stored in ``out_dir``."""
    return records_to_frame(load_records(out_dir, keys))


def final_accuracy(df: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method, seed): the test accuracy at the last logged point."""
    last = df.sort_values("step").groupby(["dataset", "method", "seed"], as_index=False).tail(1)
    return last[["dataset", "method", "seed", "test_accuracy"]].reset_index(drop=True)


def fixed_grid(cfg: ExperimentConfig, lambda1s: Sequence[float], temperatures: Sequence[float]) -> pd.DataFrame:
    """Train the student of ``cfg`` once per fixed (lambda1, T) on a grid, from the same initialisation.

    Returns one row per grid point: lambda1, temperature, val_loss (L_val at T_val on D_val after training)
    and test_accuracy: the outer objective of the bilevel problem (1)-(2), drawn pointwise.
    """
    from kdlib.methods import FixedController
    from kdlib.train import evaluate, train_student

    rows = []
    with _threads_for(cfg):
        bundle = load_bundle(cfg)
        problem = build_problem(cfg, bundle, load_teacher(cfg, bundle))
        for l1 in lambda1s:
            for temp in temperatures:
                lam = torch.tensor([float(l1), float(temp)], dtype=torch.float32)
                out = train_student(cfg, problem, FixedController(lam))
                _, val_loss = evaluate(out.model, problem.val, cfg.t_val)
                rows.append(dict(lambda1=float(l1), temperature=float(temp), val_loss=val_loss,
                                 test_accuracy=out.history[-1]["test_accuracy"]))
    return pd.DataFrame(rows)
