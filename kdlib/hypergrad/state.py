"""Functional state of the student for the hypergradient estimators of eq. (3).

The estimators never write the model: they evaluate it on explicit parameter dicts (trainable ``w``, frozen
parameters and buffers held fixed) through :class:`Forward`, which also

* applies the user's model interface ``forward=(model, inputs) -> logits`` (keyword arguments, dict inputs,
  dict outputs) to the module with substituted parameters, the default being ``model(inputs)``;
* re-seeds the random number generators with one seed per estimator call before **every** forward, inside
  :func:`rng_scope` (``torch.random.fork_rng``): all forwards of one call see the same dropout masks, and the
  caller's global RNG stream is left exactly as found.

BatchNorm: a norm module in train mode gets ``None`` running statistics (batch statistics, no running-stat
update), one in eval mode reads its real running statistics; every other buffer is cloned
(:func:`inner_buffers`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _NormBase

from kdlib.losses import distillation_loss, validation_loss

ForwardFn = Callable[[nn.Module, Any], Tensor]
DEFAULT_SEED = 0
_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")


def split_params(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(trainable, frozen) parameter dicts of detached aliases (no copy). Only trainable ones are stepped."""
    trainable, frozen = {}, {}
    for name, p in model.named_parameters():
        (trainable if p.requires_grad else frozen)[name] = p.detach()
    return trainable, frozen


def inner_buffers(model: nn.Module) -> dict[str, Optional[Tensor]]:
    """Buffers for the estimators' inner forwards, chosen so that the real buffers are never written.

    Norm modules (BatchNorm/InstanceNorm) in train mode get ``None`` running stats: they then normalise with
    batch statistics (what train mode does anyway) and skip the running-average update. Norm modules in eval
    mode read their real running stats (eval mode never writes them). Any other buffer is cloned, so that an
    unknown module mutating its buffers in forward cannot leak into the model.
    """
    out: dict[str, Optional[Tensor]] = {}
    for mod_name, module in model.named_modules():
        for buf_name, buf in module.named_buffers(recurse=False):
            full = f"{mod_name}.{buf_name}" if mod_name else buf_name
            if full in out:
                continue
            if isinstance(module, _NormBase) and buf_name in _NORM_STATS:
                out[full] = None if module.training else buf
            else:
                out[full] = None if buf is None else buf.clone()
    return out


# ----------------------------------------------------------------------------------------------------------
# randomness: one seed per estimator call, the caller's RNG untouched
# ----------------------------------------------------------------------------------------------------------
def draw_seed(generator: Optional[torch.Generator]) -> int:
    """The seed of one estimator call: drawn from the caller's ``generator`` (advancing it), else fixed."""
    if generator is None:
        return DEFAULT_SEED
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator= must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator (drawing a seed from a {generator.device} "
                         f"generator would synchronise); got one on {generator.device}")
    return int(torch.randint(0, 2**62, (), generator=generator))


def _cuda_devices(model: nn.Module) -> list[int]:
    return sorted({t.device.index or 0 for t in [*model.parameters(), *model.buffers()] if t.is_cuda})


@contextlib.contextmanager
def rng_scope(model: nn.Module) -> Iterator[list[int]]:
    """Fork the CPU RNG and the CUDA RNGs of the model's devices; restored on exit (``fork_rng``)."""
    devices = _cuda_devices(model)
    with torch.random.fork_rng(devices=devices):
        yield devices


def reseed(seed: int, devices: Sequence[int]) -> None:
    """Set the CPU generator and the given CUDA generators to ``seed`` (only inside :func:`rng_scope`)."""
    torch.default_generator.manual_seed(seed)
    for d in devices:
        with torch.cuda.device(d):
            torch.cuda.manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------
# the functional forward
# ----------------------------------------------------------------------------------------------------------
class _UserForward(nn.Module):
    """Wrapper so that the user's ``forward(model, inputs)`` sees ``model`` with substituted parameters."""

    def __init__(self, model: nn.Module, fn: ForwardFn) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, inputs: Any) -> Any:
        return self.fn(self.model, inputs)


class Forward:
    """``logits = fwd(params, inputs)``: the model at trainable ``params`` with the fixed ``state`` (frozen
    parameters and buffers), through ``forward`` if given, re-seeded with ``seed`` before every call."""

    def __init__(self, model: nn.Module, state: Mapping[str, Any], forward: Optional[ForwardFn] = None,
                 seed: Optional[int] = None, devices: Sequence[int] = ()) -> None:
        if forward is not None and not callable(forward):
            raise TypeError(f"forward= must be a callable (model, inputs) -> logits, got {type(forward).__name__}")
        self.model = model
        self.state = dict(state)
        self.forward = forward
        self.seed = seed
        self.devices = list(devices)
        self._wrapper = None if forward is None else _UserForward(model, forward)

    def __call__(self, params: Mapping[str, Tensor], inputs: Any) -> Tensor:
        if self.seed is not None:
            reseed(self.seed, self.devices)
        if self._wrapper is None:
            out = functional_call(self.model, ({**self.state, **params},), (inputs,), strict=False,
                                  tie_weights=True)
            if not isinstance(out, Tensor):
                raise TypeError(f"the model returned {type(out).__name__}, not a logits tensor; pass "
                                f"forward=lambda model, inputs: ... returning the logits (e.g. "
                                f"model(**inputs)['logits'])")
            return out
        merged = {f"model.{k}": v for k, v in {**self.state, **params}.items()}
        out = functional_call(self._wrapper, (merged,), (inputs,), strict=False, tie_weights=True)
        if not isinstance(out, Tensor):
            raise TypeError(f"forward= returned {type(out).__name__}; it must return the logits tensor")
        return out


# ----------------------------------------------------------------------------------------------------------
# batches and the two losses on explicit parameters
# ----------------------------------------------------------------------------------------------------------
def _is_batch(b: Any, n: int) -> bool:
    return isinstance(b, (tuple, list)) and len(b) == n and isinstance(b[1], Tensor)


def as_batches(train_batch: Any, steps: int) -> list[tuple]:
    """One ``(inputs, y, teacher_logits)`` batch reused ``steps`` times, or a list of exactly ``steps`` batches.
    ``inputs`` may be any pytree (a tensor, a dict of tensors, ...) that the model's forward accepts."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not isinstance(train_batch, (tuple, list)) or len(train_batch) == 0:
        raise ValueError("train_batch must be (inputs, y, teacher_logits) or a list of such batches")
    if isinstance(train_batch[1] if len(train_batch) > 1 else None, Tensor) or not isinstance(
            train_batch[0], (tuple, list)):
        if not _is_batch(train_batch, 3):
            raise ValueError(f"train_batch must be (inputs, y, teacher_logits) with y and teacher_logits "
                             f"tensors; got a {type(train_batch).__name__} of length {len(train_batch)}")
        return [tuple(train_batch)] * steps
    batches = [tuple(b) if isinstance(b, (tuple, list)) else b for b in train_batch]
    for i, b in enumerate(batches):
        if not _is_batch(b, 3):
            raise ValueError(f"train batch {i} of the list must be (inputs, y, teacher_logits)")
    if len(batches) != steps:
        raise ValueError(f"got a list of {len(batches)} train batches for steps={steps}; pass one batch "
                         f"(reused) or exactly `steps` batches")
    return batches


def check_val_batch(val_batch: Any) -> tuple:
    """``(inputs, y)``; a third element (teacher logits) is accepted and ignored."""
    if not (_is_batch(val_batch, 2) or _is_batch(val_batch, 3)):
        raise ValueError("val_batch must be (inputs, y) with y a tensor of class labels")
    return tuple(val_batch[:2])


def train_loss(fwd: Forward, params: Mapping[str, Tensor], batch: tuple, lam: Tensor,
               loss_opts: Mapping[str, Any]) -> Tensor:
    """L_train(w, lambda) of Sec. 2 (:func:`kdlib.losses.distillation_loss`) on one batch."""
    x, y, t = batch
    return distillation_loss(fwd(params, x), t, y, lam[0], lam[1], **loss_opts)


def val_loss(fwd: Forward, params: Mapping[str, Tensor], val_batch: tuple, t_val: Any) -> Tensor:
    """L_val(w) of Sec. 2 (:func:`kdlib.losses.validation_loss`)."""
    x, y = val_batch
    return validation_loss(fwd(params, x), y, t_val)


def grad(out: Any, inputs: Sequence[Tensor], **kw: Any) -> tuple[Tensor, ...]:
    """``torch.autograd.grad`` with zeros for inputs the output does not reach."""
    return torch.autograd.grad(out, inputs, allow_unused=True, materialize_grads=True, **kw)


def leaves(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Fresh autograd leaves aliasing ``params``."""
    return {n: p.detach().requires_grad_(True) for n, p in params.items()}
