"""kdlib.train.select: the one decision which backend trains a group of runs, with its reason, and the methods'
own account of how their runs train together (no tuple of method names)."""
from __future__ import annotations

import pytest
import torch

from kdlib import methods
from kdlib.experiments.profiles import resolve_config
from kdlib.experiments.runner import choose_backend
from kdlib.names import ALL_METHOD_NAMES

FAST = dict(epochs=1, n_train=40, n_test=20, teacher="small_cnn", teacher_epochs=1)


def test_methods_say_how_their_runs_train_together():
    together = {name: methods.METHODS[name].together() for name in ALL_METHOD_NAMES}
    assert together == dict(no_distillation="schedule", naive="schedule", random="schedule", gradient="schedule",
                            proposed="schedule", hyperopt="trials", ctkd=None, logit_std=None, gradient_std=None)

    class OwnTuner(methods.Gradient):  # a user's method with its own Tuner: no stacked form
        def tuner(self, settings):
            return super().tuner(settings)

    class OwnStart(methods.Gradient):  # only the start differs: run_together still trains what run trains
        def initial(self, settings):
            return torch.tensor([0.5, 2.0])

    class OwnSearch(methods.Hyperopt):
        def run(self, settings, problem, progress=False):
            return super().run(settings, problem, progress)

    assert (OwnTuner.together(), OwnStart.together(), OwnSearch.together()) == (None, "schedule", None)


@pytest.mark.parametrize("dataset,method,runs,over,backend,why", [
    ("synthetic", "gradient", 3, {}, "linear", "closed-form"),
    ("synthetic", "hyperopt", 1, {}, "linear", "closed-form"),
    ("synthetic", "gradient", 3, dict(estimator="neumann"), "one", "estimators"),
    ("synthetic", "naive", 3, dict(shuffle=True), "one", "full batch"),
    ("synthetic", "ctkd", 3, {}, "one", "its own way"),
    ("fashion_mnist", "naive", 2, {}, "one", "engine='one'"),
    ("fashion_mnist", "naive", 2, dict(engine="stacked"), "stacked", "implements"),
    ("fashion_mnist", "naive", 1, dict(engine="stacked"), "one", "single run"),
    ("fashion_mnist", "hyperopt", 2, dict(engine="stacked"), "stacked", "implements"),  # its trials, stacked
    ("fashion_mnist", "hyperopt", 1, dict(engine="stacked"), "one", "single run"),
    ("fashion_mnist", "gradient", 2, dict(engine="stacked"), "stacked", "implements"),  # finite differences
    ("fashion_mnist", "proposed", 2, dict(engine="stacked", estimator="neumann"), "one", "one-step unrolled"),
    ("fashion_mnist", "gradient", 2, dict(engine="stacked", momentum=0.9), "one", "plain SGD"),
    ("fashion_mnist", "gradient", 2, dict(engine="stacked", estimator="unrolled"), "stacked", "implements"),
    ("fashion_mnist", "naive", 2, dict(engine="stacked", t2_scaling=True), "stacked", "implements"),
    ("fashion_mnist", "gradient_std", 2, dict(engine="stacked", estimator="unrolled"), "one", "its own way"),
    # the CUDA-graph backend: on a CPU config, the stacked backend trains what it implements, eagerly
    ("fashion_mnist", "naive", 2, dict(engine="stacked_graph"), "stacked", "CUDA graphs need a CUDA device"),
    ("fashion_mnist", "naive", 2, dict(engine="stacked_graph", optimizer="adam", lr=1e-3), "stacked",
     "SGD's step only"),
    ("fashion_mnist", "gradient", 2, dict(engine="stacked_graph", momentum=0.9), "one", "plain SGD"),
    ("fashion_mnist", "naive", 1, dict(engine="stacked_graph"), "one", "single run"),
])
def test_one_function_picks_the_backend_and_says_why(dataset, method, runs, over, backend, why):
    kw = dict(FAST, **over) if dataset != "synthetic" else over
    choice = choose_backend(resolve_config(dataset, method, "smoke", 0, **kw), runs)
    assert choice.backend == backend and why in choice.reason, choice


def test_switching_the_linear_backend_off():
    cfg = resolve_config("synthetic", "gradient", "smoke", 0)
    choice = choose_backend(cfg, 3, batched=False)
    assert choice.backend == "one" and "switched off" in choice.reason


def test_the_graph_backend_is_chosen_only_when_asked_and_where_it_implements_the_runs(monkeypatch):
    """engine='stacked_graph' on a CUDA config picks it where CUDA is there; engine='stacked' never does."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # choosing computes nothing
    cfg = resolve_config("fashion_mnist", "gradient", "smoke", 0, **FAST, device="cuda", engine="stacked_graph")
    choice = choose_backend(cfg, 2)
    assert choice.backend == "stacked_graph" and "CUDA-graph" in choice.reason, choice
    cfg = resolve_config("fashion_mnist", "gradient", "smoke", 0, **FAST, device="cuda", engine="stacked")
    assert choose_backend(cfg, 2).backend == "stacked"
