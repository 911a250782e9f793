"""Which backend of the loop trains a group of runs, and why: the one place that decides.

Backends (:mod:`kdlib.train.loop`): ``"one"`` (each run on its own, :func:`kdlib.train.one_by_one.train_student`,
any method), ``"stacked"`` (the runs as one vmapped model, :mod:`kdlib.train.stacked`; opt-in by
``engine="stacked"``, for GPUs), ``"stacked_graph"`` (the same step captured into CUDA graphs and replayed,
:mod:`kdlib.train.stacked_graph`; opt-in by ``engine="stacked_graph"``, CUDA only) and ``"linear"`` (the synthetic column's logistic regressions in closed form,
:mod:`kdlib.train.linear`). A stacking backend trains runs that share everything but the seed and the initial
(lambda1, T): :func:`train_students_stacked` runs them through the one loop. Each stacking backend says by its
``unsupported(settings, schedule)`` what it cannot train; :func:`select_backend` adds what the group asks for.

A new stacking backend (for example a CUDA-graph stacked step) is one module with a
``build`` and an ``unsupported`` of these signatures and one entry of :data:`BACKENDS`: the loop drives it through
the :class:`kdlib.train.loop.Backend` methods, the methods' ``run_together`` (schedule runs, and hyperopt's trials
through :func:`kdlib.train.together.search_together`) train on it unchanged, and :func:`select_backend` is where
it is chosen.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from kdlib.train import linear, stacked, stacked_graph
from kdlib.train.loop import Backend, RunOutput, run_loop, single_thread
from kdlib.train.problem import Problem
from kdlib.train.settings import Settings


@dataclass(frozen=True)
class StackingBackend:
    """A backend that trains S runs at once: ``build(settings, problem, values, schedule)`` makes it,
    ``unsupported(settings, schedule)`` says why it cannot (or None), ``one_thread``: tiny tensors, run on one
    intra-op thread."""

    build: Callable[[Sequence[Any], Problem, Tensor, str], Backend]
    unsupported: Callable[[Any, str], str | None]
    one_thread: bool = False


BACKENDS: dict[str, StackingBackend] = {
    "stacked": StackingBackend(stacked.build, stacked.unsupported),
    "stacked_graph": StackingBackend(stacked_graph.build, stacked_graph.unsupported),
    "linear": StackingBackend(linear.build, linear.unsupported, one_thread=True),
}
ONE = "one"


def train_students_stacked(settings: Sequence[Any], problem: Problem, values: Tensor, progress: bool = False,
                           score_on_val: bool = False, schedule: str = "fixed",
                           backend: str = "stacked") -> list[RunOutput]:
    """S runs (``values[s]`` = the initial (lambda1, T) of run s, seeds from ``settings[s]``) trained together by
    the stacking ``backend`` through the loop of :func:`kdlib.train.one_by_one.train_student`; the runs may differ
    only in seed and values. ``schedule``: "fixed" (no distillation, naive, random, hyperopt trials) or
    "gradient" / "proposed" (the values move by the schedule). Equal to S calls of ``train_student`` up to float32
    rounding (``tests/test_stacked.py``, ``tests/test_train_linear.py`` state the tolerances and why)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown stacking backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    spec = BACKENDS[backend]
    sts = [Settings.of(x) for x in settings]
    for st in sts:
        Settings.validate(st)
    values = torch.as_tensor(values, dtype=torch.float32)
    if values.shape != (len(sts), 2):
        raise ValueError(f"values must have shape (runs, 2) = ({len(sts)}, 2) (lambda1, T) per run, got "
                         f"{tuple(values.shape)}")
    threads = single_thread(problem.train.x.device) if spec.one_thread else contextlib.nullcontext()
    with threads:
        return run_loop(sts, problem, lambda: spec.build(sts, problem, values, schedule), progress, score_on_val)


@dataclass(frozen=True)
class Choice:
    """The backend that trains a group of runs (``"one"``, ``"stacked"``, ``"stacked_graph"`` or ``"linear"``) and
    why."""

    backend: str
    reason: str


def select_backend(cfg: Any, together: str | None, schedule: str, runs: int = 1, linear_ok: bool = True) -> Choice:
    """The backend for ``runs`` runs of ``cfg`` (the run settings' fields plus ``dataset`` and ``engine``) that
    differ only in the seed, for a method whose runs train together as ``together`` (``"schedule"``: plain runs of
    ``schedule`` from their initial values; ``"trials"``: hyperopt's fixed trials, through
    :func:`kdlib.train.together.search_together`; None: the method trains its own way).

    Synthetic: the linear backend wherever it implements the run (``linear_ok=False`` switches it off).
    Images: the stacked backend when ``engine="stacked"``, for two or more runs it implements: schedule runs, and
    hyperopt's trials (fixed runs; each seed's TPE search, the k-th trials of all seeds as one stacked model, equal
    to the one-by-one search: ``tests/test_stacked_protocol.py``). ``engine="stacked_graph"``: the CUDA-graph
    stacked backend where it implements the runs (a CUDA device, SGD), else the stacked backend where that does
    (the same step, eagerly), else one by one. Else one by one."""
    if together is None:
        return Choice(ONE, f"method {getattr(cfg, 'method', '?')!r} trains its own way (no stacked form)")
    if cfg.dataset == "synthetic":
        if not linear_ok:
            return Choice(ONE, "the linear backend is switched off (batched=False)")
        why = BACKENDS["linear"].unsupported(cfg, schedule)
        return Choice(ONE, why) if why else Choice("linear", "synthetic: the closed-form linear backend implements it")
    engine = getattr(cfg, "engine", ONE)
    if engine not in ("stacked", "stacked_graph"):
        return Choice(ONE, "engine='one'")
    if runs < 2:
        return Choice(ONE, "a single run: nothing to stack")
    graph_why = None
    if engine == "stacked_graph":
        graph_why = BACKENDS["stacked_graph"].unsupported(cfg, schedule)
        if graph_why is None:
            return Choice("stacked_graph", "engine='stacked_graph' and the CUDA-graph stacked backend implements it")
    why = BACKENDS["stacked"].unsupported(cfg, schedule)
    if why:
        return Choice(ONE, why)
    if graph_why:
        return Choice("stacked", f"engine='stacked_graph' but {graph_why}: the stacked backend implements it")
    return Choice("stacked", "engine='stacked' and the stacked backend implements it")


__all__ = ["BACKENDS", "Choice", "StackingBackend", "select_backend", "train_students_stacked"]
