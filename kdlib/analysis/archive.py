"""The archive of paper-protocol runs, read run by run against the authors' logs.

**Location and protocol.** Archived run records are committed under
``archive/<dataset>/<protocol>/runs/*.json``; where that is (:func:`~kdlib.experiments.protocol.archive_dir`,
:func:`~kdlib.experiments.protocol.pending_dir`, ``$KDLIB_ARCHIVE``) and what the ``authors`` protocol is
(:func:`~kdlib.experiments.protocol.authors_protocol`) are defined in :mod:`kdlib.experiments.protocol`; this
module reads the records. ``<protocol>`` is ``authors`` (the authors' protocol: ``init_law="authors"``,
``fd_virtual_lr="initial"``, ``proposed_reset="epoch"``, ``loss_form="kl"``, ``clamp_extrapolation=False``) or
``defaults`` (kdlib's defaults). Each file is one run record of the runner (config, history, summary,
provenance); run ``seed`` *i* under ``init_law="authors"`` starts from the authors' *i*-th draw, so it is
compared with the *i*-th line of their log.

**Branch.** Where λ1 ends, in the authors' convention (``lambda1_authors = 1 - lambda1``, the weight of the
distillation term): ``"distillation"`` when the last logged value is at least :data:`DISTILLATION_MIN`,
``"pure CE"`` when it is at most :data:`PURE_CE_MAX`, ``"between"`` otherwise. The same rule is applied to the
authors' logs and to our records.
"""
from __future__ import annotations

import itertools
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from kdlib import cpu_kernels
from kdlib.analysis import authors_logs
from kdlib.analysis.final import record_final, records_final, summarize
from kdlib.analysis.labels import METHODS, PROTOCOL_LABELS
from kdlib.analysis.table2 import format_numeric, table2_from_final
from kdlib.experiments.protocol import PROTOCOLS, archive_dir, authors_protocol, pending_dir, protocol_departures

# how close an archived column's mean final accuracy must be to the authors' log mean to count as reproduced
# (issue 19: 0.01 on Fashion-MNIST, 0.015 on the CIFAR-10 columns, whose runs spread more)
MEAN_TOLERANCE: dict[str, float] = {"fashion_mnist": 0.01, "cifar10_reduced": 0.015, "cifar10": 0.015}
DISTILLATION_MIN = 0.9
PURE_CE_MAX = 0.1
TUNED_METHODS: tuple[str, ...] = ("gradient", "proposed")
RUN_COLUMNS = ["source", "method", "run", "lambda1_authors_0", "temperature_0", "lambda1_authors_final",
               "temperature_final", "final_accuracy", "diverged", "branch"]
_HISTORY_FIELDS = ("epoch", "test_accuracy", "lambda1", "temperature")


def column_states(dataset: str, root: str | os.PathLike | None = None,
                  protocols: Sequence[str] = PROTOCOLS) -> dict[str, str]:
    """protocol -> ``"archived"`` (records in :func:`archive_dir`), ``"in progress"`` (none there, some in
    :func:`pending_dir`) or ``"empty"``: which folder ``load_archive(..., pending=True)`` reads."""
    out = {}
    for protocol in protocols:
        if any(archive_dir(dataset, protocol, root).glob("*.json")):
            out[protocol] = "archived"
        elif any(pending_dir(dataset, protocol, root).glob("*.json")):
            out[protocol] = "in progress"
        else:
            out[protocol] = "empty"
    return out


def validate_record(record: Any, where: str) -> dict[str, Any]:
    """Check that ``record`` is a run record (contract 2); raise ``ValueError`` naming ``where`` and the field."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a run record must be a JSON object")
    for part in ("config", "history", "summary", "provenance"):
        if part not in record:
            raise ValueError(f"{where}: missing '{part}' (a run record has config, history, summary, provenance)")
    for key in ("dataset", "method", "seed"):
        if key not in record["config"]:
            raise ValueError(f"{where}: config lacks '{key}'")
    if not isinstance(record["history"], list) or not record["history"]:
        raise ValueError(f"{where}: 'history' must be a non-empty list of logged rows")
    for i, row in enumerate(record["history"]):
        missing = [f for f in _HISTORY_FIELDS if f not in row]
        if missing:
            raise ValueError(f"{where}: history[{i}] lacks {missing}")
    status = record["summary"].get("status", "ok")
    if status not in ("ok", "diverged"):
        raise ValueError(f"{where}: summary.status is {status!r}; expected 'ok' or 'diverged'")
    return record


def read_records(folder: str | os.PathLike, where: str) -> dict[str, dict[str, Any]]:
    """file name -> run record for every ``*.json`` in ``folder`` (sorted by name), each validated
    (:func:`validate_record`; an error names ``<where>/<file>``). An absent folder holds no record."""
    recs = {}
    for p in sorted(Path(folder).glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p.name}: not valid JSON ({exc})") from exc
        recs[p.name] = validate_record(rec, f"{where}/{p.name}")
    return recs


def load_archive(dataset: str = "cifar10_reduced", root: str | os.PathLike | None = None,
                 protocols: Sequence[str] = PROTOCOLS, pending: bool = False) -> dict[str, list[dict[str, Any]]]:
    """protocol -> the archived run records of ``dataset`` (sorted by method, seed); empty lists when the
    archive holds none. Every record is validated (:func:`validate_record`); a protocol folder must hold one
    record per (method, seed), of one CPU-kernel pin (``provenance.cpu_kernels``, :mod:`kdlib.cpu_kernels`).
    ``pending=True``: a protocol with no archived record reads its column in progress (:func:`pending_dir`,
    :func:`column_states` says which), under the same checks."""
    out: dict[str, list[dict[str, Any]]] = {}
    states = column_states(dataset, root, protocols) if pending else {}
    for protocol in protocols:
        if states.get(protocol) == "in progress":
            where, folder = f"pending/{dataset}/{protocol}/runs", pending_dir(dataset, protocol, root)
        else:
            where, folder = f"{dataset}/{protocol}/runs", archive_dir(dataset, protocol, root)
        recs = read_records(folder, where)
        seen: dict[tuple[str, int], str] = {}
        pins: dict[str, str] = {}
        for name, rec in recs.items():
            pins.setdefault(str(rec["provenance"].get("cpu_kernels", "native")), name)
            if rec["config"]["dataset"] != dataset:
                raise ValueError(f"{where}/{name}: config.dataset is {rec['config']['dataset']!r}, not {dataset!r}")
            if protocol == "authors":
                off = protocol_departures(rec["config"], dataset)
                if off:
                    raise ValueError(f"{where}/{name}: not the authors' protocol: {off} (expected "
                                     f"{authors_protocol(rec['config']['method'], dataset)}); fix: move it to "
                                     "another protocol folder")
            cell = (rec["config"]["method"], int(rec["config"]["seed"]))
            if cell in seen:
                raise ValueError(f"{where}: {seen[cell]} and {name} are the same cell {cell} under two configs; "
                                 "fix: keep one (delete the stale record)")
            seen[cell] = name
        if len(pins) > 1:
            (a, ra), (b, rb) = sorted(pins.items())[:2]
            raise ValueError(f"{where}: {ra} was made with CPU kernels {a!r} and {rb} with {b!r}: one column must "
                             "not mix kernel pins (its runs would round differently); fix: re-make the others "
                             "under one pin (`kdlib run --cpu-kernels ...`) or move them to another folder")
        out[protocol] = sorted(recs.values(), key=lambda r: (r["config"]["method"], int(r["config"]["seed"])))
    return out


def archive_is_empty(archive: dict[str, list[dict[str, Any]]]) -> bool:
    return not any(archive.values())


def branch_of(lambda1_authors: float) -> str:
    """The branch of a run from its final λ1 in the authors' convention (see the module docstring)."""
    if lambda1_authors is None or not np.isfinite(lambda1_authors):
        return "diverged"
    if lambda1_authors >= DISTILLATION_MIN:
        return "distillation"
    if lambda1_authors <= PURE_CE_MAX:
        return "pure CE"
    return "between"


def _run_row(source: str, method: str, run: int, first: dict, last: dict, acc: float, diverged: bool,
             convert: bool = True) -> dict[str, Any]:
    lam0, lamf = float(first["lambda1"]), float(last["lambda1"])
    la0, laf = (1.0 - lam0, 1.0 - lamf) if convert else (lam0, lamf)
    return dict(source=source, method=method, run=int(run), lambda1_authors_0=la0,
                temperature_0=float(first["temperature"]), lambda1_authors_final=laf,
                temperature_final=float(last["temperature"]), final_accuracy=acc, diverged=bool(diverged),
                branch="diverged" if diverged else branch_of(laf))


def run_table(archive: dict[str, list[dict[str, Any]]], methods: Iterable[str] = TUNED_METHODS) -> pd.DataFrame:
    """One row per archived run of ``methods``: ``source`` (the protocol's label), method, run (= seed),
    λ1 (authors' convention) and T at the first logged epoch (epoch 0, as the authors logged it) and at the
    end, final accuracy (:func:`~kdlib.analysis.final.record_final`), diverged, branch."""
    methods = tuple(methods)
    rows = []
    for protocol, recs in archive.items():
        for rec in recs:
            cfg = rec["config"]
            if cfg["method"] not in methods:
                continue
            hist = sorted(rec["history"], key=lambda h: (h["epoch"], h.get("step", 0)))
            fin = record_final(rec)
            rows.append(_run_row(f"kdlib, {PROTOCOL_LABELS.get(protocol, protocol)}", cfg["method"], cfg["seed"],
                                 hist[0], hist[-1], fin["test_accuracy"], fin["diverged"]))
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def authors_run_table(logs: str | os.PathLike, dataset: str = "cifar10_reduced",
                      methods: Iterable[str] = TUNED_METHODS) -> pd.DataFrame:
    """The same rows as :func:`run_table` for the authors' Table 2 logs of ``dataset`` (``source`` =
    "authors' logs", ``run`` = line index of the log file)."""
    rows = []
    for m in methods:
        name = authors_logs.TABLE2_FILES[dataset][m]
        if name is None:
            continue
        cur = authors_logs.parse_log(Path(logs) / name, dataset=dataset, method=m)
        for run, d in cur.groupby("run", sort=True):
            d = d.sort_values("step")
            first, last = d.iloc[0].to_dict(), d.iloc[-1].to_dict()
            acc = float(last["accuracy"])
            ok = np.isfinite(acc)
            rows.append(_run_row("authors' logs", m, run, first, last, acc if ok else np.nan, not ok))
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def authors_initial_sequence(logs: str | os.PathLike, dataset: str = "cifar10_reduced") -> pd.DataFrame:
    """The authors' gradient-based runs at their first logged epoch, in run order: λ1 (their convention) and
    T after epoch 0 (the successive ``np.random.seed(42)`` draws after one epoch of tuning)."""
    t = authors_run_table(logs, dataset, methods=("gradient",))
    return t[["run", "lambda1_authors_0", "temperature_0"]].reset_index(drop=True)


def branch_comparison(ours: pd.DataFrame, theirs: pd.DataFrame) -> pd.DataFrame:
    """Run by run: for every (source of ours, method, run) the authors' run with the same index beside it,
    and ``same_branch``. ``ours`` / ``theirs`` come from :func:`run_table` / :func:`authors_run_table`."""
    cols = ["method", "run", "temperature_0", "branch", "final_accuracy"]
    t = theirs[cols].rename(columns={"temperature_0": "T0 (authors)", "branch": "branch (authors)",
                                     "final_accuracy": "final accuracy (authors)"})
    o = ours[["source", *cols]].rename(columns={"temperature_0": "T0 (ours)", "branch": "branch (ours)",
                                                "final_accuracy": "final accuracy (ours)"})
    out = o.merge(t, on=["method", "run"], how="left")
    out["same_branch"] = out["branch (ours)"] == out["branch (authors)"]
    return out.sort_values(["source", "method", "run"]).reset_index(drop=True)


def agreement(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per (source, method): runs compared, runs on the authors' branch, and the means of both columns."""
    g = comparison.groupby(["source", "method"], sort=True)
    return pd.DataFrame({"runs": g.size(), "same branch": g["same_branch"].sum().astype(int),
                         "mean final accuracy (ours)": g["final accuracy (ours)"].mean(),
                         "mean final accuracy (authors)": g["final accuracy (authors)"].mean()}).reset_index()


def archive_curves(archive: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """Tidy per-epoch rows of every archived record: protocol, method, seed, epoch, test_accuracy, lambda1
    (kdlib's convention), temperature."""
    rows = []
    for protocol, recs in archive.items():
        for rec in recs:
            c = rec["config"]
            for h in rec["history"]:
                rows.append(dict(protocol=protocol, dataset=c["dataset"], method=c["method"], seed=c["seed"],
                                 step=h.get("step", h["epoch"]), epoch=h["epoch"],
                                 test_accuracy=h["test_accuracy"], lambda1=h["lambda1"],
                                 temperature=h["temperature"], phase=h.get("phase")))
    return pd.DataFrame(rows, columns=["protocol", "dataset", "method", "seed", "step", "epoch", "test_accuracy",
                                       "lambda1", "temperature", "phase"])


def archive_table2(archive: dict[str, list[dict[str, Any]]], dataset: str = "cifar10_reduced",
                   methods: Sequence[str] = METHODS, digits: int = 4) -> dict[str, pd.DataFrame]:
    """protocol -> the Table 2 column of its archived runs (formatted as :func:`~kdlib.analysis.table2.table2`,
    a ``diverged`` column when some run diverged) and ``runs``, the number of finished runs per method (an
    archive may hold fewer than the paper's 10 while it is being produced); protocols with no records are left
    out."""
    out = {}
    for protocol, recs in archive.items():
        if recs:
            num = table2_from_final(records_final(recs), [dataset], methods)
            table = format_numeric(num, [dataset], methods, digits)
            table["runs"] = num.set_index("method")["n"].reindex(table.index).fillna(0).astype(int)
            out[protocol] = table
    return out


def against_authors(archive: dict[str, list[dict[str, Any]]], logs: str | os.PathLike, dataset: str,
                    methods: Sequence[str] = METHODS) -> pd.DataFrame:
    """Per (protocol, method) with archived runs: runs, our mean final accuracy, the authors' log mean (None
    where they logged none), the difference and whether it is within :data:`MEAN_TOLERANCE`."""
    theirs = {}
    for m in methods:
        name = authors_logs.TABLE2_FILES[dataset].get(m)
        if name is not None and (Path(logs) / name).exists():
            theirs[m] = summarize(authors_logs.final_accuracies(Path(logs) / name))["mean"]
    tol = MEAN_TOLERANCE.get(dataset, 0.01)
    rows = []
    for protocol, recs in archive.items():
        num = table2_from_final(records_final(recs), [dataset], methods).set_index("method")
        for m in methods:
            if m not in num.index or int(num.loc[m, "n"]) + int(num.loc[m, "diverged"]) == 0:
                continue
            ref = theirs.get(m, np.nan)
            ours = float(num.loc[m, "mean"])
            diff = ours - ref if np.isfinite(ref) else np.nan
            rows.append(dict(protocol=protocol, method=m, runs=int(num.loc[m, "n"]),
                             diverged=int(num.loc[m, "diverged"]), ours=ours,
                             authors=float(ref) if np.isfinite(ref) else np.nan, difference=diff,
                             within=bool(np.isfinite(diff) and abs(diff) <= tol), tolerance=tol))
    return pd.DataFrame(rows, columns=["protocol", "method", "runs", "diverged", "ours", "authors", "difference",
                                       "within", "tolerance"])


def _kernels_label(pin: str, capability: str | None) -> str:
    return (f"{pin.upper()} pin" if pin != cpu_kernels.NATIVE
            else f"native, {capability}" if capability else "native, not recorded")


def provenance_table(archive: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """Per protocol: records, and the distinct kdlib versions, commits, torch versions, thread counts, CPU
    kernels (a pin, or the host's own and which) and machines of their ``provenance``, with the total wall time of the runs."""
    rows = []
    for protocol, recs in archive.items():
        if not recs:
            continue

        def distinct(key: str) -> str:
            values = {str(r["provenance"].get(key, "—")) for r in recs}
            if key == "commit":  # with the commits of a resumed run's earlier sittings; short hashes, "+dirty" kept
                values |= {str(s[2]) for r in recs for s in r["provenance"].get("earlier_sittings", [])
                           if len(s) > 2}
                values = {v[:8] + ("+dirty" if v.endswith("+dirty") else "") for v in values}
            return ", ".join(sorted(values))
        wall = sum(float(r["summary"].get("wall_time") or 0.0) for r in recs)
        rows.append({"protocol": PROTOCOL_LABELS.get(protocol, protocol), "records": len(recs),
                     "kdlib": distinct("kdlib_version"), "commit": distinct("commit"), "torch": distinct("torch"),
                     "threads": distinct("threads"), "CPU kernels": ", ".join(sorted(
                         {_kernels_label(*cpu_kernels.of_record(r)) for r in recs})),
                     "machine": distinct("machine"),
                     "total wall time (h)": round(wall / 3600, 2)})
    return pd.DataFrame(rows)


def column_timing(records: Sequence[dict[str, Any]], gap_s: float = 600.0) -> dict[str, Any]:
    """Wall-clock facts of a set of run records from their provenance: the number of runs, the summed run time
    (CPU-side work, one process per run), the span from the first run's start (its ``created`` time minus its
    wall time) to the last run's end, and the busy wall time: the span less every stretch longer than ``gap_s``
    in which no run was going. ``sittings`` counts the busy stretches: 1 when one command produced them all in
    one go (then ``busy_s`` is its end-to-end wall time); a column resumed later has more, and only ``busy_s``
    (not ``span_s``) is its compute wall time. A run resumed from a checkpoint (``provenance.resumed``) counts its
    earlier sittings where they ran (``provenance.earlier_sittings``: start, end, commit) and its last one before
    ``created``."""
    if not records:
        return {"runs": 0}
    intervals, total = [], 0.0
    for r in records:
        prov = r["provenance"]
        wall = float(r["summary"].get("wall_time") or 0.0)
        end = datetime.fromisoformat(prov["created"]).timestamp()
        intervals.append((end - (wall - float(prov.get("earlier_sittings_s") or 0.0)), end))
        intervals += [(datetime.fromisoformat(a).timestamp(), datetime.fromisoformat(b).timestamp())
                      for a, b, *_ in prov.get("earlier_sittings", [])]
        total += wall
    intervals.sort()
    busy, sittings = 0.0, 1
    lo, hi = intervals[0]
    for a, b in intervals[1:]:
        if a > hi + gap_s:
            busy, sittings, lo, hi = busy + (hi - lo), sittings + 1, a, b
        else:
            hi = max(hi, b)
    busy += hi - lo
    start, end = intervals[0][0], hi  # a sitting starts after every earlier end, so the last hi is the last end
    span = end - start
    return {"runs": len(records), "summed_run_s": round(total, 1), "span_s": round(span, 1),
            "span_h": round(span / 3600, 3), "sittings": sittings, "busy_s": round(busy, 1),
            "busy_h": round(busy / 3600, 3), "parallelism": round(total / busy, 2) if busy > 0 else None,
            "first_start": datetime.fromtimestamp(start).astimezone().isoformat(timespec="seconds"),
            "last_end": datetime.fromtimestamp(end).astimezone().isoformat(timespec="seconds")}


def branch_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (source, method, branch) of a :func:`run_table` / :func:`authors_run_table` frame: the runs on that
    branch, their mean initial-epoch T and their mean final accuracy."""
    if not len(runs):
        return pd.DataFrame(columns=["source", "method", "branch", "runs", "mean T after epoch 0",
                                     "mean final accuracy"])
    g = runs.groupby(["source", "method", "branch"], sort=True)
    return pd.DataFrame({"runs": g.size(), "mean T after epoch 0": g["temperature_0"].mean(),
                         "mean final accuracy": g["final_accuracy"].mean()}).reset_index()


FACTORIAL_COLUMNS = ["runs", "seeds", "distillation", "between", "pure CE", "diverged", "mean final accuracy",
                     "std final accuracy", "mean final lambda1_authors"]


def factorial_table(records: Iterable[dict[str, Any]], factors: Mapping[str, Sequence[Any]],
                    method: str = "gradient") -> pd.DataFrame:
    """The runs of ``method`` in a design over config ``factors`` (field -> its levels, in display order).

    One row per combination of levels (all of them, in order, the factor fields as columns): the runs, their
    seeds, the runs on each branch (:func:`branch_of` on the last logged λ1, ``diverged`` for a diverged run),
    the mean and standard deviation (ddof 0, as Table 2) of the final accuracy over the finished runs, and the
    mean final λ1 in the authors' convention. A combination without records has 0 runs and NaN means. Records of
    other methods or of levels outside ``factors`` are left out; two records of one seed in one combination
    raise ``ValueError``."""
    fields = list(factors)
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for rec in records:
        cfg = rec["config"]
        if cfg["method"] != method:
            continue
        levels = tuple(cfg.get(f) for f in fields)
        if any(level not in factors[f] for f, level in zip(fields, levels)):
            continue
        hist = sorted(rec["history"], key=lambda h: (h["epoch"], h.get("step", 0)))
        fin = record_final(rec)
        row = _run_row("", method, cfg["seed"], hist[0], hist[-1], fin["test_accuracy"], fin["diverged"])
        if any(r["run"] == row["run"] for r in cells.get(levels, [])):
            raise ValueError(f"two records of {method} seed {row['run']} at {dict(zip(fields, levels))}: keep one")
        cells.setdefault(levels, []).append(row)
    out = []
    for levels in itertools.product(*(factors[f] for f in fields)):
        rows = pd.DataFrame(cells.get(levels, []), columns=RUN_COLUMNS)
        ok = rows[~rows.diverged.astype(bool)]
        acc = ok.final_accuracy.to_numpy(dtype=float)
        out.append({**dict(zip(fields, levels)), "runs": len(rows), "seeds": sorted(int(s) for s in rows.run),
                    **{b: int((rows.branch == b).sum()) for b in ("distillation", "between", "pure CE", "diverged")},
                    "mean final accuracy": float(acc.mean()) if len(acc) else np.nan,
                    "std final accuracy": float(acc.std()) if len(acc) else np.nan,
                    "mean final lambda1_authors": float(ok.lambda1_authors_final.mean()) if len(ok) else np.nan})
    return pd.DataFrame(out, columns=[*fields, *FACTORIAL_COLUMNS])


def main_effects(table: pd.DataFrame, factors: Mapping[str, Sequence[Any]],
                 value: str = "mean final accuracy") -> dict[str, float]:
    """For each two-level factor of a :func:`factorial_table`: ``value`` at its first level minus at its second,
    each averaged with equal weight over the combinations of the other factors (the main effect of a 2^k design).
    NaN while a combination has no finished run."""
    if table[value].isna().any():
        return {f: float("nan") for f in factors}
    out = {}
    for f, levels in factors.items():
        if len(levels) != 2:
            raise ValueError(f"{f}: a main effect needs two levels, got {list(levels)}")
        out[f] = float(table.loc[table[f] == levels[0], value].mean() - table.loc[table[f] == levels[1], value].mean())
    return out


def val_test_table(groups: Mapping[str, Sequence[dict[str, Any]]], logs: str | os.PathLike, datasets: Sequence[str],
                   methods: Iterable[str] = TUNED_METHODS, epoch: int = 0) -> pd.DataFrame:
    """Validation loss over test loss after ``epoch``, one row per (source, method) with the runs, mean, min and
    max of the per-run ratio: the authors' logs of each of ``datasets`` (:func:`authors_logs.loss_ratios`), then
    each group of ``groups`` (label -> records) whose history logs ``test_loss``. D_val and the test set are
    both unseen images, so the ratio is about 1 unless one of them is transformed (augmented D_val raises it)."""
    methods = tuple(methods)
    rows = []

    def add(source: str, method: str, ratios: list[float]) -> None:
        if ratios:
            rows.append(dict(source=source, method=method, runs=len(ratios), mean=float(np.mean(ratios)),
                             min=float(np.min(ratios)), max=float(np.max(ratios))))

    for ds in datasets:
        for m in methods:
            name = authors_logs.TABLE2_FILES[ds].get(m)
            if name and (Path(logs) / name).exists():
                add(f"authors' logs, {ds}", m, authors_logs.loss_ratios(Path(logs) / name, epoch))
    for label, recs in groups.items():
        for m in methods:
            add(label, m, [h["val_loss"] / h["test_loss"] for r in recs if r["config"]["method"] == m
                           for h in r["history"] if h["epoch"] == epoch and h.get("test_loss")])
    return pd.DataFrame(rows, columns=["source", "method", "runs", "mean", "min", "max"])


def late_spread(curves: pd.DataFrame, from_epoch: int, x: str = "epoch", value: str = "test_accuracy") -> float:
    """The median over runs (column ``run``) of the standard deviation of ``value`` across the logged points at
    ``x >= from_epoch``: how much a run's accuracy still moves between checkpoints once its lr has decayed (a
    fresh random crop every epoch keeps it moving; the same batches every epoch let it settle)."""
    late = curves[curves[x] >= from_epoch]
    return float(late.groupby("run")[value].std(ddof=0).median())


def late_spread_table(archive: Mapping[str, Sequence[dict[str, Any]]], logs: str | os.PathLike, dataset: str,
                      from_epoch: int, methods: Iterable[str] = METHODS) -> pd.DataFrame:
    """:func:`late_spread` of every method in the authors' logs of ``dataset`` and in each group of ``archive``
    (label -> records), one row per (source, method) with the runs counted."""
    methods = tuple(methods)
    rows = []
    for m in methods:
        name = authors_logs.TABLE2_FILES[dataset].get(m)
        if name is not None:
            cur = authors_logs.parse_log(Path(logs) / name, dataset=dataset, method=m)
            rows.append(dict(source="authors' logs", method=m, runs=int(cur.run.nunique()),
                             spread=late_spread(cur, from_epoch, x="step", value="accuracy")))
    for label, recs in archive.items():
        cur = archive_curves({label: list(recs)}).rename(columns={"seed": "run"})
        for m, d in cur.groupby("method", sort=False):
            if m in methods:
                rows.append(dict(source=f"kdlib, {label}", method=m, runs=int(d.run.nunique()),
                                 spread=late_spread(d, from_epoch)))
    return pd.DataFrame(rows, columns=["source", "method", "runs", "spread"])
