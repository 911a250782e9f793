"""The synthetic column of Table 2 with the Tuner's step before the backward (the paper) and after it (issue 22).

    python -m benchmarks.placement --out results/placement [--seeds 10] [--profile paper] [--estimator unrolled]

Runs (or reads, if stored) the six methods x the seeds at the profile on the authors' data variant, once with
``placement=before_backward`` and once with ``placement=after_backward`` (the hypergradient from the loop's
``.grad``, the new values acting one step late; the fixed-value methods train identically under both), into one
store. Prints JSON: per method the final test accuracy's mean, max and population std (the paper's ±) both ways,
the mean difference (after - before), the seed-paired difference with its 95 % t-interval
(:func:`kdlib.analysis.separation.paired_difference`) and whether the change is within the seed spread:
``|mean difference| <= the larger std`` and the paired interval includes zero.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import pandas as pd

from kdlib.analysis.final import summarize
from kdlib.analysis.separation import paired_difference
from kdlib.experiments.runner import run_experiments
from kdlib.experiments.store import run_finals
from kdlib.names import METHOD_NAMES, PLACEMENTS


def compare(out: str, seeds: int = 10, profile: str = "paper", variant: str = "authors",
            methods: tuple[str, ...] = METHOD_NAMES, **overrides: Any) -> dict[str, Any]:
    """Per method: both placements' summaries, the difference and whether it is within the seed spread
    (``overrides``: more config fields, e.g. ``estimator="unrolled"``)."""
    finals = {}
    for placement in PLACEMENTS:
        df = run_experiments("synthetic", list(methods), seeds, profile, out,
                             overrides=dict(overrides, variant=variant, placement=placement), progress=False)
        finals[placement] = run_finals(df)
    before, after = finals["before_backward"], finals["after_backward"]
    rows: dict[str, Any] = {}
    for m in methods:
        a = summarize(before[before["method"] == m]["test_accuracy"])
        b = summarize(after[after["method"] == m]["test_accuracy"])
        both = before[before["method"] == m].assign(method="before"), after[after["method"] == m].assign(
            method="after")
        paired = paired_difference(pd.concat(both), "synthetic", "after", "before")
        diff = b["mean"] - a["mean"]
        spread = max(a["std"], b["std"])
        rows[m] = dict(before=a, after=b, difference=diff, paired=paired, seed_spread=spread,
                       within_spread=bool(abs(diff) <= spread + 1e-12 and not paired["separated"]))
    return dict(setup=dict(dataset="synthetic", profile=profile, variant=variant, seeds=seeds, out=out,
                           overrides=overrides,
                           statistic="final test accuracy; std ddof=0 (the paper's ±); paired: after - before by "
                                     "seed, 95 % t-interval"),
                methods=rows, all_within_spread=all(r["within_spread"] for r in rows.values()))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--variant", default="authors")
    ap.add_argument("--estimator", default=None, help="the hypergradient estimator (default: the profile's)")
    args = ap.parse_args(argv)
    over = {} if args.estimator is None else dict(estimator=args.estimator)
    res = compare(args.out, args.seeds, args.profile, args.variant, **over)
    print(json.dumps(res, indent=1, sort_keys=True, default=float))
    return res


if __name__ == "__main__":
    main()
