"""The CUDA-graph stacked backend: the stacked step of :mod:`kdlib.train.stacked`, captured into CUDA graphs and
replayed.

On a GPU, the stacked step of S small students is a few hundred short kernels (the forward, the backward and the
optimizer's step; for a moving schedule also the hypergradient of eq. 3: a double backward or the finite
difference's three gradients) that cost the host more time to launch than the device spends running them. A CUDA
graph (``torch.cuda.CUDAGraph``) records the launches once and replays them all with one call. The arithmetic is
that of :class:`~kdlib.train.stacked.StackedFixed` / :class:`~kdlib.train.stacked.StackedTuned` (their
``train_step`` and ``hypergradient``, the same code): :class:`GraphedFixed` / :class:`GraphedTuned` only drive it
through a :class:`Capturer`. Opt-in by ``engine="stacked_graph"`` (:func:`kdlib.train.select_backend`).

**Static buffers.** A graph reads and writes the addresses it was captured on. Each batch shape has its stacked
``(x, y, t)`` buffers (:func:`kdlib.train.stacked.stack_batches` stacks the runs' batches into them), each
validation batch shape its ``(xv, yv)``; the (S, 2) values the step trains at, and the values a hypergradient is
taken at, are one buffer each; the lr of the virtual step is a device tensor updated in place (``set_lr``). The
parameters, the BatchNorm buffers and the optimizer's state are updated in place by the step itself. A captured
hypergradient returns its (S, 2) output in the graph's own memory, which the schedule reads before the next replay.

**Keys.** A graph per (part, shapes, constants baked into it): the train step per (batch shape, lr) --
``torch.optim.SGD`` takes the lr as a host float, which the capture bakes in, so a new lr (StepLR) is captured anew
and the graphs of the old lr are dropped; the hypergradient per (batch shape, validation batch shape), its lr a
device tensor. So the last, smaller batch of an epoch (and the last validation batch) gets graphs of its own.

**Capture** (:class:`CudaGraphs`, as torch's CUDA-graph notes prescribe): the first ``warmup`` calls of a key run
eagerly on a side stream (real steps of the run, which initialise what a capture cannot: the optimizer's momentum
buffers, the libraries' workspaces, autograd's first-call state); the next call is captured -- a capture records,
it computes nothing -- and replayed at once; every later call is a replay. Every call is thus one real step, in
order, and a run's history equals the eager stacked one (``tests/test_stacked_graph.py`` on the CPU stand-in,
``tests/test_cuda.py`` on a GPU).

**Eager between the graphs:** the schedule's bookkeeping (:class:`kdlib.schedules.Schedule`, the one
implementation the Tuner also runs: the metaparameter step on the (S, 2) hypergradient, the NaN/inf count,
Algorithm 1's recorded values and its line), a handful of tiny kernels; the loop's batch slicing and augmentation;
the evaluation.

**What it refuses** (:func:`unsupported`): everything the stacked backend refuses, an optimizer other than SGD
(Adam's step count is a host number unless ``capturable=True``, which is another arithmetic), and any device but
CUDA. :class:`StandIn` is the capturer's CPU stand-in: the same key, warm-up and replay bookkeeping with the graph
replaced by a call (its outputs kept in the tensors of the first call, as a graph keeps them), so that the static
buffer path is tested equal to the eager stacked backend on any machine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

import torch
from torch import Tensor, nn

from kdlib.train import stacked
from kdlib.train.problem import Problem
from kdlib.train.settings import make_optimizer as _make_optimizer

WARMUP = 2  # eager calls of a key before its capture (torch's examples use 3 for a whole model, 11 under DDP)
Step = Callable[[], "Tensor | None"]  # a function over static tensors only: what one graph replays


@dataclass
class _Entry:
    calls: int = 0  # eager (warm-up) calls so far
    replay: Step | None = None  # set by the capture
    tensors: list[Any] = field(default_factory=list)  # StandIn: what the captured function read
    fn: Step | None = None  # StandIn: the function of the call being replayed


class Capturer:
    """Per key: ``warmup`` eager calls, then one capture, then replays. ``__call__(key, fn)`` runs one call of
    ``fn`` (a function of static tensors returning a tensor or None) and returns its output; the subclasses say
    how a call runs eagerly (:meth:`_warm`) and how a capture is made (:meth:`_capture`). Counts: ``eager``,
    ``captures``, ``replays``."""

    def __init__(self, warmup: int = WARMUP) -> None:
        if warmup < 1:
            raise ValueError(f"warmup={warmup}: a capture needs at least one eager call before it (lazy "
                             f"initialisation); set warmup >= 1")
        self.warmup = int(warmup)
        self.entries: dict[Hashable, _Entry] = {}
        self.eager = self.captures = self.replays = 0

    def __call__(self, key: Hashable, fn: Step) -> Tensor | None:
        entry = self.entries.setdefault(key, _Entry())
        if entry.replay is None and entry.calls < self.warmup:
            entry.calls += 1
            self.eager += 1
            return self._warm(fn)
        if entry.replay is None:
            entry.replay = self._capture(fn, entry)
            self.captures += 1
        else:
            self._check_replay(fn, entry)
        self.replays += 1
        return entry.replay()

    def drop(self, keep: Callable[[Hashable], bool]) -> None:
        """Forget (and free) the graphs whose key ``keep`` rejects."""
        for key in [k for k in self.entries if not keep(k)]:
            del self.entries[key]

    def counts(self) -> dict[str, int]:
        return dict(keys=len(self.entries), eager=self.eager, captures=self.captures, replays=self.replays)

    def _warm(self, fn: Step) -> Tensor | None:
        return fn()

    def _capture(self, fn: Step, entry: _Entry) -> Step:
        raise NotImplementedError

    def _check_replay(self, fn: Step, entry: _Entry) -> None:
        pass


def _closure(fn: Step) -> list[Any]:
    return [c.cell_contents for c in (getattr(fn, "__closure__", None) or ())]


class StandIn(Capturer):
    """The CPU stand-in of :class:`CudaGraphs`: the same bookkeeping, a "replay" calls the function again. What a
    graph imposes and a call does not is enforced: a replay's output is written into the tensor the first replay
    returned (a graph's outputs live at fixed addresses), and a replayed function must read the very tensors the
    captured one read (a graph reads the capture's addresses; a new tensor there would be a silent bug)."""

    def _capture(self, fn: Step, entry: _Entry) -> Step:
        entry.tensors, entry.fn = _closure(fn), fn
        static: list[Tensor] = []

        def replay() -> Tensor | None:
            assert entry.fn is not None
            out = entry.fn()
            if out is None:
                return None
            if not static:
                static.append(out)
            else:
                static[0].copy_(out)
            return static[0]

        return replay

    def _check_replay(self, fn: Step, entry: _Entry) -> None:
        now = _closure(fn)
        same = len(now) == len(entry.tensors) and all(
            a is b if isinstance(a, Tensor) or isinstance(b, Tensor) else (a is b or a == b)
            for a, b in zip(now, entry.tensors))
        if not same:
            raise RuntimeError("a replay reads other tensors than its capture did: a CUDA graph would read the "
                               "capture's addresses; copy the new inputs into the static buffers instead")
        entry.fn = fn


class CudaGraphs(Capturer):
    """CUDA graphs: warm-up calls on a side stream, ``torch.cuda.graph`` captures on that stream (each graph its
    own memory pool), ``CUDAGraph.replay`` on the current stream."""

    def __init__(self, warmup: int = WARMUP) -> None:
        super().__init__(warmup)
        if not torch.cuda.is_available():
            raise RuntimeError("CudaGraphs needs a CUDA device; torch sees none (the CPU stand-in is StandIn)")
        self.stream = torch.cuda.Stream()

    def _warm(self, fn: Step) -> Tensor | None:
        current = torch.cuda.current_stream()
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            out = fn()
        current.wait_stream(self.stream)
        return out

    def _capture(self, fn: Step, entry: _Entry) -> Step:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):  # the warm-up's stream: its library workspaces exist
            out = fn()

        def replay() -> Tensor | None:
            graph.replay()
            return out

        return replay


def _shape_key(*tensors: Tensor) -> tuple:
    return tuple((tuple(x.shape), x.dtype) for x in tensors)


class _Graphed:
    """The step of a stacked backend through a :class:`Capturer`, on static buffers (module docstring)."""

    capturer: Capturer
    values: Tensor
    optimizer: torch.optim.Optimizer
    train_step: Callable[[Tensor, Tensor, Tensor, Tensor], None]

    def _init_graphs(self, capturer: Capturer) -> None:
        self.capturer = capturer
        self._batches: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
        self._vals: dict[tuple, tuple[Tensor, Tensor]] = {}
        self._train_values = self.values.detach().clone()  # the values the captured train step reads

    def _lr_key(self) -> tuple[float, ...]:
        return tuple(float(g["lr"]) for g in self.optimizer.param_groups)

    def _drop_other_lrs(self) -> None:
        lr = self._lr_key()
        self.capturer.drop(lambda key: key[0] != "train" or key[-1] == lr)

    def _static_batch(self, batches: Sequence[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
        key = (len(batches), _shape_key(*batches[0]))
        bufs = self._batches.get(key)
        if bufs is None:
            self._batches[key] = bufs = stacked.stack_batches(batches)
            return bufs
        return stacked.stack_batches(batches, out=bufs)

    def _static_val(self, xv: Tensor, yv: Tensor) -> tuple[Tensor, Tensor]:
        key = _shape_key(xv, yv)
        bufs = self._vals.get(key)
        if bufs is None:
            self._vals[key] = bufs = (xv.clone(), yv.clone())
            return bufs
        bufs[0].copy_(xv)
        bufs[1].copy_(yv)
        return bufs

    def _train(self, x: Tensor, y: Tensor, t: Tensor) -> None:
        self._train_values.copy_(self.values)
        values = self._train_values
        self.capturer(("train", _shape_key(x, y, t), self._lr_key()), lambda: self.train_step(x, y, t, values))


class GraphedFixed(_Graphed, stacked.StackedFixed):
    """:class:`~kdlib.train.stacked.StackedFixed` with its step through ``capturer``."""

    def __init__(self, settings: Sequence[Any], make_student: Callable[[], nn.Module], values: Tensor,
                 device: torch.device | str, make_optimizer: Callable[[list[Tensor], Any], torch.optim.Optimizer],
                 capturer: Capturer) -> None:
        stacked.StackedFixed.__init__(self, settings, make_student, values, device, make_optimizer)
        self._init_graphs(capturer)

    def set_lr(self, lr: float) -> None:
        stacked.StackedFixed.set_lr(self, lr)
        self._drop_other_lrs()

    def step(self, batches: list[tuple[Tensor, Tensor, Tensor]], next_val: Callable[[], Any]) -> None:
        x, y, t = self._static_batch(batches)
        self._train(x, y, t)


class GraphedTuned(_Graphed, stacked.StackedTuned):
    """:class:`~kdlib.train.stacked.StackedTuned` with its hypergradient and its step through ``capturer``; the
    schedule between them stays eager (module docstring)."""

    def __init__(self, settings: Sequence[Any], make_student: Callable[[], nn.Module], values: Tensor,
                 device: torch.device | str, make_optimizer: Callable[[list[Tensor], Any], torch.optim.Optimizer],
                 schedule: str, capturer: Capturer) -> None:
        stacked.StackedTuned.__init__(self, settings, make_student, values, device, make_optimizer, schedule)
        self._init_graphs(capturer)
        self._hyper_values = self.values.detach().clone()  # the values the captured hypergradient is taken at

    def set_lr(self, lr: float) -> None:
        stacked.StackedFixed.set_lr(self, lr)
        if float(lr) != self._lr_value:  # in place: the captured hypergradients read this very tensor
            self._lr_value = float(lr)
            self.lr.fill_(self._lr_value)
        self._drop_other_lrs()

    def step(self, batches: list[tuple[Tensor, Tensor, Tensor]], next_val: Callable[[], Any]) -> None:
        x, y, t = self._static_batch(batches)
        at = self._hyper_values

        def hypergradient(value: Tensor) -> Tensor:
            xv, yv = self._static_val(*next_val())
            at.copy_(value)
            out = self.capturer(("hypergradient", _shape_key(x, y, t, xv, yv)),
                                lambda: self.hypergradient(at, x, y, t, xv, yv))
            assert out is not None
            return out

        self.values = self.schedule.step(self.iteration, self.in_epoch, hypergradient)
        self.iteration += 1
        self.in_epoch += 1
        self._train(x, y, t)


def arithmetic_unsupported(st: Any, schedule: str) -> str | None:
    """What the graphed step cannot compute whatever the device: what :func:`kdlib.train.stacked.unsupported`
    refuses, and an optimizer other than SGD."""
    why = stacked.unsupported(st, schedule)
    if why:
        return why
    if st.optimizer != "sgd":
        return (f"the CUDA-graph stacked backend captures torch.optim.SGD's step only; optimizer "
                f"{st.optimizer!r} counts its steps on the host unless capturable=True (another arithmetic); "
                f"use engine='stacked'")
    return None


def unsupported(st: Any, schedule: str) -> str | None:
    """Why runs of settings ``st`` (the run settings' field names, and ``device`` when the object has one) under
    ``schedule`` cannot train on this backend, or None: :func:`arithmetic_unsupported`, a device other than CUDA,
    or no CUDA device at all."""
    why = arithmetic_unsupported(st, schedule)
    if why:
        return why
    device = getattr(st, "device", None)
    if device is not None:
        try:
            kind = torch.device(device).type
        except (RuntimeError, TypeError):
            kind = str(device)
        if kind != "cuda":
            return (f"CUDA graphs need a CUDA device and this run is on {device!r}; engine='stacked' trains it "
                    f"with the same step, eagerly")
    if not torch.cuda.is_available():
        return "CUDA graphs need a CUDA device and torch sees none here; engine='stacked' is the same step, eagerly"
    return None


def build(settings: Sequence[Any], problem: Problem, values: Tensor, schedule: str,
          capturer: Capturer | None = None) -> stacked.StackedFixed:
    """The backend of ``len(settings)`` runs of ``problem`` from ``values`` (S, 2) under ``schedule``, its steps
    captured by ``capturer`` (default: :class:`CudaGraphs`, which needs the problem on a CUDA device;
    :class:`StandIn` runs the same bookkeeping anywhere)."""
    device = problem.train.x.device
    st = settings[0]
    if capturer is None:
        why = unsupported(st, schedule)
        if why is None and device.type != "cuda":
            why = f"CUDA graphs need a CUDA device and the problem's tensors are on {device}"
        if why:
            raise ValueError(f"the CUDA-graph stacked backend cannot train these runs: {why}")
        capturer = CudaGraphs()
    else:
        why = arithmetic_unsupported(st, schedule)
        if why:
            raise ValueError(f"the CUDA-graph stacked backend cannot train these runs: {why}")
    if schedule == "fixed":
        return GraphedFixed(settings, problem.make_student, values, device, _make_optimizer, capturer)
    return GraphedTuned(settings, problem.make_student, values, device, _make_optimizer, schedule, capturer)


__all__ = ["WARMUP", "Capturer", "CudaGraphs", "GraphedFixed", "GraphedTuned", "StandIn", "arithmetic_unsupported",
           "build", "unsupported"]
