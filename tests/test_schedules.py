"""kdlib.schedules: one controller for (2,) and stacked (S, 2) metaparameters."""
from __future__ import annotations

import math

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


def _log_step_by_hand(value: list[float], g: list[float], meta_lr: float, clip: float) -> list[float]:
    """The log-T step written out independently, in Python floats: lambda1 as eq. (3); log T stepped by
    meta_lr * clip(T * dL/dT); both projected into the box [0, 1] x [0.1, 10]."""
    def c(v: float) -> float:
        return max(-clip, min(clip, v))

    lam = min(1.0, max(0.0, value[0] - meta_lr * c(g[0])))
    t = min(10.0, max(0.1, math.exp(math.log(value[1]) - meta_lr * c(value[1] * g[1]))))
    return [lam, t]


def test_log_temperature_step_is_the_chain_rule_step_on_log_t():
    value = torch.tensor([[0.5, 0.2], [0.5, 8.0], [0.3, 9.99], [0.9, 0.2], [0.5, 2.0]])
    # unclipped (T*g small), clipped in log T only, pushed out of the box (projected), clipped lambda1, NaN
    g = torch.tensor([[0.003, -0.02], [0.0, 0.004], [0.0, -0.5], [-0.5, 0.01], [float("nan"), 0.0]])
    new, bad = meta_update(value, g, meta_lr=0.25, meta_clip=0.01, temperature_param="log")
    for i in range(4):
        want = _log_step_by_hand(value[i].tolist(), g[i].tolist(), 0.25, 0.01)
        assert new[i].tolist() == [pytest.approx(w, rel=1e-6) for w in want], i
    assert new[2, 1].item() == pytest.approx(10.0)  # projected onto the face
    assert torch.equal(new[4], value[4]) and bad.tolist() == [False] * 4 + [True]
    # lambda1's step is the paper's under both parametrisations; T's differs
    lin, _ = meta_update(value, g, meta_lr=0.25, meta_clip=0.01)
    assert torch.equal(lin[:, 0], new[:, 0]) and not torch.equal(lin[:4, 1], new[:4, 1])


def test_log_temperature_moves_t_by_a_ratio_the_linear_step_by_an_amount():
    # the same clipped hypergradient on T: linear moves T by meta_lr * clip, log multiplies T by exp(-meta_lr * clip)
    value = torch.tensor([[0.5, 0.2], [0.5, 5.0]])
    g = torch.tensor([[0.0, -1.0], [0.0, -1.0]])  # clipped on both coordinates (T * g <= -0.1)
    lin, _ = meta_update(value, g, 1.0, 0.01)
    log, _ = meta_update(value, g, 1.0, 0.01, temperature_param="log")
    torch.testing.assert_close(lin[:, 1] - value[:, 1], torch.tensor([0.01, 0.01]))
    torch.testing.assert_close(log[:, 1] / value[:, 1], torch.full((2,), math.exp(0.01)))


def test_log_temperature_stacked_equals_rows_and_bad_name_is_refused():
    init = torch.tensor([[0.2, 0.5], [0.9, 8.0], [0.5, 2.0]])
    g = _fake_hypergradients(3, 20)
    stacked = Schedule(init, "gradient", meta_lr=3.0, meta_clip=0.01, temperature_param="log")
    rows = [Schedule(init[i], "gradient", meta_lr=3.0, meta_clip=0.01, temperature_param="log") for i in range(3)]
    for step in range(20):
        got = stacked.step(step, step, lambda lam: g[step])
        for i, row in enumerate(rows):
            assert torch.equal(got[i], row.step(step, step, lambda lam, i=i: g[step, i]))
        assert in_box(got)
    with pytest.raises(ValueError, match="temperature_param"):
        Schedule(init, "gradient", temperature_param="exp")
    with pytest.raises(ValueError, match="temperature_param"):
        meta_update(init, g[0], 0.1, 0.01, temperature_param="log10")
