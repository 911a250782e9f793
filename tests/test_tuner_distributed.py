"""kdlib.Tuner under DistributedDataParallel: 2 CPU processes (gloo, torch.multiprocessing). Every rank holds the
bit-identical (lambda1, T) at every step, equal (float32 rounding) to the single-process computation the Tuner's
docstring states: before the backward, the mean over ranks of each rank's own hypergradient; after it, the
single-process after-backward Tuner on the ranks' batches concatenated."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import kdlib
from kdlib.hypergrad import hypergradient
from kdlib.losses import distillation_loss
from kdlib.schedules import meta_update

WORLD, B, STEPS, META_LR = 2, 8, 5, 0.5
SCENARIOS = [  # placement, estimator, optimizer, clip_grad_norm
    ("before_backward", "unrolled", "sgd_momentum", None),
    ("before_backward", "finite_difference", "adam", None),
    ("after_backward", "unrolled", "sgd_momentum", 0.5),
    ("after_backward", "finite_difference", "adam", None),
]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))


def _optimizer(name: str, params):
    return (torch.optim.SGD(params, lr=0.2, momentum=0.9) if name == "sgd_momentum"
            else torch.optim.Adam(params, lr=1e-2))


def _data():
    """STEPS global train batches of WORLD * B rows (x, y, teacher logits) and one global validation batch."""
    g = torch.Generator().manual_seed(1)
    train = [(torch.randn(WORLD * B, 6, generator=g), torch.randint(0, 4, (WORLD * B,), generator=g),
              2 * torch.randn(WORLD * B, 4, generator=g)) for _ in range(STEPS)]
    val = (torch.randn(WORLD * B, 6, generator=g), torch.randint(0, 4, (WORLD * B,), generator=g))
    return train, val


def _shard(batch, rank: int):
    return tuple(t[rank * B:(rank + 1) * B] for t in batch)


def _run_rank(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        train, val = _data()
        results = []
        for placement, estimator, opt_name, clip in SCENARIOS:
            ddp = nn.parallel.DistributedDataParallel(_model())
            opt = _optimizer(opt_name, ddp.parameters())
            tuner = kdlib.Tuner(opt, init=(0.5, 2.0), schedule="gradient", estimator=estimator, meta_lr=META_LR,
                                meta_clip=1.0, placement=placement, clip_grad_norm=clip)
            values = []
            vb = _shard(val, rank)
            for batch in train:
                x, y, t = _shard(batch, rank)
                if placement == "before_backward":
                    tuner.step(ddp, (x, y, t), vb)
                loss = tuner.loss(ddp(x), t, y)
                opt.zero_grad()
                loss.backward()
                if placement == "after_backward":
                    tuner.step(ddp, (x, y, t), vb)
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(ddp.parameters(), clip)
                opt.step()
                values.append(tuner.metaparams.clone())
            results.append(dict(values=torch.stack(values), params=[p.detach().clone() for p in ddp.parameters()],
                                nan_skipped=tuner.nan_skipped))
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _single_process(placement: str, estimator: str, opt_name: str, clip):
    """The stated single-process computation, on one model trained on the concatenated batches (DDP's step)."""
    train, val = _data()
    model = _model()
    opt = _optimizer(opt_name, model.parameters())
    if placement == "after_backward":  # the single-process after-backward Tuner on the concatenated batches
        tuner = kdlib.Tuner(opt, init=(0.5, 2.0), schedule="gradient", estimator=estimator, meta_lr=META_LR,
                            meta_clip=1.0, placement=placement, clip_grad_norm=clip)
        values = []
        for x, y, t in train:
            loss = tuner.loss(model(x), t, y)
            opt.zero_grad()
            loss.backward()
            tuner.step(model, (x, y, t), val)
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            values.append(tuner.metaparams.clone())
        return torch.stack(values), list(model.parameters())
    lam, values = torch.tensor([0.5, 2.0]), []
    for batch in train:  # the mean over ranks of each rank's own hypergradient, then DDP's (concatenated) step
        h = torch.stack([hypergradient(model, _shard(batch, r), _shard(val, r), lam, optimizer=opt, method=estimator)
                         for r in range(WORLD)]).mean(0)
        lam, _ = meta_update(lam, h, META_LR, 1.0)
        x, y, t = batch
        opt.zero_grad()
        distillation_loss(model(x), t, y, lam[0], lam[1]).backward()
        opt.step()
        values.append(lam.clone())
    return torch.stack(values), list(model.parameters())


def test_ddp_ranks_hold_identical_metaparameters_equal_to_the_stated_computation(tmp_path):
    mp.spawn(_run_rank, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for i, scenario in enumerate(SCENARIOS):
        r0, r1 = ranks[0][i], ranks[1][i]
        assert torch.equal(r0["values"], r1["values"]), scenario  # bit-identical at every step
        assert all(torch.equal(a, b) for a, b in zip(r0["params"], r1["params"])), scenario
        assert r0["nan_skipped"] == 0
        ref_values, ref_params = _single_process(*scenario)
        torch.testing.assert_close(r0["values"], ref_values, rtol=1e-5, atol=2e-6, msg=str(scenario))
        for a, b in zip(r0["params"], ref_params):
            torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-6, msg=str(scenario))
        assert (r0["values"][-1] - torch.tensor([0.5, 2.0])).abs().max() > 2e-3, scenario  # moved 1000x the tolerance


def test_the_comparison_can_fail():
    """Rank 0's batches alone give another hypergradient than either stated value, and the two statements (mean
    of per-rank values before the backward, the concatenated batches after it) differ from each other."""
    train, val = _data()
    model = _model()
    opt = _optimizer("sgd_momentum", model.parameters())
    lam = torch.tensor([0.5, 2.0])
    alone = hypergradient(model, _shard(train[0], 0), _shard(val, 0), lam, optimizer=opt)
    mean = torch.stack([hypergradient(model, _shard(train[0], r), _shard(val, r), lam, optimizer=opt)
                        for r in range(WORLD)]).mean(0)
    concat = hypergradient(model, train[0], val, lam, optimizer=opt)
    assert not torch.allclose(alone, mean, rtol=1e-2) and not torch.allclose(alone, concat, rtol=1e-2)
    assert not torch.allclose(mean, concat, rtol=1e-3)
