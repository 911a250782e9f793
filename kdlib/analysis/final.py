"""Final accuracy of a run: the one definition every table, page and command uses.

The paper's Table 2 reports, per (dataset, method), the mean, the max and the ± (population std) over runs of
the test accuracy at the *last logged step* of each run. A run is **diverged** when that last accuracy is not a
finite number (its record says ``summary.status == "diverged"`` and ``final_accuracy`` null, or its last logged
``test_accuracy`` is NaN). A diverged run is never averaged as a number: it is excluded from mean, max and std
and counted separately (``diverged``). An earlier finite accuracy of a diverged run is *not* used in its place.

Hyperopt's search trials (``phase`` starting with ``"search"``) are not the reported run and are ignored.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

RUN_KEYS: tuple[str, ...] = ("dataset", "method", "seed")
FINAL_COLUMNS: list[str] = [*RUN_KEYS, "test_accuracy", "diverged"]


def _reported(results: pd.DataFrame) -> pd.DataFrame:
    if "phase" not in results.columns:
        return results
    phase = results["phase"]
    return results[phase.isna() | ~phase.astype(str).str.startswith("search")]


def final_rows(results: pd.DataFrame, by: Sequence[str] = RUN_KEYS) -> pd.DataFrame:
    """The last logged row (largest ``step``) of every run, all columns kept, plus a bool ``diverged``.

    ``by`` names the columns that identify one run (default dataset, method, seed; a page comparing two
    settings passes e.g. ``("loss_form", "seed")``). Rows are ordered by ``by``.
    """
    need = set(by) | {"step", "test_accuracy"}
    missing = need - set(results.columns)
    if missing:
        raise ValueError(f"results frame lacks column(s) {sorted(missing)}; it needs {sorted(need)}")
    df = _reported(results).sort_values([*by, "step"], kind="stable")
    last = df.groupby(list(by), as_index=False, sort=True).tail(1).copy()
    acc = pd.to_numeric(last["test_accuracy"], errors="coerce")
    diverged = ~np.isfinite(acc.to_numpy(dtype=float))
    if "status" in last.columns:
        diverged |= (last["status"] == "diverged").to_numpy()
    last["test_accuracy"] = acc.where(~diverged)
    last["diverged"] = diverged
    return last.sort_values(list(by), kind="stable").reset_index(drop=True)


def final_accuracy(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, method, seed): ``test_accuracy`` at the run's last logged step (NaN when diverged)
    and ``diverged`` (bool)."""
    return final_rows(results, RUN_KEYS)[FINAL_COLUMNS]


def record_final(record: dict[str, Any]) -> dict[str, Any]:
    """dataset, method, seed, test_accuracy (None when diverged) and diverged of one run record (contract 2:
    ``summary.status`` and ``summary.final_accuracy``; older records without a status are diverged when their
    final accuracy is null or not finite)."""
    try:
        cfg, summ = record["config"], record["summary"]
    except (KeyError, TypeError) as exc:
        raise ValueError("a run record needs 'config' and 'summary' objects") from exc
    acc = summ.get("final_accuracy")
    finite = acc is not None and math.isfinite(float(acc))
    diverged = summ.get("status") == "diverged" or not finite
    return dict(dataset=cfg.get("dataset"), method=cfg.get("method"), seed=cfg.get("seed"),
                test_accuracy=float(acc) if finite and not diverged else np.nan, diverged=bool(diverged))


def records_final(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """:func:`record_final` of every record, as a frame with columns :data:`FINAL_COLUMNS`."""
    return pd.DataFrame([record_final(r) for r in records], columns=FINAL_COLUMNS)


def summarize(accuracies: Iterable[float | None]) -> dict[str, float | int]:
    """mean, max, population std (ddof=0, the paper's ±) and n over the finite accuracies, and ``diverged``:
    how many were null or not finite (never averaged)."""
    acc = np.array([np.nan if a is None else float(a) for a in accuracies], dtype=float)
    ok = acc[np.isfinite(acc)]
    n_div = int(acc.size - ok.size)
    if ok.size == 0:
        return dict(mean=np.nan, max=np.nan, std=np.nan, n=0, diverged=n_div)
    return dict(mean=float(ok.mean()), max=float(ok.max()), std=float(ok.std(ddof=0)), n=int(ok.size),
                diverged=n_div)
