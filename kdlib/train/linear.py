"""The closed-form linear backend of the training loop: S logistic-regression students as (S, K, d) tensors.

The synthetic problem (Sec. 4.1) is tiny (a 3-feature logistic regression on 15 points, 2,000 full-batch
iterations), so the reference backend (:class:`kdlib.train.one_by_one.OneRun`) spends its time on per-iteration
Python and dispatch overhead, not arithmetic. :class:`Linear` holds S runs at once:

* stacked student parameters ``W`` (S, K, d) and ``b`` (S, K), metaparameters (S, 2), everything a tensor;
* closed-form logistic-regression derivatives (no autograd, no per-step model copies, no ``.item()``);
* the hypergradient estimators ``finite_difference`` (the paper's, DARTS-style) and ``unrolled`` (one step,
  exact) in closed form, agreeing with :func:`kdlib.hypergrad.hypergradient` run by run
  (``tests/test_train_linear.py``);
* the metaparameters move by the same :class:`kdlib.schedules.Schedule` as the Tuner of the reference backend
  (fixed, gradient, proposed; clipping, NaN skip by ``where``, metaparameter SGD, projection, Algorithm 1's
  line), here on (S, 2) stacked values.

The loop (:func:`kdlib.train.loop.run_loop`) drives it like any backend: it steps, evaluates and logs the same
rows; hyperopt's trials train together through :func:`kdlib.train.together.search_together`. Initial student
weights are those of the reference backend (``torch.manual_seed(seed)`` then the problem's ``make_student()``).
Plain full-batch SGD at a constant lr only (:func:`unsupported` says why not otherwise); both placements of the
Tuner's step (``placement``: before the backward, or after it with the values one step late).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlib.train.loop import Batch, RunOutput
from kdlib.train.problem import Problem, Split
from kdlib.train.settings import make_schedule

ESTIMATORS = ("finite_difference", "unrolled")  # the estimators written here in closed form
SYN_TRAIN_SIZE = 15  # |D_train| of the synthetic problem (kdlib.data.SYN_STUDENT): the full batch


def unsupported(st: Any, schedule: str) -> str | None:
    """Why runs of settings ``st`` (any object with the run settings' field names) under ``schedule`` cannot train
    on this backend, or None."""
    if st.shuffle or (st.batch_size is not None and st.batch_size < SYN_TRAIN_SIZE):
        return "the linear backend trains full batch in order (shuffle=False, batch_size=None)"
    if st.optimizer != "sgd" or st.momentum or st.nesterov or st.weight_decay or st.lr_step_epochs:
        return "the linear backend's closed form is plain SGD at a constant lr"
    if schedule != "fixed":
        if st.estimator not in ESTIMATORS:
            return f"the linear backend implements the estimators {', '.join(ESTIMATORS)}"
        if st.estimator == "unrolled" and st.unroll_steps != 1:
            return "the linear backend implements the one-step unrolled estimator (unroll_steps=1)"
    return None


# ---------------------------------------------------------------------------------------- the linear student
@dataclass
class LinearProblem:
    """The synthetic problem as the linear backend sees it: student features of each part, labels, teacher logits."""

    f_train: Tensor  # (N, d) student columns of D_train
    y_train: Tensor  # (N,)
    t_train: Tensor  # (N, K) teacher logits
    f_val: Tensor
    y_val: Tensor
    f_test: Tensor
    y_test: Tensor
    num_classes: int
    val_is_test: bool
    make_student: Callable[[], nn.Module]
    cols: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        k = self.num_classes
        self.onehot_train = F.one_hot(self.y_train, k).to(self.f_train.dtype)
        self.onehot_val = F.one_hot(self.y_val, k).to(self.f_val.dtype)


def _linear_of(module: nn.Module) -> tuple[nn.Linear, list[int]]:
    """The single Linear layer of a LogReg-like student and the columns it reads."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    n_params = sum(p.numel() for p in module.parameters())
    if len(linears) != 1 or n_params != sum(p.numel() for p in linears[0].parameters()) or linears[0].bias is None:
        raise NotImplementedError("the linear backend needs a student that is one biased Linear on columns of x")
    cols = getattr(module, "cols", None)
    if cols is None:
        raise NotImplementedError("the linear backend needs a LogReg-like student with a `cols` attribute")
    return linears[0], [int(c) for c in cols]


def linear_problem(problem) -> LinearProblem:
    """Turn a :class:`kdlib.train.problem.Problem` with a LogReg student into a :class:`LinearProblem`.

    The student's forward is checked against ``x[:, cols] @ W.T + b`` on the training inputs.
    """
    probe = problem.make_student().to(problem.train.x.device)
    lin, cols = _linear_of(probe)
    idx = torch.tensor(cols, dtype=torch.long, device=problem.train.x.device)
    with torch.no_grad():
        ref = probe(problem.train.x)
        mine = problem.train.x.index_select(1, idx) @ lin.weight.T + lin.bias
    if ref.shape != mine.shape or not torch.allclose(ref, mine, atol=1e-5, rtol=1e-5):
        raise NotImplementedError("the student's forward is not x[:, cols] @ W.T + b")
    val_is_test = problem.val.x is problem.test.x or (
        problem.val.x.shape == problem.test.x.shape and problem.val.x.data_ptr() == problem.test.x.data_ptr()
        and problem.val.y.data_ptr() == problem.test.y.data_ptr())

    def sel(x: Tensor) -> Tensor:
        return x.index_select(1, idx).contiguous()

    return LinearProblem(sel(problem.train.x), problem.train.y, problem.train.teacher.to(problem.train.x.dtype),
                         sel(problem.val.x), problem.val.y, sel(problem.test.x), problem.test.y,
                         int(lin.out_features), bool(val_is_test), problem.make_student, cols)


def initial_weights(lp: LinearProblem, seeds: Sequence[int], device) -> tuple[Tensor, Tensor]:
    """Stacked initial (W, b) (S, K, d), (S, K): for each seed ``torch.manual_seed(seed)`` then
    ``make_student()``, exactly as :func:`kdlib.train.one_by_one.train_student` does."""
    ws, bs = [], []
    for s in seeds:
        torch.manual_seed(int(s))
        lin, _ = _linear_of(lp.make_student())
        ws.append(lin.weight.detach().to(device))
        bs.append(lin.bias.detach().to(device))
    return torch.stack(ws), torch.stack(bs)


# -------------------------------------------------------------------------------- closed-form derivatives
def logits(f: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """(N, d) features, (S, K, d) weights, (S, K) biases -> (S, N, K) logits."""
    return torch.matmul(f, w.transpose(1, 2)) + b.unsqueeze(1)


def _split_lam(lam: Tensor) -> tuple[Tensor, Tensor]:
    return lam[:, 0].view(-1, 1, 1), lam[:, 1].view(-1, 1, 1)


def train_logit_grad(z: Tensor, onehot: Tensor, teacher: Tensor, lam: Tensor, t2_scaling: bool = False) -> Tensor:
    """d L_train / d z for the batch-mean loss (identical for the "ce" and "kl" forms): (S, N, K)."""
    n = z.shape[1]
    l1, temp = _split_lam(lam)
    g_ce = (torch.softmax(z, -1) - onehot) / n
    g_d = (torch.softmax(z / temp, -1) - torch.softmax(teacher / temp, -1)) / (temp * n)
    if t2_scaling:
        g_d = g_d * (temp * temp)
    return l1 * g_ce + (1 - l1) * g_d


def param_grad(f: Tensor, gz: Tensor) -> tuple[Tensor, Tensor]:
    """Chain rule through the linear layer: (S, N, K) logit gradient -> (S, K, d), (S, K)."""
    return torch.matmul(gz.transpose(1, 2), f), gz.sum(1)


def val_logit_grad(z: Tensor, onehot: Tensor, t_val: float) -> Tensor:
    """d L_val / d z for L_val = mean CE(z / T_val, y)."""
    n = z.shape[1]
    return (torch.softmax(z / t_val, -1) - onehot) / (t_val * n)


def _tempered(z: Tensor, teacher: Tensor, temp: Tensor):
    c = z / temp
    a = teacher / temp
    log_q = torch.log_softmax(c, -1)
    log_p = torch.log_softmax(a, -1)
    q, p = log_q.exp(), log_p.exp()
    c_dev = c - (q * c).sum(-1, keepdim=True)  # c - E_q c
    a_dev = a - (p * a).sum(-1, keepdim=True)  # a - E_p a
    return log_q, log_p, q, p, c_dev, a_dev


def train_lambda_grad(z: Tensor, y_onehot: Tensor, teacher: Tensor, lam: Tensor, form: str = "ce",
                      t2_scaling: bool = False) -> Tensor:
    """d L_train / d(lambda1, T) at fixed logits ``z`` (S, N, K): (S, 2)."""
    l1, temp = lam[:, 0], lam[:, 1]
    tb = temp.view(-1, 1, 1)
    ce = -(y_onehot * torch.log_softmax(z, -1)).sum(-1).mean(-1)
    log_q, log_p, q, p, c_dev, a_dev = _tempered(z, teacher, tb)
    if form == "ce":
        dist = -(p * log_q).sum(-1).mean(-1)
        ddist = ((p * a_dev * log_q).sum(-1) + (p * c_dev).sum(-1)).mean(-1) / temp
    elif form == "kl":
        dist = (p * (log_p - log_q)).sum(-1).mean(-1)
        ddist = ((p * a_dev * (log_q - log_p)).sum(-1) + (p * c_dev).sum(-1)).mean(-1) / temp
    else:
        raise ValueError(f"unknown loss form {form!r}")
    if t2_scaling:
        ddist = 2 * temp * dist + temp * temp * ddist
        dist = dist * (temp * temp)
    return torch.stack([ce - dist, (1 - l1) * ddist], -1)


def _mixed_logit_grad(z: Tensor, onehot: Tensor, teacher: Tensor, lam: Tensor, t2_scaling: bool):
    """d/dlambda of d L_train / d z: two (S, N, K) tensors (d/dlambda1, d/dT)."""
    n = z.shape[1]
    l1, temp = _split_lam(lam)
    g_ce = (torch.softmax(z, -1) - onehot) / n
    _, _, q, p, c_dev, a_dev = _tempered(z, teacher, temp)
    g_d = (q - p) / (temp * n)
    # dq/dT = -q (c - E_q c) / T,  dp/dT = -p (a - E_p a) / T
    dg_d = (p * a_dev - q * c_dev) / (temp * temp * n) - g_d / temp
    if t2_scaling:
        dg_d = 2 * temp * g_d + temp * temp * dg_d
        g_d = g_d * (temp * temp)
    return g_ce - g_d, (1 - l1) * dg_d


def hypergradient_batched(lp: LinearProblem, w: Tensor, b: Tensor, lam: Tensor, lr: float, t_val: float,
                          method: str = "finite_difference", form: str = "ce", t2_scaling: bool = False,
                          fd_eps_scale: float = 0.01) -> Tensor:
    """Per-seed :func:`kdlib.hypergrad.hypergradient` on the full train and val batches: (S, 2), raw (NaN kept).

    ``method="unrolled"``: the exact one-step gradient of L_val(w - lr grad_w L_train(w, lambda)),
    ``-lr * sum_{n,k} (d^2 L_train / dlambda dz) * (J_w z) v`` with v = grad L_val(w').
    ``method="finite_difference"``: the DARTS central difference of the paper (see kdlib.hypergrad).
    """
    z = logits(lp.f_train, w, b)
    gw, gb = param_grad(lp.f_train, train_logit_grad(z, lp.onehot_train, lp.t_train, lam, t2_scaling))
    w1, b1 = w - lr * gw, b - lr * gb
    vz = val_logit_grad(logits(lp.f_val, w1, b1), lp.onehot_val, t_val)
    vw, vb = param_grad(lp.f_val, vz)
    if method == "unrolled":
        u = logits(lp.f_train, vw, vb)  # (J_w z) v
        d1, dt = _mixed_logit_grad(z, lp.onehot_train, lp.t_train, lam, t2_scaling)
        return -lr * torch.stack([(d1 * u).sum((1, 2)), (dt * u).sum((1, 2))], -1)
    if method == "finite_difference":
        norm = torch.sqrt(vw.square().sum((1, 2)) + vb.square().sum(1))
        eps = fd_eps_scale / norm  # (S,)
        e_w, e_b = eps.view(-1, 1, 1), eps.view(-1, 1)
        g_plus = train_lambda_grad(logits(lp.f_train, w + e_w * vw, b + e_b * vb), lp.onehot_train, lp.t_train,
                                   lam, form, t2_scaling)
        g_minus = train_lambda_grad(logits(lp.f_train, w - e_w * vw, b - e_b * vb), lp.onehot_train,
                                    lp.t_train, lam, form, t2_scaling)
        hess = (g_plus - g_minus) / (2 * eps.view(-1, 1))
        return -lr * hess
    raise ValueError(f"batched hypergradient: method {method!r} not implemented; choose one of {ESTIMATORS}")


# -------------------------------------------------------------------------------------------- the backend
class Linear:
    """S logistic-regression runs of one problem in closed form, seeded by ``settings[s].seed``, from ``values[s]``
    = (lambda1, T) under ``schedule`` ("fixed", "gradient" or "proposed"); a backend of
    :func:`kdlib.train.loop.run_loop`. The loop's batches are the full train set in order (:func:`unsupported`),
    so each step uses the problem's precomputed features. Keeps no ``nn.Module``: :meth:`finish` returns no
    model."""

    def __init__(self, settings: Sequence[Any], problem: Problem | LinearProblem, values: Tensor,
                 schedule: str) -> None:
        st = settings[0]
        reason = unsupported(st, schedule)
        if reason:
            raise ValueError(reason)
        self.lp = problem if isinstance(problem, LinearProblem) else linear_problem(problem)
        self.problem = problem
        self.seeds = [int(s.seed) for s in settings]
        self.lr = float(st.lr)
        self.t_val = st.t_val
        self.estimator, self.form, self.t2_scaling = st.estimator, st.loss_form, st.t2_scaling
        self.after_backward = getattr(st, "placement", "before_backward") == "after_backward"
        device = self.lp.f_train.device
        with torch.inference_mode():
            self.w, self.b = initial_weights(self.lp, self.seeds, device)
            self.schedule = make_schedule(st, values.to(device=device, dtype=torch.float32), schedule)
        self.values = self.schedule.value
        self.iteration = 0
        self.in_epoch = 0

    def set_lr(self, lr: float) -> None:
        self.lr = float(lr)

    def new_epoch(self) -> None:
        self.in_epoch = 0

    @torch.inference_mode()
    def step(self, batches: list[Batch], next_val: Callable[[], Any]) -> None:
        """One SGD step of every run on the full train set at the values the schedule picks.

        ``placement="after_backward"`` (:class:`kdlib.tuner.Tuner`): the hypergradient is the same function of
        (w, lambda) -- the loop's train gradient at the current lambda is the one eq. (3)'s virtual step takes --
        but the real step keeps the values it was taken at, and the new values act from the next iteration."""
        lp, w, b, lr = self.lp, self.w, self.b, self.lr

        def hypergradient(lam_: Tensor) -> Tensor:
            return hypergradient_batched(lp, w, b, lam_, lr, self.t_val, self.estimator, self.form,
                                         self.t2_scaling)

        trained_at = self.schedule.value
        lam = self.schedule.step(self.iteration, self.in_epoch, hypergradient)
        self.values = lam  # as the reference backend's rows: the schedule's value after this iteration
        if self.after_backward:  # the step's gradient was taken at the values before this iteration's update
            lam = trained_at
        z = logits(lp.f_train, w, b)
        gw, gb = param_grad(lp.f_train, train_logit_grad(z, lp.onehot_train, lp.t_train, lam, self.t2_scaling))
        self.w = torch.add(w, gw, alpha=-lr)
        self.b = torch.add(b, gb, alpha=-lr)
        self.iteration += 1
        self.in_epoch += 1

    def rows(self) -> list[dict[str, Any]]:
        lam = self.values.detach().float().cpu().tolist()
        nan = self.schedule.nonfinite.cpu().tolist()
        return [dict(lambda1=v[0], temperature=v[1], hypergrad_evals=int(self.schedule.evals), nan_skipped=int(n),
                     phase=self.schedule.phase) for v, n in zip(lam, nan)]

    def _features(self, split: Split) -> tuple[Tensor, Tensor]:
        if split is self.problem.val:
            return self.lp.f_val, self.lp.y_val
        if split is self.problem.test:
            return self.lp.f_test, self.lp.y_test
        idx = torch.tensor(self.lp.cols, dtype=torch.long, device=split.x.device)
        return split.x.index_select(1, idx).contiguous(), split.y

    @torch.inference_mode()
    def evaluate(self, split: Split, t_val: float) -> list[tuple[float, float]]:
        """Per run: accuracy and mean L_val = CE(z / T_val, y) on ``split``."""
        f, y = self._features(split)
        n = y.shape[0]
        z = logits(f, self.w, self.b)
        correct = (z.argmax(-1) == y).sum(-1)
        loss_sum = F.cross_entropy((z / t_val).transpose(1, 2), y.expand(len(self.seeds), -1),
                                   reduction="none").mean(-1) * n
        return [(float(c) / max(n, 1), float(ls) / max(n, 1)) for c, ls in zip(correct.cpu(), loss_sum.cpu())]

    @torch.inference_mode()
    def finish(self) -> list[RunOutput]:
        self.schedule.check(f"seeds {self.seeds}")
        return [RunOutput() for _ in self.seeds]


def build(settings: Sequence[Any], problem: Problem, values: Tensor, schedule: str) -> Linear:
    """The backend of ``len(settings)`` runs of ``problem`` from ``values`` (S, 2) under ``schedule``."""
    return Linear(settings, problem, values, schedule)


__all__ = ["Linear", "build", "unsupported", "hypergradient_batched", "linear_problem", "initial_weights",
           "LinearProblem", "ESTIMATORS"]
