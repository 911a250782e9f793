"""Hypergradient estimators for the greedy metaparameter step, eq. (3) of the paper.

For lambda = (lambda1, T) the greedy step of eq. (3) needs

    d/dlambda L_val(U(w, lambda)),   U(w, lambda) = w - u(grad_w L_train(w, lambda), w; optimizer state),

where L_train is :func:`kdlib.losses.distillation_loss`, L_val is :func:`kdlib.losses.validation_loss` (no
explicit lambda dependence, so only the path through w' = U(w, lambda) contributes), and U is ONE step of
the inner optimizer: the paper's plain SGD ``w - lr g`` (``lr=``), or the real update rule of the
``optimizer=`` that trains the model (``torch.optim.SGD`` with momentum/dampening/nesterov/weight decay,
``Adam``/``AdamW`` (amsgrad too), ``RMSprop``, ``Adagrad``, ``NAdam``, ``RAdam``; one table of rules,
:mod:`kdlib.hypergrad.rules`) with its current state and current ``param_groups`` (lr included, so schedulers
just work).

Estimators (``method=``), one file each:

* ``"unrolled"`` (:mod:`~kdlib.hypergrad.unrolled`) -- exact reverse mode through ``steps`` virtual steps.
  ``unrolled_impl="auto"`` (default) uses for steps=1 the cheaper algebraically identical ``"cotangent"``
  evaluation; ``"reverse"`` forces double backprop; ``"higher"`` is the ``higher`` reference
  (:mod:`~kdlib.hypergrad.reference`).
* ``"finite_difference"`` (:mod:`~kdlib.hypergrad.finite_difference`) -- the paper's DARTS central difference.
* ``"neumann"`` (:mod:`~kdlib.hypergrad.neumann`) -- the implicit-function estimator (takes no step; plain SGD
  only, see there).
* ``"forward"`` (:mod:`~kdlib.hypergrad.forward`) -- forward mode, exact.

State contract: the model is left exactly as found (parameters, buffers, train/eval mode, ``.grad``); the
optimizer is only read. BatchNorm follows the model's mode per module and running statistics are never
updated (:func:`~kdlib.hypergrad.state.inner_buffers`); with ``train_logits=`` (the real step's own forward,
:meth:`kdlib.tuner.Tuner.train_step`) the one-step estimators differentiate through that graph and retain it. Randomness: every forward of one call is re-seeded
with one seed (drawn from ``generator``, else fixed), so paired forwards see the same dropout masks, inside
``torch.random.fork_rng``: the caller's global RNG state is unchanged by the call. No ``.item()`` and no host
branching on tensor values; the result is returned raw (NaN/inf included; detection is the caller's job).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from kdlib.hypergrad import finite_difference, forward, neumann, unrolled
from kdlib.hypergrad.reference import unrolled_higher
from kdlib.hypergrad.distributed import RankMean
from kdlib.hypergrad.rules import SUPPORTED, UpdateRule, check_clip, plain_sgd, resolve
from kdlib.hypergrad.state import (DEFAULT_SEED, Forward, ForwardFn, as_batches, check_val_batch, draw_seed,
                                   inner_buffers, reseed, rng_scope, split_params)
from kdlib.names import ESTIMATORS

METHODS = ESTIMATORS  # the estimators of eq. (3), kdlib.names
_LOSS_OPTIONS = ("form", "t2_scaling")
_STEP_OPTIONS = ("clip_grad_norm",)
_METHOD_OPTIONS = {
    "unrolled": ("unrolled_impl",),
    "finite_difference": ("fd_eps_scale", "fd_virtual_lr"),
    "neumann": ("neumann_terms", "neumann_alpha"),
    "forward": (),
}


def _rule(model: nn.Module, names: list[str], lr: Any, optimizer: Optional[torch.optim.Optimizer],
          clip: Optional[float] = None) -> UpdateRule:
    if optimizer is not None and lr is not None:
        raise ValueError("pass either lr= (the paper's plain-SGD step) or optimizer= (that optimizer's real "
                         "step, lr read from its param_groups), not both")
    if optimizer is None and lr is None:
        raise ValueError("hypergradient needs the inner step: lr= (plain SGD) or optimizer= (one of "
                         f"{', '.join(SUPPORTED)})")
    if optimizer is None:
        return plain_sgd(lr, names, clip)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer= must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    return resolve(optimizer, model, names, clip)


def _check(method: str, steps: int, metaparams: Tensor, options: Mapping[str, Any]) -> dict[str, Any]:
    if method not in METHODS:
        raise ValueError(f"unknown hypergradient method {method!r}; choose one of: {', '.join(METHODS)}")
    unknown = set(options) - set(_METHOD_OPTIONS[method]) - set(_LOSS_OPTIONS) - set(_STEP_OPTIONS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method!r}; valid: "
                         f"{sorted(_METHOD_OPTIONS[method] + _LOSS_OPTIONS + _STEP_OPTIONS)}")
    if check_clip(options.get("clip_grad_norm")) is not None and (
            method == "neumann" or options.get("unrolled_impl") == "higher"):
        raise ValueError("clip_grad_norm= models the clipped step of 'unrolled' (not unrolled_impl='higher'), "
                         "'finite_difference' and 'forward'; method='neumann' takes no step")
    if not isinstance(metaparams, Tensor) or metaparams.shape != (2,):
        shape = tuple(metaparams.shape) if isinstance(metaparams, Tensor) else type(metaparams).__name__
        raise ValueError(f"metaparams must be the tensor (lambda1, T) of shape (2,), got {shape}")
    if method == "unrolled":
        impl = options.get("unrolled_impl", "auto")
        if impl not in ("auto", "cotangent", "reverse", "higher"):
            raise ValueError(f"unrolled_impl must be 'auto', 'cotangent', 'reverse' or 'higher', got {impl!r}")
        if impl == "cotangent" and steps != 1:
            raise ValueError("unrolled_impl='cotangent' is the one-step (steps=1) evaluation")
    elif method in ("finite_difference", "neumann") and steps != 1:
        raise ValueError(f"method {method!r} is a one-step estimator; steps={steps} applies only to "
                         f"'unrolled' and 'forward'")
    return {k: options[k] for k in _LOSS_OPTIONS if k in options}


def reuses_train_logits(method: str, steps: int = 1, unrolled_impl: str = "auto") -> bool:
    """Whether the estimator takes the real step's train logits (``train_logits=``) instead of its own forward:
    the one-step ``unrolled`` (cotangent evaluation) and ``finite_difference``."""
    return (method == "finite_difference" and steps == 1) or (
        method == "unrolled" and steps == 1 and unrolled_impl in ("auto", "cotangent"))


def _dispatch(fwd: Forward, params, batches, val_batch, metaparams, rule, t_val, method, steps, loss_opts,
              options, shared=None, train_grad=None, val_mean=None) -> Tensor:
    """Route to the estimator (arguments already validated, host-side only)."""
    args = (fwd, params)
    if method == "unrolled":
        impl = options.get("unrolled_impl", "auto")
        if steps == 1 and impl in ("auto", "cotangent"):
            return unrolled.unrolled_one_step(*args, batches[0], val_batch, metaparams, rule, t_val, loss_opts,
                                              shared=shared, train_grad=train_grad, val_mean=val_mean)
        return unrolled.unrolled_reverse(*args, batches, val_batch, metaparams, rule, t_val, loss_opts)
    if method == "forward":
        return forward.forward_mode(*args, batches, val_batch, metaparams, rule, t_val, loss_opts)
    method_opts = {k: options[k] for k in _METHOD_OPTIONS[method] if k in options}
    if method == "finite_difference":
        return finite_difference.finite_difference(*args, batches[0], val_batch, metaparams, rule, t_val,
                                                   loss_opts, shared=shared, train_grad=train_grad,
                                                   val_mean=val_mean, **method_opts)
    return neumann.neumann(*args, batches[0], val_batch, metaparams, rule, t_val, loss_opts, **method_opts)


def hypergradient_functional(model: nn.Module, params: Mapping[str, Tensor], state: Mapping[str, Any],
                             train_batch, val_batch, metaparams: Tensor, lr: Any = None, t_val: Any = 1.0,
                             method: str = "unrolled", steps: int = 1,
                             optimizer: Optional[torch.optim.Optimizer] = None, forward: Optional[ForwardFn] = None,
                             generator: Optional[torch.Generator] = None,
                             shared: Optional[tuple[Tensor, Mapping[str, Tensor]]] = None,
                             train_grad: Optional[Mapping[str, Tensor]] = None, rank_mean: Optional[RankMean] = None,
                             **options: Any) -> Tensor:
    """:func:`hypergradient` on explicit state: ``params`` (trainable, stepped; names as in
    ``model.named_parameters()``) and ``state`` (frozen parameters and buffers, used as given -- see
    :func:`inner_buffers` for safe BN buffers). ``shared=(z, w)``: the real step's train logits and the
    trainable tensors they were computed from (same names as ``params``), see :func:`hypergradient`'s
    ``train_logits``; ``train_grad``: the train gradient of every parameter of ``params`` (see there)."""
    loss_opts = _check(method, steps, metaparams, options)
    impl = options.get("unrolled_impl", "auto")
    if shared is not None and not reuses_train_logits(method, steps, impl):
        raise ValueError(f"train_logits= is used only by the one-step 'unrolled' and 'finite_difference' "
                         f"estimators, not method={method!r} steps={steps}; leave it out")
    if train_grad is not None:
        if not reuses_train_logits(method, steps, impl):
            raise ValueError(f"train_grad= (the gradient already in .grad) is taken by the one-step 'unrolled' and "
                             f"'finite_difference' estimators, not method={method!r} steps={steps} "
                             f"unrolled_impl={impl!r}")
        missing = [n for n in params if n not in train_grad]
        if missing:
            raise ValueError(f"train_grad= lacks the gradient of {missing[:3]}; give one for every stepped parameter")
    if options.get("unrolled_impl") == "higher":
        raise ValueError("unrolled_impl='higher' works on the model itself: use hypergradient()")
    rule = _rule(model, list(params), lr, optimizer, check_clip(options.get("clip_grad_norm")))
    batches = as_batches(train_batch, steps)
    val = check_val_batch(val_batch)
    seed = draw_seed(generator)
    with torch.enable_grad(), rng_scope(model) as devices:
        fwd = Forward(model, state, forward, seed, devices)
        grads = None if train_grad is None else {n: train_grad[n].detach() for n in params}
        out = _dispatch(fwd, params, batches, val, metaparams, rule, t_val, method, steps, loss_opts, options,
                        shared, grads, rank_mean if train_grad is not None else None)
    if rank_mean is not None:
        (out,) = rank_mean([out])
    return out.to(metaparams.dtype)


def hypergradient(model: nn.Module, train_batch, val_batch, metaparams: Tensor, lr: Any = None,
                  t_val: Any = 1.0, method: str = "unrolled", steps: int = 1,
                  optimizer: Optional[torch.optim.Optimizer] = None, forward: Optional[ForwardFn] = None,
                  generator: Optional[torch.Generator] = None, train_logits: Optional[Tensor] = None,
                  train_grad: Optional[Mapping[str, Optional[Tensor]]] = None, rank_mean: Optional[RankMean] = None,
                  **options: Any) -> Tensor:
    """Gradient w.r.t. lambda = (lambda1, T) of L_val(U(w, lambda)) after one inner step U, eq. (3).

    Args:
        model: the student; left exactly as found (parameters, buffers, mode, ``.grad``).
        train_batch: ``(inputs, y, teacher_logits)``; for ``steps=K>1`` also a list of K such batches.
            ``inputs`` is anything the model's forward takes (a tensor, a dict, ...).
        val_batch: ``(inputs, y)``.
        metaparams: tensor ``(lambda1, T)`` of shape (2,); its dtype/device is that of the result.
        lr: the plain-SGD inner step ``w - lr g`` (the paper), float or 0-d tensor. Exclusive with ``optimizer``.
        t_val: T_val of L_val.
        method: ``"unrolled"`` | ``"finite_difference"`` | ``"neumann"`` | ``"forward"``.
        steps: inner steps (``unrolled`` and ``forward`` only).
        optimizer: the torch optimizer that trains ``model`` (:data:`SUPPORTED`: SGD, Adam, AdamW, RMSprop,
            Adagrad, NAdam, RAdam): differentiate through its real update rule with its current state and param
            groups (read only). Others: ``NotImplementedError``. ``neumann`` accepts only a plain SGD (no step
            is taken; see there).
        forward: ``(model, inputs) -> logits`` for models with keyword arguments, dict inputs or dict
            outputs; default ``model(inputs)``, which must return a tensor.
        generator: a CPU ``torch.Generator`` owned by the caller; one seed is drawn from it per call (fresh
            dropout masks per call, the same masks for all forwards of the call). Default: a fixed seed.
        train_logits: the model's logits on the train inputs with their autograd graph to its parameters, i.e.
            the forward of the real training step (:meth:`kdlib.tuner.Tuner.train_step`). The one-step
            estimators (:func:`reuses_train_logits`) then skip their own train forward and retain the graph for
            the real step's backward. Those logits carry the real step's dropout masks (the validation forward
            keeps the call's seed) and BatchNorm batch statistics, identical to the estimator's own forward.
        train_grad: the gradient of L_train at (w, metaparams) on ``train_batch`` already taken by the loop's own
            ``loss.backward()`` (``{name: p.grad}`` over ``model.named_parameters()``; :class:`kdlib.Tuner`'s
            ``placement="after_backward"``). The one-step ``unrolled`` and ``finite_difference`` estimators then
            step from it instead of taking it again: ``unrolled`` needs only J^T c_i (one forward, two backwards),
            ``finite_difference`` only its two perturbed no-grad forwards. A parameter whose entry is ``None`` is
            not stepped (``optimizer.step()`` skips it). Exact for a model without dropout; with dropout the
            estimator's own forward has other masks than the loop's. With ``train_logits`` too (the logits of that
            same backward, their graph retained: :meth:`kdlib.tuner.Tuner.train_step`), ``unrolled`` takes no
            forward at all, only J^T c_1, J^T c_2 through that graph (then freed), with the loop's dropout masks.
        rank_mean: data parallelism (:func:`kdlib.hypergrad.distributed.rank_mean`, averaging tensors over the
            ranks). Without ``train_grad``: the result is the mean over ranks of each rank's hypergradient on its
            own batches (one two-number all-reduce). With ``train_grad`` (then DDP's rank-averaged gradient): the
            validation gradient is averaged too (one model-sized all-reduce), and the result is the hypergradient
            of (1/R) sum_r L_val(w'; val_r) through w' = U(w, (1/R) sum_r grad L_train(w; batch_r)): for a model
            without batch-coupled layers and equal per-rank batches, the single-process hypergradient of the
            ranks' batches concatenated.
        **options: loss options ``form`` ("ce"/"kl"), ``t2_scaling`` (see :func:`distillation_loss`);
            ``clip_grad_norm`` (the max_norm of the loop's ``torch.nn.utils.clip_grad_norm_(model.parameters(),
            max_norm)`` between backward and step, modelled exactly; without it the step is unclipped); and
            per method: ``unrolled_impl`` ("auto"/"cotangent"/"reverse"/"higher"), ``fd_eps_scale`` (0.01),
            ``fd_virtual_lr`` (None = lr), ``neumann_terms`` (5), ``neumann_alpha`` (None = lr).

    Returns:
        Tensor of shape (2,): (dL_val/dlambda1, dL_val/dT). Raw: may hold NaN/inf, never synced.
    """
    if method == "unrolled" and options.get("unrolled_impl") == "higher":
        if train_logits is not None or train_grad is not None:
            raise ValueError("train_logits= and train_grad= are not used by unrolled_impl='higher'; leave them out")
        loss_opts = _check(method, steps, metaparams, options)
        params, _ = split_params(model)
        _rule(model, list(params), lr, optimizer)  # same argument checks and optimizer support
        batches = as_batches(train_batch, steps)
        val = check_val_batch(val_batch)
        seed = draw_seed(generator)
        call = (lambda m, x: m(x)) if forward is None else forward
        with rng_scope(model) as devices:
            def seeded(m: nn.Module, x: Any) -> Tensor:
                reseed(seed, devices)
                return call(m, x)

            out = unrolled_higher(model, batches, val, metaparams, lr, t_val, loss_opts, optimizer=optimizer,
                                  forward=seeded)
        return out if rank_mean is None else rank_mean([out])[0]
    params, frozen = split_params(model)
    if train_grad is not None:  # parameters without a gradient are held, as optimizer.step() skips them
        unknown = sorted(set(train_grad) - set(params) - set(frozen))
        if unknown:
            raise ValueError(f"train_grad= names {unknown[:3]}, not parameters of the model")
        frozen.update({n: p for n, p in params.items() if train_grad.get(n) is None})
        params = {n: p for n, p in params.items() if train_grad.get(n) is not None}
        if not params:
            raise ValueError("train_grad= holds no gradient: call loss.backward() first")
    state = {**inner_buffers(model), **frozen}
    shared = None
    if train_logits is not None:
        if not isinstance(train_logits, Tensor) or train_logits.grad_fn is None:
            raise ValueError("train_logits= must be the model's logits on the train inputs computed with autograd "
                             "enabled (their graph to the parameters is what the estimator differentiates)")
        shared = (train_logits, {n: p for n, p in model.named_parameters() if p.requires_grad})
    return hypergradient_functional(model, params, state, train_batch, val_batch, metaparams, lr, t_val,
                                    method=method, steps=steps, optimizer=optimizer, forward=forward,
                                    generator=generator, shared=shared, train_grad=train_grad, rank_mean=rank_mean,
                                    **options)


__all__ = ["hypergradient", "hypergradient_functional", "reuses_train_logits", "unrolled_higher", "split_params", "inner_buffers",
           "METHODS", "SUPPORTED", "DEFAULT_SEED"]
