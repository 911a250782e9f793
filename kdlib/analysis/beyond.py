"""The paper's method against 2023-24 adaptive-temperature distillation: the archived comparison and its numbers.

**Location.** The three methods beyond the paper (:data:`kdlib.names.BEYOND_METHOD_NAMES`) are archived at the
reduced CIFAR-10 paper protocol under ``archive/<dataset>/beyond/runs/*.json``, made with the same overrides as the
authors'-protocol column of the paper's six (:func:`kdlib.experiments.protocol.authors_protocol`, checked here) and
under one CPU-kernel pin, so the nine methods are read as one comparison: :func:`comparison_records` is the
authors' column plus this folder. :data:`ARCHIVE_COMMAND` is the command that makes it.

**Numbers.** :func:`accuracy_cost_table` (per method: final accuracy as mean (max) ± std, the paper's Table 2
statistics of :mod:`kdlib.analysis.final`, and the cost of a run: wall time, full trainings, hypergradient
evaluations), :func:`run_points` (per run: final accuracy and wall time), :func:`temperature_curves` (T per logged
epoch) and :func:`verdict` (paired-by-seed differences, :func:`kdlib.analysis.separation.paired_difference`:
a difference counts only when its 95 % interval excludes zero, i.e. it exceeds the seed spread).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from kdlib import cpu_kernels
from kdlib.analysis import archive as A
from kdlib.analysis.costs import run_summaries
from kdlib.analysis.final import records_final
from kdlib.analysis.separation import paired_difference
from kdlib.analysis.table2 import format_cell
from kdlib.experiments.protocol import archive_root, protocol_departures
from kdlib.names import ALL_METHOD_NAMES, BEYOND_METHOD_NAMES

BEYOND_FOLDER = "beyond"
# the comparisons the verdict makes: each new method against the paper's method and against no distillation
REFERENCES: tuple[str, ...] = ("gradient", "no_distillation")
ARCHIVE_COMMAND = (
    "python -m kdlib run --dataset cifar10_reduced --profile paper --seeds 10 --no-progress "
    "--cpu-kernels avx2 --workers 2 --methods " + ",".join(BEYOND_METHOD_NAMES) + " "
    "--out archive/cifar10_reduced/" + BEYOND_FOLDER + " "
    "--set init_law=authors --set fd_virtual_lr=initial --set proposed_reset=epoch --set loss_form=kl "
    "--set clamp_extrapolation=False --set random_law=loguniform --set eval_every=5")


def beyond_dir(dataset: str = "cifar10_reduced", root: str | os.PathLike | None = None) -> Path:
    """``<archive root>/<dataset>/beyond/runs``."""
    return Path(root if root is not None else archive_root()) / dataset / BEYOND_FOLDER / "runs"


def load_beyond(dataset: str = "cifar10_reduced", root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The archived runs of the three new methods (sorted by method, seed); empty when none is archived. Each
    record is validated (:func:`kdlib.analysis.archive.validate_record`) and must be of ``dataset``, of a method in
    :data:`BEYOND_METHOD_NAMES`, under the authors' protocol, one per (method, seed), all under one CPU-kernel pin;
    a ``ValueError`` names the file and the fix otherwise."""
    where = f"{dataset}/{BEYOND_FOLDER}/runs"
    recs = A.read_records(beyond_dir(dataset, root), where)
    seen: dict[tuple[str, int], str] = {}
    pins: dict[str, str] = {}
    for name, rec in recs.items():
        cfg = rec["config"]
        if cfg["dataset"] != dataset:
            raise ValueError(f"{where}/{name}: config.dataset is {cfg['dataset']!r}, not {dataset!r}")
        if cfg["method"] not in BEYOND_METHOD_NAMES:
            raise ValueError(f"{where}/{name}: method {cfg['method']!r} does not belong here (only "
                             f"{', '.join(BEYOND_METHOD_NAMES)}); fix: move it to its protocol folder")
        off = protocol_departures(cfg, dataset)
        if off:
            raise ValueError(f"{where}/{name}: not made under the authors' protocol of the column it is read "
                             f"beside: {off}; fix: re-make it with the overrides of ARCHIVE_COMMAND")
        cell = (cfg["method"], int(cfg["seed"]))
        if cell in seen:
            raise ValueError(f"{where}: {seen[cell]} and {name} are the same cell {cell}; fix: keep one")
        seen[cell] = name
        pins.setdefault(cpu_kernels.of_record(rec)[0], name)
    if len(pins) > 1:
        raise ValueError(f"{where}: records made under different CPU-kernel pins ({sorted(pins)}); fix: re-make "
                         "them under one (`--cpu-kernels avx2`)")
    return sorted(recs.values(), key=lambda r: (r["config"]["method"], int(r["config"]["seed"])))


def comparison_records(dataset: str = "cifar10_reduced",
                       root: str | os.PathLike | None = None) -> dict[str, list[dict[str, Any]]]:
    """``{"authors": the archived authors'-protocol column of the paper's six, "beyond": the three new methods}``."""
    return {"authors": A.load_archive(dataset, root=root, protocols=("authors",))["authors"],
            "beyond": load_beyond(dataset, root)}


def accuracy_cost_table(records: Iterable[dict[str, Any]], methods: Sequence[str] = ALL_METHOD_NAMES,
                        digits: int = 4) -> pd.DataFrame:
    """One row per method of ``methods`` (all of them, ``runs`` 0 where none is stored): ``runs`` (finite final
    accuracies), ``diverged``, ``mean``, ``max``, ``std`` (population, the paper's ±) of the final accuracy,
    ``accuracy`` formatted ``mean (max) ± std``, and per run on average ``wall_time_s`` (the record's whole wall
    time), ``trainings`` and ``hypergradients``; ``machine``: the CPU model(s) the runs were timed on
    (:func:`machine_of`), since wall times compare only between runs of one CPU model."""
    recs = list(records)
    fin = records_final(recs)
    summ = run_summaries(recs)
    rows = []
    for m in methods:
        acc = fin.loc[fin.method == m, "test_accuracy"].to_numpy(dtype=float)
        ok = acc[np.isfinite(acc)]
        s = summ[summ.method == m]
        mean, mx, std = (float(ok.mean()), float(ok.max()), float(ok.std(ddof=0))) if ok.size else (np.nan,) * 3
        rows.append(dict(method=m, runs=int(ok.size), diverged=int(acc.size - ok.size), mean=mean, max=mx, std=std,
                         accuracy=format_cell(mean, mx, std, digits),
                         wall_time_s=_mean(s.wall_time), trainings=_mean(s.full_trainings),
                         hypergradients=_mean(s.hypergrad_evals),
                         machine=machine_of(r for r in recs if r["config"]["method"] == m)))
    return pd.DataFrame(rows)


UNRECORDED_MACHINE = "CPU model not recorded"


def machine_of(records: Iterable[dict[str, Any]]) -> str:
    """The CPU model(s) a set of runs was timed on, from each record's ``provenance.cpu_model`` (sorted, joined
    by " + "; :data:`UNRECORDED_MACHINE` for records made before kdlib recorded it; "" for no record)."""
    models = {(r.get("provenance") or {}).get("cpu_model") or UNRECORDED_MACHINE for r in records}
    return " + ".join(sorted(models))


def same_machine(a: str, b: str) -> bool:
    """Whether two :func:`machine_of` strings name one recorded CPU model, so that wall times compare."""
    return bool(a) and a == b and " + " not in a and a != UNRECORDED_MACHINE


def _mean(values: pd.Series) -> float:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else np.nan


def run_points(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: method, seed, final accuracy (NaN when diverged), wall time (s), hypergradients."""
    s = run_summaries(list(records))
    return s[["method", "seed", "final_accuracy", "wall_time", "hypergrad_evals"]].reset_index(drop=True)


def temperature_curves(records: Iterable[dict[str, Any]], methods: Sequence[str] = ("ctkd", "gradient",
                                                                                     "gradient_std")) -> pd.DataFrame:
    """Tidy logged points of the runs of ``methods``: method, seed, epoch, temperature (the value trained at)."""
    rows = [dict(method=r["config"]["method"], seed=int(r["config"]["seed"]), epoch=h["epoch"],
                 temperature=h["temperature"])
            for r in records if r["config"]["method"] in methods for h in r["history"]]
    return pd.DataFrame(rows, columns=["method", "seed", "epoch", "temperature"])


def verdict(records: Iterable[dict[str, Any]], dataset: str = "cifar10_reduced",
            new: Sequence[str] = BEYOND_METHOD_NAMES, references: Sequence[str] = REFERENCES) -> pd.DataFrame:
    """Each new method minus each reference method, paired by seed (the same student initialisation and data
    order; under the authors' protocol the same start of the tuned methods): one row per pair with ``n`` (paired
    seeds, both finite), the mean difference, its 95 % interval (``low``, ``high``) and ``separated`` (the
    interval excludes zero: the difference exceeds the seed spread). Pairs with a method that has no run are left
    out."""
    fin = records_final(list(records))
    present = set(fin.method)
    rows = []
    for a in new:
        for b in references:
            if a in present and b in present and a != b:
                d = paired_difference(fin, dataset, a, b)
                rows.append(dict(method=a, reference=b, **{k: d[k] for k in ("n", "mean", "low", "high",
                                                                               "separated")}))
    return pd.DataFrame(rows, columns=["method", "reference", "n", "mean", "low", "high", "separated"])


__all__ = ["BEYOND_FOLDER", "REFERENCES", "ARCHIVE_COMMAND", "beyond_dir", "load_beyond", "comparison_records",
           "accuracy_cost_table", "machine_of", "same_machine", "UNRECORDED_MACHINE", "run_points", "temperature_curves", "verdict"]
