"""Issue test 8: the synthetic column at the paper's full scale (2,000 iterations, 10 seeds).

The paper reports 0.77 (gradient) vs 0.63 (no distillation). With the authors' data variant and protocol,
kdlib lands on the same numbers; with the paper-text variant (the student sees [sign x1 + sign x2 > 0], which
cannot express the XOR label) neither method gets there, and the ordering does not hold. The ordering is
asserted on the variant that reproduces it; the other variant's figures are only recorded (printed).
"""
from __future__ import annotations

import pytest

from kdlib.analysis import final_accuracy
from kdlib.experiments.runner import run_experiments


@pytest.fixture(scope="module")
def column(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic_paper")
    out = {}
    for variant in ("authors", "paper"):
        df = run_experiments("synthetic", ["no_distillation", "gradient"], 10, "paper", base / variant,
                             overrides={"variant": variant}, progress=False)
        fin = final_accuracy(df)
        out[variant] = fin.groupby("method")["test_accuracy"].agg(["mean", "max", "std", "count"])
        print(f"\n[{variant} variant]\n{out[variant]}")
    return out


def test_full_scale_runs_ten_seeds(column):
    for variant, table in column.items():
        assert (table["count"] == 10).all(), variant


def test_authors_variant_gradient_beats_no_distillation(column):
    t = column["authors"]
    # the paper: 0.77 vs 0.63; assert the ordering with a margin well above seed noise (std ~0.02)
    assert t.loc["gradient", "mean"] - t.loc["no_distillation", "mean"] >= 0.08
    # and the absolute figures of Table 2's synthetic column, to two decimals
    assert abs(t.loc["no_distillation", "mean"] - 0.63) <= 0.015
    assert abs(t.loc["gradient", "mean"] - 0.77) <= 0.02


def test_paper_variant_does_not_reproduce_the_gain(column):
    # recorded, not tuned: with the paper-text features the student cannot express the XOR label
    t = column["paper"]
    assert t.loc["gradient", "mean"] < t.loc["no_distillation", "mean"] + 0.05
