"""kdlib.schedules: one controller for (2,) and stacked (S, 2) metaparameters."""
from __future__ import annotations

import pytest
import torch

from kdlib.metaparams import in_box
from kdlib.schedules import Schedule, meta_update


def _fake_hypergradients(seeds: int, steps: int) -> torch.Tensor:
    g = torch.randn(steps, seeds, 2, generator=torch.Generator().manual_seed(3)) * 0.02
    g[2, 1, 0] = float("nan")  # seed 1 gets a NaN at iteration 2, seed 2 an inf at iteration 9 (gradient phases)
    g[9, 2, 1] = float("inf")
    return g


@pytest.mark.parametrize("kind,reset", [("gradient", "global"), ("proposed", "global"), ("proposed", "epoch"),
                                        ("fixed", "global")])
def test_stacked_schedule_equals_one_schedule_per_seed(kind, reset):
    steps, seeds, per_epoch = 40, 3, 6
    init = torch.tensor([[0.2, 0.5], [0.9, 8.0], [0.5, 2.0]])
    g = _fake_hypergradients(seeds, steps)
    kw = dict(e1=4, e2=5, meta_lr=3.0, meta_clip=0.01, reset=reset)
    stacked = Schedule(init, kind, **kw)
    rows = [Schedule(init[i], kind, **kw) for i in range(seeds)]
    for step in range(steps):
        k = {"n": 0}

        def hg_stacked(lam):
            k["n"] += 1
            return g[step]

        got = stacked.step(step, step % per_epoch, hg_stacked)
        for i, row in enumerate(rows):
            want = row.step(step, step % per_epoch, lambda lam, i=i: g[step, i])
            assert torch.equal(got[i], want), (step, i)
            assert row.phase == stacked.phase
        assert in_box(got)
    assert [int(r.nonfinite) for r in rows] == stacked.nonfinite.tolist()
    assert all(r.evals == stacked.evals for r in rows)
    if kind != "fixed":
        assert stacked.nonfinite.tolist() == [0, 1, 1]


def test_meta_update_skips_clips_and_projects():
    value = torch.tensor([[0.5, 2.0], [0.999, 0.1001], [0.5, 2.0]])
    g = torch.tensor([[0.5, -0.5], [-1.0, 1.0], [float("nan"), 0.0]])
    new, bad = meta_update(value, g, meta_lr=0.1, meta_clip=0.01)
    torch.testing.assert_close(new[0], torch.tensor([0.499, 2.001]))
    assert new[1].tolist() == [1.0, pytest.approx(0.1)]  # clipped step, then projected onto the box faces
    assert torch.equal(new[2], value[2]) and bad.tolist() == [False, False, True]


def test_extrapolation_unclamped_when_asked():
    # a steep constant hypergradient: the line leaves the box; clamp_extrapolation=False keeps the raw line
    g = torch.tensor([-0.01, 0.0])
    for clamp in (True, False):
        s = Schedule(torch.tensor([0.9, 1.0]), "proposed", e1=2, e2=20, meta_lr=1.0, meta_clip=0.01,
                     clamp_extrapolation=clamp)
        vals = [s.step(i, i, lambda lam: g).clone() for i in range(22)]
        assert bool(vals[-1][0] > 1.0) is (not clamp)
