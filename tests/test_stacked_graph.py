"""kdlib.train.stacked_graph on the CPU: the CUDA-graph backend's static-buffer path (stacked batches and
validation batches copied into per-shape buffers, the values and the lr in place, a key per shape and lr, warm-up
calls, a capture, replays whose outputs stay in the first replay's tensors) gives exactly the eager stacked
backend's runs, through the CPU stand-in of the capture (:class:`StandIn`). The arithmetic is the stacked
backend's own code, so the histories and the trained weights are bit-identical, not merely close. The real graphs
(:class:`CudaGraphs`) run in ``tests/test_cuda.py`` on a GPU; here the backend refuses them, with its reason."""
from __future__ import annotations

import pytest
import torch
from conftest import random_image_problem

from kdlib.train import Settings, run_loop, train_students_stacked
from kdlib.train import stacked_graph
from kdlib.train.stacked_graph import StandIn

INIT = torch.tensor([[0.5, 2.0], [0.2, 1.0], [0.8, 4.0]])


def _without_wall_time(history):
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in history]


@pytest.mark.parametrize("schedule,over", [
    ("fixed", dict(momentum=0.9, weight_decay=1e-3)),  # the optimizer's momentum buffers: made in the warm-up
    ("gradient", dict(estimator="unrolled")),
    ("gradient", dict(estimator="finite_difference", fd_virtual_lr="initial", loss_form="kl")),
    ("proposed", dict(estimator="unrolled", proposed_reset="epoch")),
])
@pytest.mark.parametrize("warmup", [1, 2])
def test_static_buffer_path_equals_the_eager_stacked_backend_exactly(schedule, over, warmup):
    """Four epochs of 32 examples in batches of 12 (the last one of 8: a key of its own), validation batches of 12,
    12 (other examples in the same buffer) and 6, StepLR every 2 epochs (the train graphs of the first lr dropped, new ones captured): every logged row and
    every trained weight equal to the eager stacked backend's, bit for bit; the stand-in did capture and replay
    both batch shapes (warmup=1) or the full one (warmup=2, the default)."""
    problem = random_image_problem(32, 30, 24)
    sts = [Settings(seed=s, epochs=4, batch_size=12, lr=0.1, lr_step_epochs=2, e1=2, e2=1, meta_lr=1.0,
                    meta_clip=1.0, **over) for s in range(3)]
    eager = train_students_stacked(sts, problem, INIT, schedule=schedule, score_on_val=True)
    capturer = StandIn(warmup=warmup)
    graphed = run_loop(sts, problem, lambda: stacked_graph.build(sts, problem, INIT, schedule, capturer=capturer),
                       score_on_val=True)
    for got, ref in zip(graphed, eager):
        assert _without_wall_time(got.history) == _without_wall_time(ref.history)
        assert got.best_val_accuracy == ref.best_val_accuracy
        for (k, p), q in zip(got.model.state_dict().items(), ref.model.state_dict().values()):
            assert torch.equal(p, q), k
    if schedule != "fixed":
        assert eager[0].history[-1]["lambda1"] != pytest.approx(float(INIT[0, 0]), abs=1e-3)  # the values moved
    counts = capturer.counts()
    assert counts["captures"] >= (2 if warmup == 1 else 1) and counts["replays"] > counts["captures"], counts
    shapes = {key[1][0][0] for key in capturer.entries}  # the stacked x shapes of the keys still held
    assert (12 in {s[1] for s in shapes}) and (warmup > 1 or 8 in {s[1] for s in shapes}), shapes
    steps = 4 * 3  # every call of the step is one real step: warm-up calls and replays (a capture computes nothing)
    hyper = steps if schedule == "gradient" else (8 if schedule == "proposed" else 0)  # e1=2 of each 3 (per epoch)
    assert counts["eager"] + counts["replays"] == steps + hyper


def test_train_graphs_are_keyed_by_the_lr_and_the_old_lr_dropped():
    """torch.optim.SGD's lr is a host float a capture bakes in: each lr has its own train graphs, and a new lr
    drops the old ones (the hypergradient's lr is a device tensor updated in place: its graphs stay)."""
    problem = random_image_problem(32, 16, 24)
    sts = [Settings(seed=s, epochs=3, batch_size=16, lr=0.1, lr_step_epochs=1, lr_gamma=0.5) for s in range(2)]
    capturer = StandIn(warmup=1)
    backend = stacked_graph.build(sts, problem, INIT[:2], "gradient", capturer=capturer)
    lr_tensor = backend.lr
    run_loop(sts, problem, lambda: backend)
    train_keys = [k for k in capturer.entries if k[0] == "train"]
    assert [k[-1] for k in train_keys] == [(pytest.approx(0.025),)]  # only the last lr's graph is held
    assert any(k[0] == "hypergradient" for k in capturer.entries)
    assert backend.lr is lr_tensor and float(backend.lr) == pytest.approx(0.025)  # updated in place, read by the graphs


def test_stand_in_keeps_outputs_in_place_and_refuses_a_replay_over_new_tensors():
    cap = StandIn(warmup=1)
    x = torch.tensor([1.0, 2.0])
    first = cap("k", lambda: x * 2)  # warm-up: eager
    assert torch.equal(first, torch.tensor([2.0, 4.0]))
    out = cap("k", lambda: x * 2)  # capture, then its replay
    x.copy_(torch.tensor([5.0, 6.0]))
    again = cap("k", lambda: x * 2)  # a replay: the same output tensor, new values
    assert again is out and torch.equal(out, torch.tensor([10.0, 12.0]))
    other = torch.tensor([1.0, 1.0])
    with pytest.raises(RuntimeError, match="static buffers"):
        cap("k", lambda: other * 2)
    assert cap.counts() == dict(keys=1, eager=1, captures=1, replays=2)
    cap.drop(lambda key: key != "k")
    assert cap.counts()["keys"] == 0
    with pytest.raises(ValueError, match="warmup"):
        StandIn(warmup=0)


def test_unsupported_names_what_the_graph_backend_cannot_train():
    cpu = Settings(seed=0, epochs=1, batch_size=16)
    assert "plain SGD" in stacked_graph.unsupported(Settings(epochs=1, momentum=0.9), "gradient")
    assert "SGD's step only" in stacked_graph.unsupported(Settings(epochs=1, optimizer="adam", lr=1e-3), "fixed")

    class OnCpu:  # an experiment config's fields: the run's device
        optimizer, device = "sgd", "cpu"

    assert "CUDA device" in stacked_graph.unsupported(OnCpu(), "fixed")
    problem = random_image_problem(32, 16, 24)
    if not torch.cuda.is_available():  # this machine: the graph backend is refused, with the reason
        assert "torch sees none" in stacked_graph.unsupported(cpu, "fixed")
        with pytest.raises(ValueError, match="CUDA-graph stacked backend cannot train these runs: CUDA graphs need"):
            train_students_stacked([cpu, Settings(seed=1, epochs=1, batch_size=16)], problem, INIT[:2],
                                   backend="stacked_graph")
    with pytest.raises(ValueError, match="SGD's step only"):
        stacked_graph.build([Settings(epochs=1, optimizer="adam", lr=1e-3)] * 2, problem, INIT[:2], "fixed",
                            capturer=StandIn())


def test_runner_engine_stacked_graph_falls_back_to_the_stacked_backend_off_cuda(isolated_kdlib_env, tmp_path):
    """``--set engine=stacked_graph`` on the CPU: the group is trained by the stacked backend (the same step,
    eagerly), ``summary.engine`` says so, the histories are the ``engine=stacked`` ones exactly, and the key (which
    holds ``engine``) is another."""
    import json

    from test_stacked_protocol import fmnist_overrides

    from kdlib.experiments import runner

    over = fmnist_overrides(isolated_kdlib_env["data"], tmp_path)
    recs = {}
    for engine in ("stacked", "stacked_graph"):
        out = tmp_path / engine
        runner.run_experiments("fashion_mnist", "naive,gradient", 2, "smoke", out, progress=False,
                               overrides={**over, "engine": engine})
        recs[engine] = {(r["config"]["method"], r["config"]["seed"]): r
                        for r in (json.loads(p.read_text()) for p in (out / "runs").glob("*.json"))}
    assert set(recs["stacked"]) == set(recs["stacked_graph"]) and len(recs["stacked"]) == 4
    for key, ref in recs["stacked"].items():
        got = recs["stacked_graph"][key]
        assert got["summary"]["engine"] == ref["summary"]["engine"] == "stacked", key
        assert got["config"]["engine"] == "stacked_graph" and got["key"] != ref["key"]
        assert _without_wall_time(got["history"]) == _without_wall_time(ref["history"]), key
        assert "accelerator" not in got["provenance"] and got["config"]["tf32"] is False
