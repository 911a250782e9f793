"""The stacked backend of the training loop: S independent fixed-metaparameter runs as ONE model per step.

The runs of one dataset that keep (lambda1, T) fixed -- no distillation, naive, random and every hyperopt trial
(Sec. 4, Table 2), over seeds -- share the data, the architecture and the protocol; only the initial weights
(the seed), the batch order (the seed) and the values differ. :class:`StackedFixed` holds their parameters and
buffers stacked along a leading run axis (``torch.func.stack_module_state``) and evaluates all of them with one
``torch.func.vmap`` of ``functional_call``: one forward, one backward and one optimizer step per iteration for
the S runs (on a GPU, S times the work per kernel launch), with no host synchronisation in the step. L_train is
:func:`kdlib.losses.distillation_loss` at each run's own (lambda1, T); BatchNorm normalises with each run's own
batch statistics and updates each run's own running statistics. The loop itself is
:func:`kdlib.train.run_loop` (the same code as one run); the optimizer is the runs' own (``torch.optim`` updates
are elementwise, so one optimizer over the stacked tensors steps every run as its own would).
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from kdlib.losses import distillation_loss, validation_loss
from kdlib.metaparams import project


class _Done:
    """What the loop reads back from a finished run (the model; no Tuner)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.tuner = None


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
        params, buffers = stack_module_state(self.models)
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(self.models[0]).to("meta")
        self.values = project(values.to(device).detach().clone())
        self.optimizer = make_optimizer(list(self.params.values()), settings[0])
        self.runs = len(self.models)

        def train_loss(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor,
                       lam: Tensor) -> Tensor:
            z = functional_call(self.base, (p, b), (x,))
            return distillation_loss(z, t, y, lam[0], lam[1])

        def logits(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(self.base, (p, b), (x,))

        self._train_loss = vmap(train_loss)
        self._logits = vmap(logits, in_dims=(0, 0, None))

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def new_epoch(self) -> None:
        pass

    def step(self, batches: list[tuple[Tensor, Tensor, Tensor]], next_val: Callable[[], Any]) -> None:
        """One optimizer step of every run on its own batch (``batches[s]``)."""
        x, y, t = (torch.stack(parts) for parts in zip(*batches))
        self.base.train()
        losses = self._train_loss(self.params, self.buffers, x, y, t, self.values)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # run s's parameters get exactly d loss_s (the other terms do not depend on them)
        self.optimizer.step()

    def rows(self) -> list[dict[str, Any]]:
        lam = self.values.detach().float().cpu().tolist()
        return [dict(lambda1=v[0], temperature=v[1], hypergrad_evals=0, nan_skipped=0, phase="fixed") for v in lam]

    @torch.no_grad()
    def evaluate(self, split: Any, t_val: float, batch_size: int = 1024) -> list[tuple[float, float]]:
        """Per run: accuracy and mean L_val on ``split`` in eval mode (running statistics), like
        :func:`kdlib.train.evaluate`."""
        self.base.eval()
        correct = torch.zeros(self.runs, device=split.y.device)
        loss_sum = torch.zeros(self.runs, device=split.y.device)
        params = {k: v.detach() for k, v in self.params.items()}
        for start in range(0, len(split), batch_size):
            xb, yb = split.x[start:start + batch_size], split.y[start:start + batch_size]
            out = self._logits(params, self.buffers, xb)  # (S, B, K)
            correct += (out.argmax(-1) == yb).sum(-1)
            loss_sum += vmap(validation_loss, in_dims=(0, None, None))(out, yb, t_val) * yb.shape[0]
        self.base.train()
        n = max(len(split), 1)
        return [(float(c) / n, float(ls) / n) for c, ls in zip(correct.cpu(), loss_sum.cpu())]

    def finish(self) -> list[_Done]:
        """Unstack the trained weights and buffers into the S student modules."""
        for s, model in enumerate(self.models):
            state = {k: v[s].detach() for k, v in {**self.params, **self.buffers}.items()}
            model.load_state_dict(state)
        return [_Done(m) for m in self.models]


__all__ = ["StackedFixed"]
