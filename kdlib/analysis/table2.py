"""The paper's Table 2 from our runs: per (method, dataset) the mean, (max) and ± std over runs of the final
test accuracy (:mod:`kdlib.analysis.final`), with diverged runs counted in their own column.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from kdlib.analysis.final import final_accuracy, summarize
from kdlib.analysis.labels import DATASET_LABELS, DATASETS, METHOD_LABELS, METHODS


def table2_from_final(final: pd.DataFrame, datasets: Sequence[str] = DATASETS,
                      methods: Sequence[str] = METHODS) -> pd.DataFrame:
    """Long form from per-run final accuracies (:func:`~kdlib.analysis.final.final_accuracy` or
    :func:`~kdlib.analysis.final.records_final`): one row per (method, dataset) with mean, max, std
    (population, as the paper), n (finite runs) and diverged (runs with no finite final accuracy)."""
    rows = []
    for m in methods:
        for ds in datasets:
            sel = final[(final.method == m) & (final.dataset == ds)]
            acc = sel["test_accuracy"].to_numpy(dtype=float)
            if "diverged" in sel.columns:
                acc = np.where(sel["diverged"].to_numpy(dtype=bool), np.nan, acc)
            rows.append(dict(method=m, dataset=ds, **summarize(acc)))
    return pd.DataFrame(rows, columns=["method", "dataset", "mean", "max", "std", "n", "diverged"])


def table2_numeric(results: pd.DataFrame, datasets: Sequence[str] = DATASETS,
                   methods: Sequence[str] = METHODS) -> pd.DataFrame:
    """:func:`table2_from_final` of a runner results frame (one row per logged step)."""
    return table2_from_final(final_accuracy(results), datasets, methods)


def format_cell(mean: float, mx: float, std: float, digits: int = 4) -> str:
    """``mean (max) ± std`` with ``digits`` decimals; an em dash for a missing cell."""
    if mean is None or not np.isfinite(mean):
        return "—"
    return f"{mean:.{digits}f} ({mx:.{digits}f}) ± {std:.{digits}f}"


def format_numeric(num: pd.DataFrame, datasets: Sequence[str], methods: Sequence[str],
                   digits: int = 4) -> pd.DataFrame:
    """Rows methods, columns datasets, cells ``mean (max) ± std``; when any run diverged, one more column
    ``diverged`` with the count (per dataset when several are shown)."""
    num = num.copy()
    num["cell"] = [format_cell(a, b, c, digits) for a, b, c in zip(num["mean"], num["max"], num["std"])]
    out = num.pivot(index="method", columns="dataset", values="cell").loc[list(methods), list(datasets)]
    if "diverged" in num.columns and num["diverged"].fillna(0).sum() > 0:
        div = num.pivot(index="method", columns="dataset", values="diverged").loc[list(methods), list(datasets)]
        if len(datasets) == 1:
            out["diverged"] = div[datasets[0]].astype(int)
        else:
            out["diverged"] = [", ".join(f"{DATASET_LABELS.get(d, d)}: {int(v)}" for d, v in r.items() if v) or "0"
                               for _, r in div.iterrows()]
    out.index.name, out.columns.name = "method", "dataset"
    return out


def table2(results: pd.DataFrame, datasets: Sequence[str] = DATASETS, methods: Sequence[str] = METHODS,
           digits: int = 4) -> pd.DataFrame:
    """Table 2: rows = methods in paper order, columns = datasets, cells ``mean (max) ± std`` of the final test
    accuracy over seeds; ``—`` where nothing was run; a ``diverged`` column when some run diverged."""
    return format_numeric(table2_numeric(results, datasets, methods), datasets, methods, digits)


def side_by_side(ours: pd.DataFrame, authors: pd.DataFrame, datasets: Sequence[str] = DATASETS,
                 methods: Sequence[str] = METHODS,
                 extra: dict[tuple[str, str], pd.Series] | None = None) -> pd.DataFrame:
    """Formatted Table 2s (rows methods, columns datasets) interleaved: ``(<dataset>, ours)``, then any
    ``extra`` columns of that dataset (keyed ``(dataset, label)``, e.g. the archived paper-protocol runs), then
    ``(<dataset>, paper (authors' logs))``. Rows and datasets carry display labels."""
    cols = {}
    for ds in datasets:
        label = DATASET_LABELS.get(ds, ds)
        cols[(label, "ours")] = ours[ds] if ds in ours else "—"
        for (eds, name), col in (extra or {}).items():
            if eds == ds:
                cols[(label, name)] = col
        cols[(label, "paper (authors' logs)")] = authors[ds] if ds in authors else "—"
    if "diverged" in ours:
        cols[("", "diverged (ours)")] = ours["diverged"]
    out = pd.DataFrame(cols).reindex(list(methods)).fillna("—")
    out.index = [METHOD_LABELS.get(m, m) for m in out.index]
    return out
