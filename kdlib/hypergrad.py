"""Hypergradient estimators for the greedy metaparameter step, eq. (3) of the paper.

For lambda = (lambda1, T) the greedy step of eq. (3) needs

    d/dlambda L_val(U(w, lambda)),   U(w, lambda) = w - lr * grad_w L_train(w, lambda),

where L_train is :func:`kdlib.losses.distillation_loss` and L_val is :func:`kdlib.losses.validation_loss`
(L_val has no explicit lambda dependence, so only the path through w' = U(w, lambda) contributes).

Estimators (``method=``):

* ``"unrolled"`` -- exact reverse-mode differentiation through ``steps`` plain-SGD steps (steps=1 is the
  paper's greedy step; steps=K>1 is truncated reverse mode over K batches or one batch reused K times).
  ``unrolled_impl="auto"`` (default) uses, for steps=1, an algebraically identical but cheaper evaluation
  (``"cotangent"``, see :func:`_unrolled_one_step`); ``"reverse"`` forces plain double backprop through the
  step(s) (the higher-style computation; always used for steps > 1).
* ``"finite_difference"`` -- the paper's approximation (DARTS central difference, authors' ``hyperparams.py``):
  ``w' = w - lr g``, ``dw = grad L_val(w')``, ``eps = 0.01 / ||dw||``,
  ``hess = (grad_lambda L_train(w + eps dw) - grad_lambda L_train(w - eps dw)) / (2 eps)``, result ``-lr * hess``.
  The authors used the *initial* lr for the virtual step and the *current* (StepLR-decayed) lr for the scale;
  here ``lr`` is used for both unless ``fd_virtual_lr`` is given. The perturbation has norm exactly
  ``fd_eps_scale`` (0.01), so the error is curvature-dominated and the same in float32 and float64 (tests:
  logistic regression ~1e-3 relative at worst; the BN CNN 0.2%-10%); a smaller ``fd_eps_scale`` in float64
  converges to ``"unrolled"``.
* ``"neumann"`` -- implicit-function estimator (Lorraine et al. 2020; the Theorem 1 proof formula from
  Pedregosa 2016): ``-(d2 L_train / dlambda dw)^T H^{-1} grad_w L_val`` with
  ``H^{-1} v ~ alpha * sum_{j=0}^{J} (I - alpha H)^j v`` (J = ``neumann_terms`` >= 0 Hessian-vector
  products, J + 1 summands; alpha = ``neumann_alpha``, default ``lr``; converges iff alpha < 2 / lambda_max(H)). Everything (H, the mixed derivative, grad_w L_val) is evaluated **at the current w**
  (the implicit function theorem treats w as an approximate inner optimum; no virtual step is taken).
  Hessian-vector products by double backprop. With H = I and alpha = lr = 1, and w at the inner optimum,
  it coincides with ``"unrolled"``, steps=1 (Theorem 1).
* ``"forward"`` -- forward mode: two JVPs (one per metaparameter, vmapped by ``torch.func.jacfwd``) through
  the ``steps``-step map (forward-over-reverse). Exact, equal to ``"unrolled"``; slower than it on CPU.
  Warning-free: the only warning seen is a FutureWarning (``torch.jit.script`` deprecated) raised by torch's
  own one-time import of its forward-AD decompositions; :func:`_prepare_forward_ad` silences exactly that.

State contract: the model is left exactly as found. Parameters are never written (the estimators work on
``torch.func.functional_call`` parameter dicts, no deepcopy, no in-place perturbation), ``.grad`` fields are
not touched, and train/eval mode is not changed. BatchNorm: the inner forward passes use the **model's
current mode** per module -- batch statistics for a BN module in train mode (as in the authors' code, whose
virtual network stayed in train mode), running statistics for one in eval mode -- and the estimators
**never update running statistics**: for a norm module in train mode the running buffers are passed as
``None`` to ``functional_call`` (which selects batch statistics and skips the update, the output being
identical), other buffers are passed as clones. (The authors' code did update the student's BN running
stats with its extra forwards; we do not.)

Cost (CIFAR-shaped BN student, batch 128, CPU, median of 20 interleaved calls; ratios to one plain
distillation SGD step): unrolled (auto) ~2.8-3.0x, unrolled (reverse) ~3.3-4.0x, finite_difference
~3.2-3.4x, forward ~5.5-7.4x, neumann (5 terms) ~12-16x. The floor of any exact one-step estimator is about
2x (the train and the validation gradient) plus one extra pass for the mixed term; "auto" gets that pass by
batching two extra cotangents into the train backward (profile: convolution_backward ~30%, which vmap runs
once per cotangent; max_pool2d ~15%; BN backward ~10%).

The metaparameters are not checked against the box here (that would sync); see
:func:`kdlib.metaparams.check_metaparams`. No ``.item()`` and no host branching on tensor values: the estimators are CUDA-sync-free and return the raw
tensor (NaN/inf included; detection and zeroing are the caller's job).
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _NormBase

from kdlib.losses import distillation_loss, validation_loss

TrainBatch = tuple  # (x, y, teacher_logits)
ValBatch = tuple  # (x, y)
METHODS = ("unrolled", "finite_difference", "neumann", "forward")
_LOSS_OPTIONS = ("form", "t2_scaling")
_METHOD_OPTIONS = {
    "unrolled": ("unrolled_impl",),
    "finite_difference": ("fd_eps_scale", "fd_virtual_lr"),
    "neumann": ("neumann_terms", "neumann_alpha"),
    "forward": (),
}
_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")


# ----------------------------------------------------------------------------------------------------------
# functional state of the model
# ----------------------------------------------------------------------------------------------------------
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


def _forward(model: nn.Module, params: Mapping[str, Tensor], state: Mapping[str, Any], x: Tensor) -> Tensor:
    return functional_call(model, ({**state, **params},), (x,), strict=False, tie_weights=True)


def _as_batches(train_batch: Union[TrainBatch, Sequence[TrainBatch]], steps: int) -> list[TrainBatch]:
    """One (x, y, teacher_logits) batch reused ``steps`` times, or a list of exactly ``steps`` batches."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if len(train_batch) > 0 and isinstance(train_batch[0], Tensor):
        if len(train_batch) != 3:
            raise ValueError("train_batch must be (x, y, teacher_logits)")
        return [tuple(train_batch)] * steps
    batches = [tuple(b) for b in train_batch]
    if len(batches) != steps:
        raise ValueError(f"got {len(batches)} train batches for steps={steps}; pass one batch (reused) "
                         f"or exactly `steps` batches")
    for b in batches:
        if len(b) != 3:
            raise ValueError("each train batch must be (x, y, teacher_logits)")
    return batches


def _train_loss(model, params, state, batch, lam, loss_opts) -> Tensor:
    x, y, t = batch
    return distillation_loss(_forward(model, params, state, x), t, y, lam[0], lam[1], **loss_opts)


def _val_loss(model, params, state, val_batch, t_val) -> Tensor:
    x, y = val_batch
    return validation_loss(_forward(model, params, state, x), y, t_val)


def _grad(out: Tensor, inputs: Sequence[Tensor], **kw) -> tuple[Tensor, ...]:
    return torch.autograd.grad(out, inputs, allow_unused=True, materialize_grads=True, **kw)


def _leaves(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {n: p.detach().requires_grad_(True) for n, p in params.items()}


# ----------------------------------------------------------------------------------------------------------
# estimators (functional form: explicit parameter / buffer dicts)
# ----------------------------------------------------------------------------------------------------------
def _unrolled_reverse(model, params, state, batches, val_batch, metaparams, lr, t_val, loss_opts) -> Tensor:
    """Reverse mode through K SGD steps: build w_K(lambda) with create_graph, then backprop L_val to lambda."""
    lam = metaparams.detach().clone().requires_grad_(True)
    w = _leaves(params)
    names = list(w)
    for batch in batches:
        loss = _train_loss(model, w, state, batch, lam, loss_opts)
        grads = _grad(loss, [w[n] for n in names], create_graph=True)
        w = {n: w[n] - lr * g for n, g in zip(names, grads)}
    lv = _val_loss(model, w, state, val_batch, t_val)
    (hg,) = _grad(lv, [lam])
    return hg


def _unrolled_one_step(model, params, state, batch, val_batch, metaparams, lr, t_val, loss_opts) -> Tensor:
    """Exact one-step hypergradient of eq. (3), evaluated without differentiating twice through the network.

    Let z = g(x, w) be the train logits (they do not depend on lambda), J = dz/dw, s(lambda) = dL_train/dz,
    w' = w - lr J^T s and v = grad_{w'} L_val(w'). Then
        dL_val(w')/dlambda_i = -lr * v . (d/dlambda_i J^T s) = -lr * v . J^T c_i,   c_i = ds/dlambda_i  (B, K).
    The c_i come from the tiny (B, K) loss head; J^T s (the SGD direction) and J^T c_1, J^T c_2 come from ONE
    backward through the saved train graph with three batched cotangents (``is_grads_batched``). Cost: train
    forward, one 3-cotangent backward, validation forward and backward -- no create_graph through the network.
    Identical (up to rounding) to ``unrolled_impl="reverse"``; checked in the tests.
    """
    x, y, t = batch
    lam = metaparams.detach().clone().requires_grad_(True)
    w = _leaves(params)
    names = list(w)
    wl = [w[n] for n in names]
    z = _forward(model, w, state, x)
    z_det = z.detach().requires_grad_(True)
    loss = distillation_loss(z_det, t, y, lam[0], lam[1], **loss_opts)
    (s,) = _grad(loss, [z_det], create_graph=True)  # (B, K), with a graph to lambda
    # c_i = ds/dlambda_i by the double-backward trick on the loss head only: d/dr [ (ds/dlambda)^T r ]_i
    r = torch.zeros_like(s, requires_grad=True)
    (s_vjp,) = _grad(s, [lam], grad_outputs=r, create_graph=True)
    cots = [s.detach()] + [_grad(s_vjp[i], [r], retain_graph=i + 1 < lam.numel())[0] for i in range(lam.numel())]
    jt = torch.autograd.grad(z, wl, grad_outputs=torch.stack(cots).to(z.dtype), is_grads_batched=True,
                             allow_unused=True)
    jt = [torch.zeros((len(cots),) + p.shape, dtype=p.dtype, device=p.device) if g is None else g
          for g, p in zip(jt, wl)]
    w_new = {n: (w[n].detach() - lr * g[0]).requires_grad_(True) for n, g in zip(names, jt)}
    lv = _val_loss(model, w_new, state, val_batch, t_val)
    v = _grad(lv, [w_new[n] for n in names])
    mixed = torch.stack([(g[1:].flatten(1) * vi.reshape(1, -1)).sum(1) for g, vi in zip(jt, v)]).sum(0)
    return (-lr * mixed).to(metaparams.dtype)


def _finite_difference(model, params, state, batch, val_batch, metaparams, lr, t_val, loss_opts,
                       fd_eps_scale: float = 0.01, fd_virtual_lr: Any = None) -> Tensor:
    """The paper's DARTS-style central difference (authors' ``AdamHyperGradCalculator``, notes Sec. 3)."""
    x, y, t = batch
    lam_c = metaparams.detach()
    virtual_lr = lr if fd_virtual_lr is None else fd_virtual_lr
    w = _leaves(params)
    names = list(w)
    loss = _train_loss(model, w, state, batch, lam_c, loss_opts)
    gw = _grad(loss, [w[n] for n in names])
    w_new = {n: (w[n].detach() - virtual_lr * gi).requires_grad_(True) for n, gi in zip(names, gw)}
    lv = _val_loss(model, w_new, state, val_batch, t_val)
    dw = _grad(lv, [w_new[n] for n in names])
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d) for d in dw]))
    eps = fd_eps_scale / norm
    lam_grads = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            w_pm = {n: params[n] + (sign * eps) * d for n, d in zip(names, dw)}
            z = _forward(model, w_pm, state, x)
        lam = lam_c.clone().requires_grad_(True)
        (gl,) = _grad(distillation_loss(z, t, y, lam[0], lam[1], **loss_opts), [lam])
        lam_grads.append(gl)
    hess = (lam_grads[0] - lam_grads[1]) / (2 * eps)
    return -lr * hess


def _neumann(model, params, state, batch, val_batch, metaparams, lr, t_val, loss_opts,
             neumann_terms: int = 5, neumann_alpha: Any = None) -> Tensor:
    """Implicit hypergradient -(d2L_train/dlambda dw)^T H^{-1} grad_w L_val at the current w (Lorraine et al.)."""
    alpha = lr if neumann_alpha is None else neumann_alpha
    if neumann_terms < 0:
        raise ValueError("neumann_terms must be >= 0")
    lam = metaparams.detach().clone().requires_grad_(True)
    w = _leaves(params)
    names = list(w)
    wl = [w[n] for n in names]
    loss = _train_loss(model, w, state, batch, lam, loss_opts)
    g = _grad(loss, wl, create_graph=True)
    v = _grad(_val_loss(model, w, state, val_batch, t_val), wl)
    live = [i for i, gi in enumerate(g) if gi.requires_grad]  # parameters unused by L_train have no graph
    g_live = [g[i] for i in live]
    p = list(v)
    acc = list(v)
    for _ in range(neumann_terms):
        hp = _grad(g_live, wl, grad_outputs=[p[i] for i in live], retain_graph=True)
        p = [pi - alpha * hi for pi, hi in zip(p, hp)]
        acc = [ai + pi for ai, pi in zip(acc, p)]
    q = [alpha * ai for ai in acc]  # ~ H^{-1} v
    (mixed,) = _grad(g_live, [lam], grad_outputs=[q[i] for i in live])  # (d2 L / dlambda dw)^T q
    return -mixed


_JVP_READY = False


def _prepare_forward_ad() -> None:
    """Load torch's forward-AD decompositions once. Their one-time import calls the deprecated
    ``torch.jit.script`` inside torch itself and emits a FutureWarning unrelated to our code; it is silenced
    here, narrowly (that category and message, that import only)."""
    global _JVP_READY
    if _JVP_READY:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
        import torch._decomp.decompositions_for_jvp  # noqa: F401
    _JVP_READY = True


def _forward_mode(model, params, state, batches, val_batch, metaparams, lr, t_val, loss_opts) -> Tensor:
    """Forward-over-reverse: d/dlambda_i of the K-step map, one JVP per metaparameter (``torch.func.jacfwd``)."""
    _prepare_forward_ad()
    w0 = {n: p.detach() for n, p in params.items()}

    def outer(lam: Tensor) -> Tensor:
        w = w0
        for batch in batches:
            g = torch.func.grad(lambda w_: _train_loss(model, w_, state, batch, lam, loss_opts))(w)
            w = {n: w[n] - lr * g[n] for n in w}
        return _val_loss(model, w, state, val_batch, t_val)

    # jacfwd = both JVPs (tangents e_1, e_2) vmapped in one pass: ~20% faster than two torch.func.jvp calls
    return torch.func.jacfwd(outer)(metaparams.detach())


def hypergradient_functional(model: nn.Module, params: Mapping[str, Tensor], state: Mapping[str, Any],
                             train_batch, val_batch: ValBatch, metaparams: Tensor, lr, t_val=1.0,
                             method: str = "unrolled", steps: int = 1, **options: Any) -> Tensor:
    """:func:`hypergradient` on explicit state: ``params`` (trainable, stepped) and ``state`` (frozen
    parameters and buffers, used as given -- see :func:`inner_buffers` for safe BN buffers)."""
    loss_opts = {k: options.pop(k) for k in _LOSS_OPTIONS if k in options}
    if method not in METHODS:
        raise ValueError(f"unknown hypergradient method {method!r}; choose one of: {', '.join(METHODS)}")
    unknown = set(options) - set(_METHOD_OPTIONS[method])
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method!r}; valid: "
                         f"{sorted(_METHOD_OPTIONS[method] + _LOSS_OPTIONS)}")
    if metaparams.shape != (2,):
        raise ValueError(f"metaparams must be the tensor (lambda1, T) of shape (2,), got {tuple(metaparams.shape)}")
    batches = _as_batches(train_batch, steps)
    with torch.enable_grad():
        return _dispatch(model, params, state, batches, val_batch, metaparams, lr, t_val, method, steps,
                         loss_opts, options).to(metaparams.dtype)


def _dispatch(model, params, state, batches, val_batch, metaparams, lr, t_val, method, steps, loss_opts,
              options) -> Tensor:
    """Route to the estimator; validates method-specific arguments (host-side only, no tensor values)."""
    args = (model, params, state)
    if method == "unrolled":
        impl = options.get("unrolled_impl", "auto")
        if impl not in ("auto", "cotangent", "reverse"):
            raise ValueError(f"unrolled_impl must be 'auto', 'cotangent' or 'reverse', got {impl!r}")
        if impl == "cotangent" and steps != 1:
            raise ValueError("unrolled_impl='cotangent' is the one-step (steps=1) evaluation")
        if steps == 1 and impl in ("auto", "cotangent"):
            return _unrolled_one_step(*args, batches[0], val_batch, metaparams, lr, t_val, loss_opts)
        return _unrolled_reverse(*args, batches, val_batch, metaparams, lr, t_val, loss_opts)
    if method == "forward":
        return _forward_mode(*args, batches, val_batch, metaparams, lr, t_val, loss_opts)
    if steps != 1:
        raise ValueError(f"method {method!r} is a one-step estimator; steps={steps} applies only to "
                         f"'unrolled' and 'forward'")
    if method == "finite_difference":
        return _finite_difference(*args, batches[0], val_batch, metaparams, lr, t_val, loss_opts, **options)
    return _neumann(*args, batches[0], val_batch, metaparams, lr, t_val, loss_opts, **options)


def unrolled_higher(model: nn.Module, batches: Sequence[TrainBatch], val_batch: ValBatch, metaparams: Tensor,
                    lr, t_val, loss_opts: Mapping[str, Any]) -> Tensor:
    """Eq. (3) through ``len(batches)`` SGD steps with ``higher`` (``unrolled_impl="higher"``).

    The reference implementation: ``higher.innerloop_ctx`` with a differentiable SGD, exactly the DARTS /
    ``higher`` recipe. ``higher`` does not write BatchNorm running statistics back consistently (higher issue
    #103), so every buffer is saved before and restored after, leaving the model as found. Slower than the
    default ``torch.func`` path, which the tests check against it.
    """
    import higher

    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    lam = metaparams.detach().clone().requires_grad_(True)
    inner_opt = torch.optim.SGD(model.parameters(), lr=float(lr))
    try:
        with torch.enable_grad(), higher.innerloop_ctx(model, inner_opt, copy_initial_weights=True,
                                                       track_higher_grads=True) as (fmodel, diffopt):
            for x, y, t in batches:
                diffopt.step(distillation_loss(fmodel(x), t, y, lam[0], lam[1], **loss_opts))
            lv = validation_loss(fmodel(val_batch[0]), val_batch[1], t_val)
            (hg,) = torch.autograd.grad(lv, [lam])
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(saved[n])
    return hg.to(metaparams.dtype)


def hypergradient(model: nn.Module, train_batch, val_batch: ValBatch, metaparams: Tensor, lr, t_val=1.0,
                  method: str = "unrolled", steps: int = 1, **options: Any) -> Tensor:
    """Gradient w.r.t. lambda = (lambda1, T) of L_val(w - lr * grad_w L_train(w, lambda)), eq. (3).

    Args:
        model: the student; left exactly as found (parameters, buffers, mode; see the module docstring).
        train_batch: ``(x, y, teacher_logits)``; for ``steps=K>1`` also a list of K such batches.
        val_batch: ``(x, y)``.
        metaparams: tensor ``(lambda1, T)`` of shape (2,); its dtype/device is that of the result.
        lr: the SGD learning rate of the (virtual) inner step(s), float or 0-d tensor.
        t_val: T_val of L_val.
        method: ``"unrolled"`` | ``"finite_difference"`` | ``"neumann"`` | ``"forward"``.
        steps: inner SGD steps (``unrolled`` and ``forward`` only).
        **options: loss options ``form`` ("ce"/"kl"), ``t2_scaling`` (see :func:`distillation_loss`), and
            per method: ``unrolled_impl`` ("auto"/"cotangent"/"reverse"/"higher"), ``fd_eps_scale`` (0.01),
            ``fd_virtual_lr`` (None = lr), ``neumann_terms`` (5), ``neumann_alpha`` (None = lr).

    Returns:
        Tensor of shape (2,): (dL_val/dlambda1, dL_val/dT). Raw: may hold NaN/inf, never synced.
    """
    if method == "unrolled" and options.get("unrolled_impl") == "higher":
        opts = {k: v for k, v in options.items() if k != "unrolled_impl"}
        unknown = set(opts) - set(_LOSS_OPTIONS)
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for unrolled_impl='higher'")
        return unrolled_higher(model, _as_batches(train_batch, steps), val_batch, metaparams, lr, t_val, opts)
    params, frozen = split_params(model)
    state = {**inner_buffers(model), **frozen}
    return hypergradient_functional(model, params, state, train_batch, val_batch, metaparams, lr, t_val,
                                    method=method, steps=steps, **options)


__all__ = ["hypergradient", "unrolled_higher", "hypergradient_functional", "split_params", "inner_buffers", "METHODS"]
