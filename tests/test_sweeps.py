"""kdlib.experiments.sweeps: the grids of the synthetic pages (Fig. 6's e1/e2 settings, the four data protocols,
the reproduction notes' ablations) are the runner calls the notebooks made, with the same folders and overrides."""
from __future__ import annotations

import pandas as pd
import pytest

from kdlib.experiments import sweeps as S
from kdlib.experiments.runner import run_experiments


def test_e1_e2_grid_is_fig6():
    full = S.e1_e2_grid("quick")
    assert list(full) == ["6a: e1 = e2", "6b: e1 = 10"]
    assert full["6a: e1 = e2"] == [(10, 10), (100, 100), (500, 500), (1000, 1000)]
    assert full["6b: e1 = 10"] == [(10, 10), (10, 20), (10, 40), (10, 90)]
    assert S.e1_e2_grid("paper") == full
    assert S.e1_e2_grid("smoke") == {"6a: e1 = e2": [(10, 10), (20, 20)], "6b: e1 = 10": [(10, 10), (10, 20)]}


@pytest.mark.parametrize("variant,other", [("authors", "paper"), ("paper", "authors")])
def test_synthetic_protocols_put_the_headline_run_first(variant, other):
    p = S.synthetic_protocols(variant)
    assert list(p.values()) == [({"variant": variant}, "synthetic"),
                                ({"variant": other}, f"synthetic_{other}"),
                                ({"variant": variant, "holdout": True}, f"synthetic_{variant}_holdout"),
                                ({"variant": other, "holdout": True}, f"synthetic_{other}_holdout")]
    assert list(p)[0] == f"{variant} variant, val = test"


def test_unknown_ablation_is_refused_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="loss_form"):
        S.run_ablation("t2", [0], "smoke", tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_ablation_equals_the_runner_calls_it_stands_for(tmp_path):
    got = S.run_ablation("clamp_extrapolation", [0], "smoke", tmp_path / "sweep")
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["synthetic_clamp_False", "synthetic_clamp_True"]
    want = pd.concat([run_experiments("synthetic", ["proposed"], [0], "smoke", tmp_path / "direct" / str(flag),
                                      overrides={"clamp_extrapolation": flag, "variant": "authors"},
                                      progress=False).assign(clamped=flag) for flag in (True, False)],
                     ignore_index=True)
    pd.testing.assert_frame_equal(got.drop(columns="wall_time"), want.drop(columns="wall_time"))
    assert list(got.clamped.unique()) == [True, False]
