"""Is the difference between two methods of Table 2 larger than the seed spread?

The paper's Table 2 claims an ordering of the methods (e.g. gradient-based tuning above training without
distillation, Sec. 4.2) from the mean final accuracy over runs. With a few seeds the means can differ by less than
the runs scatter. :func:`paired_difference` pairs the runs of two methods by seed (same seed, same student
initialisation and data order), takes the per-seed difference of the final accuracy
(:mod:`kdlib.analysis.final`), and calls the two methods **separated** when the 95 % Student-t interval of the
mean difference excludes zero, i.e. when ``|mean| > t_{0.975, n-1} * std / sqrt(n)`` with ``std`` the sample
standard deviation (ddof=1) of the per-seed differences. Seeds where either run diverged are left out.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

# two-sided 95 % quantiles t_{0.975, df} of Student's t, df = 1..30 (standard tables); beyond 30 the normal 1.96
T975: tuple[float, ...] = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                           2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                           2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The two-sided 95 % Student-t quantile for ``df`` degrees of freedom (:data:`T975`; 1.96 beyond 30)."""
    if df < 1:
        raise ValueError(f"need at least 1 degree of freedom, got {df}")
    return T975[df - 1] if df <= len(T975) else 1.96


def paired_difference(final: pd.DataFrame, dataset: str, a: str, b: str) -> dict[str, Any]:
    """Final accuracy of method ``a`` minus method ``b`` on ``dataset``, paired by seed.

    ``final``: per-run final accuracies (:func:`kdlib.analysis.final.final_accuracy`). Returns ``n`` (paired
    seeds with both runs finite), ``mean`` and ``std`` (ddof=1) of the per-seed differences, ``half_width`` of
    the 95 % t-interval of the mean, ``low``/``high`` its ends and ``separated`` (the interval excludes zero;
    ``False`` with fewer than two pairs, where no spread can be measured)."""
    sel = final[final["dataset"] == dataset]
    acc = {m: sel[sel["method"] == m].set_index("seed")["test_accuracy"].astype(float) for m in (a, b)}
    both = pd.concat([acc[a].rename("a"), acc[b].rename("b")], axis=1, join="inner").dropna()
    diff = (both["a"] - both["b"]).to_numpy(dtype=float)
    n = int(diff.size)
    if n == 0:
        return dict(n=0, mean=math.nan, std=math.nan, half_width=math.nan, low=math.nan, high=math.nan,
                    separated=False)
    mean = float(diff.mean())
    if n < 2:
        return dict(n=1, mean=mean, std=math.nan, half_width=math.nan, low=math.nan, high=math.nan,
                    separated=False)
    std = float(diff.std(ddof=1))
    half = t975(n - 1) * std / math.sqrt(n)
    return dict(n=n, mean=mean, std=std, half_width=half, low=mean - half, high=mean + half,
                separated=bool(abs(mean) > half))


def separation_text(d: dict[str, Any], a_label: str, b_label: str) -> str:
    """One sentence saying whether ``a`` and ``b`` are separated by the seeds, with the numbers behind it."""
    if d["n"] < 2:
        return (f"{a_label} minus {b_label.lower()}: {d['n']} paired seed(s), too few to measure the seed spread, so "
                "the two are **not separated** by these runs.")
    body = (f"{a_label} minus {b_label.lower()}, paired by seed: {d['mean']:+.4f} on average, per-seed std "
            f"{d['std']:.4f} over {d['n']} seeds, 95 % interval [{d['low']:+.4f}, {d['high']:+.4f}]")
    if d["separated"]:
        return body + (f". The difference is larger than the seed spread: {a_label.lower()} is "
                       f"**{'above' if d['mean'] > 0 else 'below'}** {b_label.lower()} at this scale.")
    return body + (". The difference is **not larger than the seed spread**: these runs do not separate the two "
                   "methods, and the sign of the difference is not established at this scale.")
