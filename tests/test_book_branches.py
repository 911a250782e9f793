"""kdlib.book.branches and kdlib.experiments.sweeps: the "why the branches?" section read from tiny records
built here (branch rule, cost relative to one-step, the generated verdict, the empty folder)."""
from __future__ import annotations

import json
import math

import matplotlib
import pytest

matplotlib.use("Agg")

from kdlib.experiments.protocol import AUTHORS_PROTOCOL  # noqa: E402
from kdlib.book import branches as B  # noqa: E402
from kdlib.experiments.profiles import resolve_config  # noqa: E402
from kdlib.experiments.sweeps import BRANCHES_VARIANTS, branches_overrides, variant_of  # noqa: E402


def _record(seed, variant, lam_authors, temps, seconds_per_epoch):
    config = dict(dataset="cifar10_reduced", method="gradient", seed=seed, meta_lr=0.25, meta_clip=0.01,
                  estimator="finite_difference", unroll_steps=1, temperature_param="linear", **AUTHORS_PROTOCOL)
    config.update(BRANCHES_VARIANTS[variant])
    history = [dict(step=e, epoch=e, test_accuracy=0.3 + 0.01 * e, lambda1=1.0 - la, temperature=t,
                    wall_time=seconds_per_epoch * (e + 1)) for e, (la, t) in enumerate(zip(lam_authors, temps))]
    return dict(config=config, history=history, summary=dict(status="ok"),
                provenance=dict(commit="abc1234", torch="2.x", threads=1, machine="test"))


def _write(root, recs):
    runs = root / "runs"
    runs.mkdir(parents=True)
    for i, rec in enumerate(recs):
        (runs / f"r{i}.json").write_text(json.dumps(rec))
    return root


@pytest.fixture
def tiny(tmp_path):
    return _write(tmp_path / "branches", [
        _record(2, "one-step", [0.0, 0.0, 0.0], [0.36, 0.36, 0.37], 8.0),
        _record(2, "unrolled K=5", [0.3, 0.6, 0.95], [0.4, 0.8, 1.5], 64.0),   # reaches distillation
        _record(2, "log T", [0.2, 0.3, 0.5], [0.3, 0.35, 0.4], 8.0),          # between: undecided
        _record(7, "one-step", [0.0, 0.0, 0.0], [0.39, 0.4, 0.42], 10.0),
        _record(7, "unrolled K=5", [0.0, 0.0, 0.05], [0.4, 0.4, 0.41], 70.0),
        _record(0, "one-step", [0.58, 0.78, 0.92], [8.1, 8.3, 8.5], 9.0),
    ])


def test_table_branches_costs_and_order(tiny):
    t = B.branches_table(B.load_branch_records(tiny))
    assert list(zip(t.run, t.variant)) == [(2, "one-step"), (2, "log T"), (2, "unrolled K=5"), (7, "one-step"),
                                           (7, "unrolled K=5"), (0, "one-step")]  # small-T starts first
    assert t.branch.tolist() == ["pure CE", "undecided", "distillation", "pure CE", "pure CE", "distillation"]
    assert t.cost_vs_one_step.tolist() == pytest.approx([1.0, 1.0, 8.0, 1.0, 7.0, 1.0])
    assert t.trajectory[2] == [pytest.approx((0.3, 0.4)), pytest.approx((0.6, 0.8)), pytest.approx((0.95, 1.5))]
    assert t.T0[0] == pytest.approx(0.2054, abs=1e-3)  # the authors' run-2 draw, 10 ** U(-1, 1)
    shown = B.branches_display(t)
    assert shown["λ1 / T after epoch 2"][2] == "0.95 / 1.50" and shown["time per epoch vs one-step"][2] == "8.0×"


def test_verdict_names_the_variant_that_leaves_and_its_cost(tiny):
    recs = B.load_branch_records(tiny)
    text = B.branches_verdict(B.branches_table(recs), recs[0]["config"])
    assert "*unrolled K=5* brings 1 of 2 small-T starts to the distillation branch, at 7.5× the one-step cost" in text
    assert "*log T* brings" not in text and "*unrolled K=10*: not run." in text
    assert "*log T* from run 2 (λ1 rising 0.30 → 0.50)" in text  # undecided: where it is heading
    assert "The large-T control: *one-step* distillation." in text
    # none leaves: the verdict says so and names only the variants that were run
    none = B.branches_table([_record(2, "one-step", [0.0], [0.36], 8.0), _record(2, "log T", [0.0], [0.3], 8.0)])
    text = B.branches_verdict(none)
    assert "none of *log T* brings a small-T start to the distillation branch" in text and "horizon" not in text
    assert "*log T* slows the fall" not in text
    slowed = B.branches_table([_record(2, "one-step", [0.1, 0.0], [0.36, 0.4], 8.0),
                               _record(2, "unrolled K=10", [0.3, 0.2], [0.3, 0.3], 80.0)])
    text = B.branches_verdict(slowed)
    assert "*unrolled K=10* slows the fall of λ1 (mean last λ1 over the small-T starts: one-step 0.00, " \
           "unrolled K=10 0.20)" in text and "horizon" in text


def test_largest_t_moves_is_the_clipped_step():
    m = B.largest_t_moves(dict(meta_lr=0.25, meta_clip=0.01), [0.2, 4.0])
    assert m["linear"] == [pytest.approx(0.0025)] * 2
    assert m["log"] == [pytest.approx(0.2 * math.expm1(0.0025)), pytest.approx(4.0 * math.expm1(0.0025))]


def test_empty_folder_says_so(tmp_path, capsys):
    t = B.show_branches(tmp_path / "nothing")
    assert t.empty and list(t.columns) == B.TABLE_COLUMNS


def test_sweep_variants_resolve_to_distinct_configs_and_back():
    keys = set()
    for v in BRANCHES_VARIANTS:
        cfg = resolve_config("cifar10_reduced", "gradient", "paper", 2, **branches_overrides(v, 3))
        assert variant_of(cfg.to_dict()) == v and cfg.epochs == 3 and cfg.eval_every == 1
        assert all(getattr(cfg, k) == val for k, val in AUTHORS_PROTOCOL.items() if k != "eval_every")
        keys.add(cfg.to_json())
    assert len(keys) == len(BRANCHES_VARIANTS)
    with pytest.raises(ValueError, match="unknown variant"):
        branches_overrides("K=3")
