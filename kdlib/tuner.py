"""The Tuner: (lambda1, T) tuning that drops into any PyTorch training loop (Sec. 3 of the paper).

.. code-block:: python

    tuner = kdlib.Tuner(optimizer, init=(0.5, 2.0), schedule="proposed", e1=10, e2=10,
                        estimator="unrolled", meta_lr=0.1, meta_clip=0.01, t_val=1.0)
    for (x, y), val in zip(train_loader, kdlib.cycle(val_loader)):
        with torch.no_grad():
            t = teacher(x)
        tuner.step(student, (x, y, t), val)     # one metaparameter update (eq. 3 / eq. 4); (lambda1, T)
        loss = tuner.loss(student(x), t, y)     # L_train at the current (lambda1, T)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    tuner.check()                               # NonFiniteHypergradient if no hypergradient was finite

Or, with one forward per iteration shared by the estimator and the real step (what :mod:`kdlib.train` runs)::

    for (x, y), val in ...:
        tuner.train_step(student, (x, y, t), val)   # step + zero_grad + loss + backward + optimizer.step

Or, at the cost floor, after the loop's own backward (``placement="after_backward"``): the hypergradient steps
from the gradient already in ``.grad`` (one forward and backward fewer), and the new values act one step late,
from the next iteration's :meth:`Tuner.loss` on::

    tuner = kdlib.Tuner(optimizer, ..., placement="after_backward")
    for (x, y), val in ...:
        loss = tuner.loss(student(x), t, y)         # L_train at the current (lambda1, T)
        optimizer.zero_grad(); loss.backward()
        tuner.step(student, (x, y, t), val)         # reads .grad: eq. (3) through the step about to be taken
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)   # optional; then Tuner(clip_grad_norm=1.0)
        optimizer.step()

(with ``estimator="unrolled"``, ``z = student(x)``, ``loss.backward(retain_graph=True)`` and
``tuner.step(student, (x, y, t), val, train_logits=z)`` spare it a forward of its own, as :meth:`Tuner.train_step`
does).

Under ``torch.distributed`` (DistributedDataParallel) every rank holds the same (lambda1, T): see :class:`Tuner`.

:meth:`Tuner.step` takes the hypergradient of eq. (3) through one step of the optimizer the loop really uses
(:func:`kdlib.hypergrad.hypergradient` with ``optimizer=``, its state and current lr), then moves the values by
the schedule (:class:`kdlib.schedules.Schedule`: clipping, NaN/inf skip with counts, metaparameter SGD,
projection into the box, Algorithm 1's line). The estimator draws its dropout seed from the tuner's own
generator and forks the global RNG (:mod:`kdlib.hypergrad`), so the training loop's RNG stream is left
untouched (a ``"fixed"`` tuner trains the bit-identical student as no tuner) and a tuned run is reproducible
and resumable from :meth:`state_dict`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence, Union

import torch
from torch import Tensor, nn

from kdlib.hypergrad import hypergradient, reuses_train_logits
from kdlib.hypergrad.distributed import rank_mean_of
from kdlib.hypergrad.rules import check_clip
from kdlib.losses import LOSS_FORMS, distillation_loss
from kdlib.metaparams import LAMBDA1_RANGE, TEMPERATURE_RANGE, in_box
from kdlib.names import ESTIMATORS, FD_VIRTUAL_LRS, PLACEMENTS
from kdlib.schedules import NonFiniteHypergradient, Schedule, check_schedule

ValBatch = Union[Sequence[Tensor], Callable[[], Sequence[Tensor]]]


def cycle(loader: Iterable) -> Iterator:
    """Iterate over ``loader`` forever, re-iterating it at each pass (a shuffling DataLoader reshuffles;
    unlike :func:`itertools.cycle`, nothing is cached). An empty loader raises ``ValueError``."""
    while True:
        empty = True
        for item in loader:
            empty = False
            yield item
        if empty:
            raise ValueError("kdlib.cycle: the loader yielded no batch")


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (the estimators evaluate it
    functionally; the wrapper's forward would start a gradient synchronisation)."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


class _GradWatch:
    """``placement="after_backward"``: how many gradients were accumulated into each parameter's ``.grad`` since
    the last :meth:`Tuner.step` (post-accumulate-grad hooks), so that a step placed before the backward, or after
    several backwards into the same ``.grad``, is refused instead of tuning on a stale gradient."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.handles: list[Any] = []
        self.armed = False

    def watch(self, params: Iterable[Tensor]) -> None:
        for p in params:
            if p.requires_grad and id(p) not in self.counts:
                self.counts[id(p)] = 0
                self.handles.append(p.register_post_accumulate_grad_hook(self._count))

    def _count(self, p: Tensor) -> None:
        self.counts[id(p)] = self.counts.get(id(p), 0) + 1

    def read(self, model: nn.Module) -> dict[str, Tensor | None]:
        """``{name: p.grad}`` of the trainable parameters, checked fresh: one backward since the last step."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        grads = {n: p.grad for n, p in named}
        if all(g is None for g in grads.values()):
            raise RuntimeError(
                "Tuner(placement='after_backward').step found no gradient in .grad: call loss.backward() before "
                "tuner.step(...) (it reuses that gradient), or build the Tuner with placement='before_backward' "
                "to place tuner.step before the forward")
        if self.armed:
            counts = {n: self.counts.get(id(p), 0) for n, p in named}
            if not any(counts.values()):
                raise RuntimeError(
                    "Tuner(placement='after_backward').step: no gradient was accumulated into .grad since the "
                    "previous tuner.step, so .grad is stale; call loss.backward() between two tuner.step calls "
                    "(tuner.step goes after loss.backward(), before optimizer.step())")
            many = sorted(n for n, c in counts.items() if c > 1)
            if many:
                raise RuntimeError(
                    f"Tuner(placement='after_backward').step: {many[:3]} received {max(counts.values())} "
                    f"gradients since the previous tuner.step (a missing optimizer.zero_grad(), or gradient "
                    f"accumulation over several batches, which this placement does not model); zero the "
                    f"gradients every iteration or use placement='before_backward'")
        self.watch(p for _, p in named)
        for k in self.counts:
            self.counts[k] = 0
        self.armed = True
        return grads


class Tuner:
    """Online tuning of (lambda1, T) for one student and its optimizer.

    Args:
        optimizer: the ``torch.optim`` optimizer of the student (SGD, Adam, AdamW, RMSprop, Adagrad, NAdam, RAdam;
            :data:`kdlib.hypergrad.SUPPORTED`); the hypergradient is taken
            through one step of it. ``None`` with ``lr=`` means a plain-SGD virtual step at ``lr``.
        init: initial (lambda1, T), inside the box lambda1 in [0, 1], T in [0.1, 10].
        schedule: ``"gradient"`` (eq. 3 every step), ``"proposed"`` (Algorithm 1) or ``"fixed"``.
        e1, e2: Algorithm 1's gradient and extrapolation iteration counts.
        estimator: ``"unrolled"`` | ``"finite_difference"`` | ``"neumann"`` | ``"forward"``.
        meta_lr, meta_clip: metaparameter SGD step and hypergradient value clip.
        t_val: T_val of L_val.
        forward: ``forward(model, inputs) -> logits`` for models that take keyword/dict inputs or return dicts.
        every: take a hypergradient step every ``every``-th iteration (the others keep the values).
        lr: plain-SGD virtual lr when ``optimizer`` is None.
        steps: inner steps of the unrolled/forward estimators.
        proposed_reset: ``"global"`` cycles over all iterations, ``"epoch"`` restarts at :meth:`new_epoch`.
        clamp_extrapolation: project eq. 4's values into the box (the authors did not).
        form, t2_scaling: the L_train variant (:func:`kdlib.losses.distillation_loss`).
        fd_virtual_lr: ``"current"`` or ``"initial"`` (the authors' code: the finite-difference virtual step at
            the optimizer's initial lr).
        temperature_param: ``"linear"`` (the paper: eq. 3's step on T) or ``"log"`` (the step on log T, with
            dL_val/d(log T) = T * dL_val/dT, the same clip and meta_lr; :func:`kdlib.schedules.meta_update`).
        seed: seeds the tuner's own generator (the estimators' dropout masks).
        placement: where :meth:`step` sits in the loop. ``"before_backward"`` (default): before the forward; the
            estimator takes its own train gradient at the current values and the new values act on this very
            step. ``"after_backward"``: after the loop's ``loss.backward()`` of :meth:`loss` (at the current
            values) and before ``optimizer.step()``; the estimator steps from the gradient in ``.grad`` (one
            forward and backward fewer; one-step ``"unrolled"`` and ``"finite_difference"`` only), and the new
            values act one step late, from the next :meth:`loss`. A ``.grad`` that is missing, or that no backward
            refreshed since the previous step (or that two backwards accumulated into), raises ``RuntimeError``.
            Put :meth:`step` before any gradient clipping (it needs the unclipped gradient) and pass the clip as
            ``clip_grad_norm``. With dropout, the estimator's own forward has other masks than the loop's.
        clip_grad_norm: the ``max_norm`` of the loop's ``torch.nn.utils.clip_grad_norm_(model.parameters(),
            max_norm)`` between backward and ``optimizer.step()``: the look-ahead step clips exactly as the loop
            does, and :meth:`train_step` clips its real step. Without it the hypergradient assumes an unclipped
            step (wrong for a loop that clips).
        distributed, process_group: data parallelism. ``distributed=None`` (default) is on when
            ``torch.distributed`` is initialised with more than one rank (``False``: each rank tunes alone;
            ``True``: required). Then every rank holds the same (lambda1, T) at every step: the hypergradient is
            averaged over the ranks of ``process_group`` (default: the world) and every rank applies the same
            schedule to it. What it equals:

            * ``"before_backward"``: the mean over ranks r of the single-process hypergradient of rank r's own
              train and validation batches (one all-reduce of two numbers per hypergradient);
            * ``"after_backward"``: ``.grad`` holds DDP's rank-averaged gradient, and the validation gradient is
              averaged too (one model-sized all-reduce, plus two numbers): the hypergradient of
              (1/R) sum_r L_val(w'; val_r) through the real DDP step w' = U(w, (1/R) sum_r grad L_train(w; x_r)),
              each rank's losses on its own forward -- for a model without batch-coupled layers (BatchNorm in
              train mode is per rank under DDP) and equal per-rank batches, exactly the single-process
              ``"after_backward"`` hypergradient of the ranks' batches concatenated.

            Pass the DDP-wrapped model (or its ``.module``); the estimators evaluate the module itself. The
            ranks must call :meth:`step` together (each rank the same number of times).
        **options: passed to :func:`kdlib.hypergrad.hypergradient` (e.g. ``fd_eps_scale``, ``neumann_terms``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None = None, init: Sequence[float] | Tensor = (0.5, 2.0),
                 schedule: str = "proposed", e1: int = 10, e2: int = 10, estimator: str = "unrolled",
                 meta_lr: float = 0.1, meta_clip: float = 0.01, t_val: float = 1.0,
                 forward: Callable[[nn.Module, Any], Tensor] | None = None, every: int = 1, *,
                 lr: float | None = None, steps: int = 1, proposed_reset: str = "global",
                 clamp_extrapolation: bool = True, form: str = "ce", t2_scaling: bool = False,
                 fd_virtual_lr: str = "current", temperature_param: str = "linear", seed: int = 0,
                 placement: str = "before_backward", clip_grad_norm: float | None = None,
                 distributed: bool | None = None, process_group: Any = None, **options: Any) -> None:
        if optimizer is None and lr is None:
            raise ValueError("Tuner needs the student's optimizer (Tuner(optimizer, ...)) or, for a plain-SGD "
                             "virtual step, lr=")
        if optimizer is not None and lr is not None:
            raise ValueError("pass the optimizer (its own lr is used, schedulers included) or lr= for a plain-SGD "
                             "virtual step, not both")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose one of: {', '.join(ESTIMATORS)}")
        if form not in LOSS_FORMS:
            raise ValueError(f"unknown loss form {form!r}; choose one of: {', '.join(LOSS_FORMS)}")
        if fd_virtual_lr not in FD_VIRTUAL_LRS:
            raise ValueError(f"unknown fd_virtual_lr {fd_virtual_lr!r}; choose one of: {', '.join(FD_VIRTUAL_LRS)}")
        if not t_val > 0:
            raise ValueError(f"t_val must be > 0, got {t_val}")
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}; choose one of: {', '.join(PLACEMENTS)} (where "
                             f"tuner.step sits: before the forward, or after loss.backward())")
        if placement == "after_backward" and not reuses_train_logits(estimator, int(steps),
                                                                     options.get("unrolled_impl", "auto")):
            raise ValueError(f"placement='after_backward' reuses the gradient in .grad: it takes the one-step "
                             f"'unrolled' or 'finite_difference' estimator (steps=1), not estimator={estimator!r} "
                             f"steps={steps} unrolled_impl={options.get('unrolled_impl', 'auto')!r}")
        clip = check_clip(clip_grad_norm)
        if clip is not None and (estimator == "neumann" or options.get("unrolled_impl") == "higher"):
            raise ValueError("clip_grad_norm= is modelled by the 'unrolled', 'finite_difference' and 'forward' "
                             "estimators (not 'neumann', which takes no step, nor unrolled_impl='higher')")
        rank_mean = rank_mean_of(distributed, process_group)
        check_schedule(schedule, e1, e2, meta_lr, meta_clip, every, proposed_reset, temperature_param)
        init_t = torch.as_tensor(init, dtype=torch.float32).detach().clone()
        if init_t.shape != (2,) or not torch.isfinite(init_t).all() or not in_box(init_t):
            raise ValueError(f"init={init_t.tolist()} must be (lambda1, T) with lambda1 in {LAMBDA1_RANGE} and "
                             f"T in {TEMPERATURE_RANGE}")
        self.optimizer = optimizer
        self.lr = lr
        self.estimator = estimator
        self.t_val = float(t_val)
        self.forward = forward
        self.steps = int(steps) if estimator in ("unrolled", "forward") else 1
        self.form, self.t2_scaling = form, bool(t2_scaling)
        self.fd_virtual_lr = fd_virtual_lr
        self.options = dict(options)
        self.schedule = Schedule(init_t, schedule, e1, e2, meta_lr, meta_clip, every, proposed_reset,
                                 clamp_extrapolation, temperature_param)
        if optimizer is not None:
            group = optimizer.param_groups[0]
            self.initial_lr = float(group.get("initial_lr", group["lr"]))
        else:
            self.initial_lr = float(lr)
        self.iteration = 0
        self.in_epoch = 0
        self.generator = torch.Generator().manual_seed(int(seed))
        self._trace: list[tuple[int, str, Tensor]] = []
        self.placement = placement
        self.clip_grad_norm = clip
        self.rank_mean = rank_mean
        self._watch: _GradWatch | None = None
        if placement == "after_backward":
            self._watch = _GradWatch()
            if optimizer is not None:  # armed from the first step: the optimizer's parameters are the stepped ones
                self._watch.watch(p for g in optimizer.param_groups for p in g["params"])
                self._watch.armed = True

    # ------------------------------------------------------------------------------------------ reading
    @property
    def metaparams(self) -> Tensor:
        """The current (lambda1, T), shape (2,)."""
        return self.schedule.value

    @property
    def lambda1(self) -> Tensor:
        return self.schedule.value[0]

    @property
    def temperature(self) -> Tensor:
        return self.schedule.value[1]

    @property
    def phase(self) -> str:
        return self.schedule.phase

    @property
    def hypergrad_evals(self) -> int:
        """Hypergradient evaluations so far (skipped ones included)."""
        return self.schedule.evals

    @property
    def nan_skipped(self) -> int:
        """Non-finite hypergradients skipped so far (reading it synchronises a CUDA device)."""
        return int(self.schedule.nonfinite)

    @property
    def history(self) -> list[dict[str, Any]]:
        """One row per :meth:`step`: iteration, phase, lambda1, temperature (the values trained at)."""
        if not self._trace:
            return []
        values = torch.stack([v for _, _, v in self._trace]).detach().float().cpu().tolist()
        return [dict(step=i, phase=p, lambda1=v[0], temperature=v[1])
                for (i, p, _), v in zip(self._trace, values)]

    # ------------------------------------------------------------------------------------------ the step
    def new_epoch(self) -> None:
        """Mark an epoch boundary (Algorithm 1's cycle restarts here when ``proposed_reset="epoch"``)."""
        self.in_epoch = 0

    def _hypergradient(self, model: nn.Module, batch: Sequence[Tensor], val: ValBatch, value: Tensor,
                       train_logits: Tensor | None = None, train_grad: dict[str, Tensor | None] | None = None
                       ) -> Tensor:
        val_batch = val() if callable(val) else val
        kwargs: dict[str, Any] = dict(t_val=self.t_val, method=self.estimator, steps=self.steps, form=self.form,
                                      t2_scaling=self.t2_scaling, **self.options)
        if self.clip_grad_norm is not None:
            kwargs["clip_grad_norm"] = self.clip_grad_norm
        if self.rank_mean is not None:
            kwargs["rank_mean"] = self.rank_mean
        if train_grad is not None:
            kwargs["train_grad"] = train_grad
        if self.estimator == "finite_difference" and self.fd_virtual_lr == "initial":
            kwargs["fd_virtual_lr"] = self.initial_lr
        if self.forward is not None:
            kwargs["forward"] = self.forward
        if self.optimizer is None:
            kwargs["lr"] = float(self.lr)
        else:
            kwargs["optimizer"] = self.optimizer
        if train_logits is not None and reuses_train_logits(self.estimator, self.steps,
                                                            self.options.get("unrolled_impl", "auto")):
            kwargs["train_logits"] = train_logits
        return hypergradient(model, tuple(batch), val_batch, value, generator=self.generator, **kwargs)

    @staticmethod
    def _check_batch(batch: Any, who: str) -> None:
        if not isinstance(batch, (tuple, list)) or len(batch) != 3:
            raise ValueError(f"Tuner.{who}: batch must be (x, y, teacher_logits): compute the teacher's logits "
                             f"under torch.no_grad() and pass them with the inputs and labels")

    def _advance(self, model: nn.Module, batch: Sequence[Any], val: ValBatch, train_logits: Tensor | None,
                 who: str, train_grad: dict[str, Tensor | None] | None = None) -> Tensor:
        self._check_batch(batch, who)
        model = _unwrap(model)
        if self._watch is not None:
            train_grad = self._watch.read(model)
        y = batch[1]
        if isinstance(y, Tensor) and y.device != self.schedule.value.device:
            self.schedule.to(y.device)
        trained_at = self.schedule.value
        value = self.schedule.step(self.iteration, self.in_epoch,
                                   lambda lam: self._hypergradient(model, batch, val, lam, train_logits, train_grad))
        # the values this iteration trains at: the new ones before the backward, the previous ones after it
        self._trace.append((self.iteration, self.schedule.phase, value if self._watch is None else trained_at))
        self.iteration += 1
        self.in_epoch += 1
        return value

    def step(self, model: nn.Module, batch: Sequence[Any], val: ValBatch,
             train_logits: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One iteration of the schedule at the model's current weights; returns ``(lambda1, T)`` (0-d tensors).

        ``batch`` is ``(x, y, teacher_logits)``; ``val`` a ``(x, y)`` batch of D_val, or a zero-argument callable
        returning one (then a batch is drawn only when a hypergradient is taken). ``"before_backward"``: call it
        before the forward; the values returned are the ones this iteration trains at. ``"after_backward"``: call
        it after ``loss.backward()`` (``.grad`` holds the gradient at the current values) and before
        ``optimizer.step()``; the values returned act from the next :meth:`loss` on.

        ``train_logits``: the loop's own ``student(x)`` on this batch, with its autograd graph, for the one-step
        estimators to differentiate through instead of a forward of their own (one forward fewer;
        :func:`kdlib.hypergrad.hypergradient`'s ``train_logits``). Before the backward (``"unrolled"`` or
        ``"finite_difference"``): pass the logits the loss will be taken on (the graph is kept for that backward).
        After it (only ``"unrolled"`` takes a train forward there): ``loss.backward(retain_graph=True)`` first;
        the estimator frees the graph. The estimator then sees the loop's dropout masks.
        """
        value = self._advance(model, batch, val, train_logits, "step")
        return value[0], value[1]

    def train_step(self, model: nn.Module, batch: Sequence[Any], val: ValBatch) -> Tensor:
        """One whole iteration of the loop above -- :meth:`step`, then ``zero_grad``, L_train at the new
        (lambda1, T), ``backward`` and the optimizer's ``step`` -- with ONE train forward shared by both.

        The real step's forward ``model(x)`` (BatchNorm running statistics updated once, dropout masks from the
        global stream, exactly as the loop's own forward) is taken first; the one-step ``unrolled`` and
        ``finite_difference`` estimators differentiate through its retained graph instead of a forward of their
        own (:func:`kdlib.hypergrad.hypergradient`'s ``train_logits``), and the real step backpropagates
        L_train at the new values through the same graph. For a dropout-free model the values and the student
        are bit-identical to :meth:`step` + the loop (``tests/test_fused.py``); with dropout the estimator sees
        the real step's train masks. With ``placement="after_backward"``: forward, L_train at the current values,
        backward (its graph retained for ``"unrolled"``, which differentiates through it instead of a forward of
        its own), :meth:`step` from ``.grad``, then the optimizer's step. ``clip_grad_norm`` clips the real step
        (``torch.nn.utils.clip_grad_norm_``) before ``optimizer.step()``. Returns the (detached) train loss.
        """
        if self.optimizer is None:
            raise ValueError("Tuner.train_step takes the optimizer's step: build the Tuner with the optimizer "
                             "(Tuner(optimizer, ...)), not lr=")
        self._check_batch(batch, "train_step")
        x, y, t = batch
        z = model(x) if self.forward is None else self.forward(model, x)
        if self._watch is None:
            self._advance(model, batch, val, z, "train_step")
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(z, t, y)
        # after_backward: the step reads the gradient just taken; "unrolled" also pulls its J^T c_i back through
        # this forward's graph (kept for it, freed by it: no forward of its own)
        share = self._watch is not None and self.estimator == "unrolled"
        loss.backward(retain_graph=share)
        if self._watch is not None:
            self._advance(model, batch, val, z if share else None, "train_step")
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip_grad_norm)
        self.optimizer.step()
        return loss.detach()

    def loss(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> Tensor:
        """L_train (Sec. 2) at the current (lambda1, T): :func:`kdlib.losses.distillation_loss`."""
        value = self.schedule.value
        return distillation_loss(student_logits, teacher_logits, targets, value[0], value[1], form=self.form,
                                 t2_scaling=self.t2_scaling)

    def check(self) -> dict[str, int]:
        """End-of-run check: raise :class:`NonFiniteHypergradient` if hypergradients were taken and every one
        was NaN/inf; else return the counts ``{"hypergrad_evals", "nan_skipped"}``."""
        self.schedule.check()
        return dict(hypergrad_evals=self.hypergrad_evals, nan_skipped=self.nan_skipped)

    finish = check

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume identically (store it with the user's checkpoint)."""
        values = torch.stack([v for _, _, v in self._trace]) if self._trace else None
        return dict(schedule=self.schedule.state_dict(), iteration=self.iteration, in_epoch=self.in_epoch,
                    generator=self.generator.get_state(), initial_lr=self.initial_lr,
                    trace_steps=[i for i, _, _ in self._trace], trace_phases=[p for _, p, _ in self._trace],
                    trace_values=values)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state["schedule"])
        self.iteration, self.in_epoch = int(state["iteration"]), int(state["in_epoch"])
        self.generator.set_state(state["generator"])
        self.initial_lr = float(state["initial_lr"])
        values = state["trace_values"]
        self._trace = [] if values is None else [
            (int(i), str(p), values[k]) for k, (i, p) in enumerate(zip(state["trace_steps"], state["trace_phases"]))]


__all__ = ["Tuner", "cycle", "NonFiniteHypergradient", "ESTIMATORS", "PLACEMENTS"]
