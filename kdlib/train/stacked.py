"""The stacked backend of the training loop: S independent fixed-metaparameter runs as ONE model per step.

The runs of one dataset that keep (lambda1, T) fixed -- no distillation, naive, random and every hyperopt trial
(Sec. 4, Table 2), over seeds -- share the data, the architecture and the protocol; only the initial weights
(the seed), the batch order (the seed) and the values differ. :class:`StackedFixed` holds their parameters and
buffers stacked along a leading run axis (``torch.func.stack_module_state``) and evaluates all of them with one
``torch.func.vmap`` of ``functional_call``: one forward, one backward and one optimizer step per iteration for
the S runs (on a GPU, S times the work per kernel launch), with no host synchronisation in the step. L_train is
:func:`kdlib.losses.distillation_loss` at each run's own (lambda1, T); BatchNorm normalises with each run's own
batch statistics and updates each run's own running statistics. The loop itself is
:func:`kdlib.train.loop.run_loop` (the same code as one run); the optimizer is the runs' own (``torch.optim`` updates
are elementwise, so one optimizer over the stacked tensors steps every run as its own would).

:class:`StackedTuned` adds the schedules (gradient-based and Algorithm 1, with either cycle reset) with the
hypergradient of eq. (3) vmapped over the runs: the one-step unrolled estimator (exact) or the paper's finite
difference (:mod:`kdlib.hypergrad.finite_difference`, step for step). The step takes no host synchronisation on a
GPU: no ``.item()``, no Python branch on a tensor value, the lr a device tensor made once per lr change, the
NaN/inf skip counted per run on the device (:class:`kdlib.schedules.Schedule`), the rows read only when logged.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from kdlib.losses import distillation_loss, validation_loss
from kdlib.metaparams import project
from kdlib.train.loop import RunOutput
from kdlib.train.problem import Problem
from kdlib.train.settings import make_optimizer as _make_optimizer
from kdlib.train.settings import make_schedule


RANDOM_MODULES = (nn.modules.dropout._DropoutNd,)  # every dropout layer of torch.nn


class StackedFixed:
    """S students trained at fixed per-run values ``values[s] = (lambda1, T)``, seeded by ``settings[s].seed``.

    ``make_optimizer(params, settings)`` builds the optimizer (:func:`kdlib.train.make_optimizer`)."""

    def __init__(self, settings: Sequence[Any], make_student: Callable[[], nn.Module], values: Tensor,
                 device: torch.device | str, make_optimizer: Callable[[list[Tensor], Any], torch.optim.Optimizer]
                 ) -> None:
        self.models: list[nn.Module] = []
        for st in settings:  # each run's initial weights from its own seed, exactly as train_student draws them
            torch.manual_seed(st.seed)
            self.models.append(make_student().to(device).train())
        random = sorted({type(m).__name__ for m in self.models[0].modules() if isinstance(m, RANDOM_MODULES)})
        if random:
            # one run draws its masks from the global stream (the real step) and its Tuner's generator (the
            # estimator); S runs in one vmapped call cannot reproduce each seed's stream
            raise ValueError(f"the stacked backend trains students without random layers; this student has "
                             f"{', '.join(random)} (each run's masks come from its own RNG stream); train its runs "
                             f"one by one (engine='one', kdlib.train.train_student)")
        params, buffers = stack_module_state(self.models)
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(self.models[0]).to("meta")
        self.values = project(values.to(device).detach().clone())
        self.optimizer = make_optimizer(list(self.params.values()), settings[0])
        self.runs = len(self.models)
        # L_train's variant (kdlib.losses.distillation_loss): the paper's "ce" or the authors' "kl", T^2 or not
        self.loss_opts = loss_options(settings[0])
        loss_opts = self.loss_opts

        def train_loss(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor,
                       lam: Tensor) -> Tensor:
            z = functional_call(self.base, (p, b), (x,))
            return distillation_loss(z, t, y, lam[0], lam[1], **loss_opts)

        def logits(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(self.base, (p, b), (x,))

        self._train_loss = vmap(train_loss)
        self._logits = vmap(logits, in_dims=(0, 0, None))
        self._logits_per_run = vmap(logits)  # a split with one copy of the images per run (augment_val)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def new_epoch(self) -> None:
        pass

    def step(self, batches: list[tuple[Tensor, Tensor, Tensor]], next_val: Callable[[], Any]) -> None:
        """One optimizer step of every run on its own batch (``batches[s]``)."""
        x, y, t = stack_batches(batches)
        self.train_step(x, y, t, self.values)

    def train_step(self, x: Tensor, y: Tensor, t: Tensor, values: Tensor) -> None:
        """The optimizer step of every run s on its batch ``(x[s], y[s], t[s])`` at ``values[s]``: the forward, the
        backward and the optimizer's step, device work only (:mod:`kdlib.train.stacked_graph` captures it)."""
        self.base.train()
        losses = self._train_loss(self.params, self.buffers, x, y, t, values)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # run s's parameters get exactly d loss_s (the other terms do not depend on them)
        self.optimizer.step()

    def rows(self) -> list[dict[str, Any]]:
        lam = self.values.detach().float().cpu().tolist()
        return [dict(lambda1=v[0], temperature=v[1], hypergrad_evals=0, nan_skipped=0, phase="fixed") for v in lam]

    @torch.no_grad()
    def evaluate(self, split: Any, t_val: float, batch_size: int = 1024) -> list[tuple[float, float]]:
        """Per run: accuracy and mean L_val on ``split`` in eval mode (running statistics), like
        :func:`kdlib.train.evaluate`. ``split.x`` is shared, or holds one copy per run on a leading axis (each
        run's own augmented D_val)."""
        self.base.eval()
        correct = torch.zeros(self.runs, device=split.y.device)
        loss_sum = torch.zeros(self.runs, device=split.y.device)
        params = {k: v.detach() for k, v in self.params.items()}
        for start in range(0, len(split), batch_size):
            yb = split.y[start:start + batch_size]
            if split.per_run:
                out = self._logits_per_run(params, self.buffers, split.x[:, start:start + batch_size])
            else:
                out = self._logits(params, self.buffers, split.x[start:start + batch_size])  # (S, B, K)
            correct += (out.argmax(-1) == yb).sum(-1)
            loss_sum += vmap(validation_loss, in_dims=(0, None, None))(out, yb, t_val) * yb.shape[0]
        self.base.train()
        n = max(len(split), 1)
        return [(float(c) / n, float(ls) / n) for c, ls in zip(correct.cpu(), loss_sum.cpu())]

    def finish(self) -> list[RunOutput]:
        """Unstack the trained weights and buffers into the S student modules."""
        for s, model in enumerate(self.models):
            state = {k: v[s].detach() for k, v in {**self.params, **self.buffers}.items()}
            model.load_state_dict(state)
        return [RunOutput(model=m) for m in self.models]


def loss_options(st: Any) -> dict[str, Any]:
    """The L_train options of settings ``st`` (:func:`kdlib.losses.distillation_loss`'s ``form``, ``t2_scaling``),
    as :func:`kdlib.train.make_tuner` passes them to the Tuner."""
    return dict(form=getattr(st, "loss_form", "ce"), t2_scaling=bool(getattr(st, "t2_scaling", False)))


class StackedTuned(StackedFixed):
    """S runs whose (lambda1, T) follow a schedule (``"gradient"`` or ``"proposed"``, Algorithm 1, the cycle
    counted globally or restarted every epoch): the hypergradient of eq. (3) for all runs at once, ``vmap`` over
    the settings' estimator through one virtual plain-SGD step, and the schedule's clipping, NaN skip (counted per
    run), projection and extrapolation on (S, 2) values (:class:`kdlib.schedules.Schedule`, the code the Tuner
    runs).

    Estimators, each the reference's arithmetic per run:

    * ``"unrolled"``: ``torch.func.grad`` of L_val after a differentiable step ``w - lr g`` (double backprop,
      exact; the Tuner's cotangent evaluation is algebraically identical);
    * ``"finite_difference"`` (:func:`kdlib.hypergrad.finite_difference.finite_difference`, plain SGD): the virtual
      step at the initial lr (``fd_virtual_lr="initial"``, the authors') or the current one, the validation
      gradient there as the direction d, ``eps = 0.01 / ||d||`` per run, grad_lambda L_train at ``w +- eps d``
      (two perturbed forwards), their central difference scaled by ``-lr`` (the current lr).

    BatchNorm in the estimator uses batch statistics and updates nothing, as :func:`kdlib.hypergrad.inner_buffers`;
    the students have no dropout, so no RNG stream is drawn. Plain SGD only (the paper's); the loop's validation
    batches are drawn once per hypergradient for all runs, which is what each run's own cycle would give."""

    FD_EPS_SCALE = 0.01  # kdlib.hypergrad.finite_difference's default, the Tuner's

    def __init__(self, settings: Sequence[Any], make_student: Callable[[], nn.Module], values: Tensor,
                 device: torch.device | str, make_optimizer: Callable[[list[Tensor], Any], torch.optim.Optimizer],
                 schedule: str) -> None:
        st = settings[0]
        reason = unsupported(st, schedule)
        if reason:
            raise ValueError(reason)
        super().__init__(settings, make_student, values, device, make_optimizer)
        self.schedule = make_schedule(st, self.values, schedule)
        self.values = self.schedule.value
        self.iteration = 0
        self.in_epoch = 0
        self.estimator = st.estimator
        # the lr as device tensors, made once per lr change (set_lr), never in the step: the current lr of the
        # virtual step and the finite difference's scale, and the lr the Tuner read at its start (initial_lr)
        group = self.optimizer.param_groups[0]
        self._lr_value = float(group["lr"])
        self.lr = self._device_scalar(self._lr_value)
        initial = self._device_scalar(float(group.get("initial_lr", group["lr"])))
        self.virtual_lr = initial if getattr(st, "fd_virtual_lr", "current") == "initial" else None
        t_val = float(st.t_val)
        loss_opts = self.loss_opts
        eps_scale = self.FD_EPS_SCALE
        no_stats = {k: None for k in self.buffers}  # batch statistics, no running-statistics update

        def call(p: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(self.base, (p, no_stats), (x,), strict=False)

        def unrolled(lam: Tensor, p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor, xv: Tensor, yv: Tensor,
                     lr: Tensor, virtual_lr: Tensor) -> Tensor:
            def val_after(lv: Tensor) -> Tensor:
                g = torch.func.grad(lambda q: distillation_loss(call(q, x), t, y, lv[0], lv[1], **loss_opts))(p)
                return validation_loss(call({k: p[k] - lr * g[k] for k in p}, xv), yv, t_val)

            return torch.func.grad(val_after)(lam)

        def finite_difference(lam: Tensor, p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor, xv: Tensor,
                              yv: Tensor, lr: Tensor, virtual_lr: Tensor) -> Tensor:
            gw = torch.func.grad(lambda q: distillation_loss(call(q, x), t, y, lam[0], lam[1], **loss_opts))(p)
            w_new = {k: p[k] - virtual_lr * gw[k] for k in p}
            d = torch.func.grad(lambda q: validation_loss(call(q, xv), yv, t_val))(w_new)
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d[k]) for k in p]))
            eps = eps_scale / norm
            lam_grads = []
            for sign in (1.0, -1.0):
                z = call({k: p[k] + (sign * eps) * d[k] for k in p}, x).detach()
                lam_grads.append(torch.func.grad(
                    lambda lv, z=z: distillation_loss(z, t, y, lv[0], lv[1], **loss_opts))(lam))
            hess = (lam_grads[0] - lam_grads[1]) / (2 * eps)
            return -lr * hess

        one = finite_difference if self.estimator == "finite_difference" else unrolled
        self._hypergradient = vmap(one, in_dims=(0, 0, 0, 0, 0, None, None, None, None))
        self._hypergradient_per_run = vmap(one, in_dims=(0, 0, 0, 0, 0, 0, None, None, None))  # augment_val

    def _device_scalar(self, value: float) -> Tensor:
        """A 0-d tensor of the students' dtype on their device (a fill kernel: no host-to-device copy)."""
        ref = next(iter(self.params.values()))
        return torch.full((), value, dtype=ref.dtype, device=ref.device)

    def set_lr(self, lr: float) -> None:
        super().set_lr(lr)
        if float(lr) != self._lr_value:  # a host float: the device tensor is remade only when the lr changes
            self._lr_value = float(lr)
            self.lr = self._device_scalar(self._lr_value)

    def new_epoch(self) -> None:
        self.in_epoch = 0

    def step(self, batches: list[tuple[Tensor, Tensor, Tensor]], next_val: Callable[[], Any]) -> None:
        x, y, t = stack_batches(batches)

        def hypergradient(value: Tensor) -> Tensor:
            xv, yv = next_val()
            return self.hypergradient(value, x, y, t, xv, yv)

        self.values = self.schedule.step(self.iteration, self.in_epoch, hypergradient)
        self.iteration += 1
        self.in_epoch += 1
        self.train_step(x, y, t, self.values)

    def hypergradient(self, value: Tensor, x: Tensor, y: Tensor, t: Tensor, xv: Tensor, yv: Tensor) -> Tensor:
        """The (S, 2) hypergradient of eq. (3) at ``value`` for the stacked train batch and the validation batch
        ``(xv, yv)`` (shared, or one per run on a leading axis, as ``x``: augment_val), at the current lr: device
        work only (:mod:`kdlib.train.stacked_graph` captures it)."""
        params = {k: v.detach() for k, v in self.params.items()}
        lr = self.lr
        virtual_lr = lr if self.virtual_lr is None else self.virtual_lr
        self.base.train()
        hypergradient = self._hypergradient_per_run if xv.ndim == x.ndim else self._hypergradient
        return hypergradient(value, params, x, y, t, xv, yv, lr, virtual_lr)

    def rows(self) -> list[dict[str, Any]]:
        lam = self.values.detach().float().cpu().tolist()
        nan = self.schedule.nonfinite.cpu().tolist()
        return [dict(lambda1=v[0], temperature=v[1], hypergrad_evals=int(self.schedule.evals), nan_skipped=int(n),
                     phase=self.schedule.phase) for v, n in zip(lam, nan)]

    def finish(self) -> list[RunOutput]:
        self.schedule.check("a stacked run")
        return super().finish()


STACKED_ESTIMATORS = ("unrolled", "finite_difference")


def stack_batches(batches: Sequence[tuple[Tensor, Tensor, Tensor]],
                  out: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The runs' batches ``[(x_s, y_s, t_s)]`` as ``(x, y, t)`` with a leading run axis; into ``out`` when given
    (the static buffers of :mod:`kdlib.train.stacked_graph`)."""
    if out is None:
        return tuple(torch.stack(parts) for parts in zip(*batches))  # type: ignore[return-value]
    for parts, buf in zip(zip(*batches), out):
        torch.stack(parts, out=buf)
    return out


def unsupported(st: Any, schedule: str) -> str | None:
    """Why runs of settings ``st`` (any object with the run settings' field names) under ``schedule`` cannot train
    on this backend, or None. Fixed values: any optimizer, either loss form, with or without the T^2 factor; a
    moving schedule: also plain SGD and the one-step unrolled or the finite-difference estimator."""
    if schedule == "fixed":
        return None
    if st.optimizer != "sgd" or st.momentum or st.weight_decay or st.nesterov:
        return ("the stacked tuned backend differentiates the paper's plain SGD step only; use "
                "train_student for momentum, weight decay or Adam")
    if st.estimator not in STACKED_ESTIMATORS or (st.estimator == "unrolled" and st.unroll_steps != 1):
        return ("the stacked tuned backend implements the one-step unrolled estimator and the finite difference "
                "(estimator='unrolled' with unroll_steps=1, or estimator='finite_difference'); "
                f"got estimator={st.estimator!r}, unroll_steps={st.unroll_steps}")
    if getattr(st, "placement", "before_backward") != "before_backward":
        return "the stacked tuned backend takes the hypergradient before the step (placement='before_backward')"
    return None


def build(settings: Sequence[Any], problem: Problem, values: Tensor, schedule: str) -> StackedFixed:
    """The backend of ``len(settings)`` runs of ``problem`` from ``values`` (S, 2) under ``schedule``."""
    device = problem.train.x.device
    if schedule == "fixed":
        return StackedFixed(settings, problem.make_student, values, device, _make_optimizer)
    return StackedTuned(settings, problem.make_student, values, device, _make_optimizer, schedule)


__all__ = ["STACKED_ESTIMATORS", "StackedFixed", "StackedTuned", "build", "loss_options", "stack_batches",
           "unsupported"]
