"""What each method costs (hypergradient evaluations, full trainings, wall time), and the proposed method's
saving against gradient-based tuning: the claim of Sec. 3 that Algorithm 1 is cheaper, measured.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from kdlib.analysis.final import record_final
from kdlib.analysis.labels import DATASET_LABELS, METHOD_LABELS, METHODS

SUMMARY_COLUMNS = ["dataset", "method", "seed", "hypergrad_evals", "full_trainings", "wall_time",
                   "final_accuracy", "diverged"]


def run_summaries(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per stored run record (contract 2): dataset, method, seed and the summary's wall time (the whole
    run, hyperopt's search included), hypergradient evaluations, full trainings, final accuracy (NaN when
    diverged) and ``diverged``."""
    rows = []
    for rec in records:
        s, fin = rec["summary"], record_final(rec)
        rows.append(dict(dataset=fin["dataset"], method=fin["method"], seed=fin["seed"],
                         hypergrad_evals=s.get("hypergrad_evals"), full_trainings=s.get("full_trainings"),
                         wall_time=s.get("wall_time"), final_accuracy=fin["test_accuracy"],
                         diverged=fin["diverged"]))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def cost_table(results: pd.DataFrame | None, methods: Iterable[str] = METHODS,
               summaries: pd.DataFrame | None = None, wall_time: str = "mean") -> pd.DataFrame:
    """Per (dataset, method): mean over seeds of the hypergradient evaluations and full training runs, the
    ``wall_time`` statistic ("mean" or "median") of a run's wall time, plus the proposed method's saving
    against ``gradient`` in hypergradient evaluations and wall time (fractions, positive = cheaper).

    From ``results`` the counters are read at each run's last logged step (they are cumulative); the logged
    wall time of a hyperopt run covers only its final training, so pass ``summaries``
    (:func:`run_summaries`) to use each run's total wall time instead. The median suits runs timed on a shared
    machine, where a few runs are slowed by other work."""
    if wall_time not in ("mean", "median"):
        raise ValueError(f"cost_table: wall_time must be 'mean' or 'median', not {wall_time!r}")
    cols = ["hypergrad_evals", "full_trainings", "wall_time"]
    if summaries is not None and len(summaries):
        df = summaries
    else:
        df = results.sort_values(["dataset", "method", "seed", "step"], kind="stable")
    for c in cols:
        if c not in df.columns:
            df = df.assign(**{c: np.nan})
    last = df.groupby(["dataset", "method", "seed"], as_index=False)[cols].max()
    per = last.groupby(["dataset", "method"], as_index=False).agg(
        seeds=("seed", "nunique"), hypergrad_evals=("hypergrad_evals", "mean"),
        full_trainings=("full_trainings", "mean"), wall_time_s=("wall_time", wall_time))
    order = {m: i for i, m in enumerate(methods)}
    per = per[per.method.isin(order)].copy()
    per["saving_vs_gradient_evals"] = np.nan
    per["saving_vs_gradient_time"] = np.nan
    for _, grp in per.groupby("dataset"):
        g = grp[grp.method == "gradient"]
        p = grp[grp.method == "proposed"]
        if len(g) and len(p):
            gi, pi = g.index[0], p.index[0]
            if per.at[gi, "hypergrad_evals"] > 0:
                per.at[pi, "saving_vs_gradient_evals"] = 1 - per.at[pi, "hypergrad_evals"] / per.at[gi, "hypergrad_evals"]
            if per.at[gi, "wall_time_s"] > 0:
                per.at[pi, "saving_vs_gradient_time"] = 1 - per.at[pi, "wall_time_s"] / per.at[gi, "wall_time_s"]
    per["_o"] = per.method.map(order)
    return per.sort_values(["dataset", "_o"]).drop(columns="_o").reset_index(drop=True)


def count_text(v: float) -> str:
    """A count for a table: 12,345, or "—" where not a number."""
    return "—" if v is None or not np.isfinite(v) else f"{v:,.0f}"


def seconds_text(v: float) -> str:
    """A duration for a table: seconds below two minutes, else minutes; "—" where not a number."""
    if v is None or not np.isfinite(v):
        return "—"
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


def _saving(v: float) -> str:
    """A fraction saved as words: 0.48 -> "48% fewer", -0.05 -> "5% more"; blank where not applicable."""
    if v is None or not np.isfinite(v):
        return ""
    return f"{abs(v):.0%} {'fewer' if v >= 0 else 'more'}"


def cost_table_display(costs: pd.DataFrame) -> pd.DataFrame:
    """:func:`cost_table` for a reader: display labels, units, counts without decimals, no NaN, and the
    proposed method's saving as words ("48% fewer", "5% more") on its own row only."""
    rows = []
    for _, r in costs.iterrows():
        saving_time = _saving(r.saving_vs_gradient_time)
        rows.append({"Dataset": DATASET_LABELS.get(r.dataset, r.dataset),
                     "Method": METHOD_LABELS.get(r.method, r.method),
                     "Runs": int(r.seeds),
                     "Hypergradient evaluations per run": count_text(r.hypergrad_evals),
                     "Full trainings per run": count_text(r.full_trainings),
                     "Wall time per run": seconds_text(r.wall_time_s),
                     "vs gradient-based: hypergradients": _saving(r.saving_vs_gradient_evals),
                     "vs gradient-based: wall time": saving_time.replace("fewer", "less")})
    return pd.DataFrame(rows)
