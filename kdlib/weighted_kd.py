"""The training step of the 2023-24 reference codes: a weighted KD loss at a fixed or a learned temperature.

:class:`WeightedKD` takes the student's optimizer step on :func:`kdlib.losses.weighted_kd_loss`,
``ce_weight * CE + kd_weight * T^2 * KL`` (on standardised logits when ``standardize``), with T either a number
(logit standardisation, Sun et al. 2024) or CTKD's :class:`kdlib.ctkd.GlobalTemperature` (Li et al. 2023), whose
θ it adds to the student's optimizer and whose gradient-reversal weight it sets per epoch
(:func:`kdlib.ctkd.reversal_weight`). It has the members :mod:`kdlib.train`'s loop reads from a
:class:`kdlib.tuner.Tuner` (``train_step``, ``new_epoch``, ``metaparams``, ``phase``, ``hypergrad_evals``,
``nan_skipped``, ``check``), so the same loop, evaluation and records serve it; it takes no hypergradient and
never touches D_val.

Its ``metaparams`` are (λ1, T) in the paper's convention, for the records and the pages: λ1 =
``ce_weight / (ce_weight + kd_weight)`` (the loss is ``ce_weight + kd_weight`` times the paper's convex form at that
λ1, with the KL form and Hinton's T^2) and T the temperature of the latest step (the value trained at).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from kdlib.ctkd import GlobalTemperature, reversal_weight
from kdlib.losses import weighted_kd_loss


class WeightedKD:
    """One student's step on ``ce_weight * CE + kd_weight * T^2 * KL`` with a fixed T or a learned one.

    Args:
        optimizer: the student's optimizer. With a :class:`~kdlib.ctkd.GlobalTemperature`, its θ is added to it as
            a new param group (the group takes the optimizer's defaults: lr, momentum, weight decay; the loop's lr
            schedule sets every group), as the CTKD code trains θ with the student's SGD.
        ce_weight, kd_weight: the weights of the two terms (not necessarily summing to 1).
        temperature: a fixed T > 0, or a :class:`~kdlib.ctkd.GlobalTemperature`.
        standardize: the KL term on z-scored logits (:func:`kdlib.losses.standardize_logits`).
        reversal: ``epoch (0-based) -> gradient-reversal weight`` for a learned temperature
            (default :func:`kdlib.ctkd.reversal_weight`, CTKD's cosine curriculum).
        forward: ``forward(model, inputs) -> logits`` for models with keyword/dict inputs (default ``model(x)``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, ce_weight: float, kd_weight: float,
                 temperature: float | GlobalTemperature, standardize: bool = False,
                 reversal: Callable[[int], float] = reversal_weight,
                 forward: Callable[[nn.Module, Any], Tensor] | None = None) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not (ce_weight >= 0 and kd_weight >= 0 and ce_weight + kd_weight > 0):
            raise ValueError(f"ce_weight and kd_weight must be >= 0 and not both 0, got {ce_weight}, {kd_weight}")
        if not isinstance(temperature, GlobalTemperature) and not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0 or a GlobalTemperature, got {temperature}")
        self.optimizer = optimizer
        self.ce_weight, self.kd_weight = float(ce_weight), float(kd_weight)
        self.standardize = bool(standardize)
        self.reversal = reversal
        self.forward = forward
        self.epoch = -1  # new_epoch() is called before the first batch of every epoch
        self.learned = isinstance(temperature, GlobalTemperature)
        params = optimizer.param_groups[0]["params"]
        device = params[0].device if params else torch.device("cpu")
        if self.learned:
            self.module: GlobalTemperature | None = temperature.to(device)
            optimizer.add_param_group({"params": [temperature.theta]})
            value = temperature(0.0).detach()
        else:
            self.module = None
            value = torch.tensor(float(temperature))
        self._temperature = value.to(device=device, dtype=torch.float32)
        self._lambda1 = self.ce_weight / (self.ce_weight + self.kd_weight)

    # ------------------------------------------------------------------------------------------ reading
    @property
    def metaparams(self) -> Tensor:
        """(λ1, T): the CE weight in the paper's convex convention and the temperature of the latest step."""
        return torch.stack([torch.full_like(self._temperature, self._lambda1), self._temperature])

    @property
    def temperature(self) -> Tensor:
        return self._temperature

    @property
    def phase(self) -> str:
        return "curriculum" if self.learned else "fixed"

    hypergrad_evals = 0
    nan_skipped = 0

    def weight(self) -> float:
        """The gradient-reversal weight of the current epoch (epoch 0's before the first :meth:`new_epoch`; 0 for a
        fixed temperature)."""
        return self.reversal(max(self.epoch, 0)) if self.learned else 0.0

    # ------------------------------------------------------------------------------------------ the step
    def new_epoch(self) -> None:
        self.epoch += 1

    def current_temperature(self) -> Tensor:
        """T for the next loss: the fixed value, or τ(θ) with θ's gradient reversed by :meth:`weight`."""
        return self.module(self.weight()) if self.module is not None else self._temperature

    def loss(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> Tensor:
        """The weighted KD loss at the current temperature (for a learned one, with its reversed gradient path)."""
        temp = self.current_temperature()
        self._temperature = temp.detach().float()
        return weighted_kd_loss(student_logits, teacher_logits, targets, self.ce_weight, self.kd_weight, temp,
                                self.standardize)

    def train_step(self, model: nn.Module, batch: Sequence[Tensor], val: Any = None) -> Tensor:
        """Forward, loss, backward and the optimizer's step on one ``(x, y, teacher_logits)`` batch; ``val`` is
        not used (the loop passes it to every stepper). Returns the detached loss."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 3:
            raise ValueError("WeightedKD.train_step: batch must be (x, y, teacher_logits)")
        x, y, t = batch
        z = model(x) if self.forward is None else self.forward(model, x)
        loss = self.loss(z, t, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def check(self) -> dict[str, int]:
        """End of run: no hypergradients to check; the counts for the records."""
        return dict(hypergrad_evals=0, nan_skipped=0)

    finish = check

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume identically: the epoch, the latest temperature and a learned θ (the
        optimizer's own state_dict holds θ's optimizer state, not its value)."""
        return dict(epoch=self.epoch, temperature=self._temperature.clone(),
                    module=None if self.module is None else self.module.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self._temperature = state["temperature"].clone().to(self._temperature.device)
        if self.module is not None:
            self.module.load_state_dict(state["module"])


__all__ = ["WeightedKD"]
