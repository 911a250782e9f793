"""Seed-batched engine for the synthetic column (Sec. 4.1): every seed of a method in one set of tensors.

The synthetic problem is tiny (a 3-feature logistic regression on 15 points, 2,000 full-batch iterations), so
the generic loop (:func:`kdlib.train.train_student` with a :mod:`kdlib.methods` controller) spends its time on
per-iteration Python and dispatch overhead, not arithmetic. This engine runs all seeds of one method at once:

* stacked student parameters ``W`` (S, K, d) and ``b`` (S, K), metaparameters (S, 2), everything a tensor;
* closed-form logistic-regression derivatives (no autograd, no per-step model copies, no ``.item()``);
* the hypergradient estimators ``finite_difference`` (the paper's, DARTS-style) and ``unrolled`` (one step,
  exact) in closed form, agreeing with :func:`kdlib.hypergrad.hypergradient` seed by seed
  (``tests/test_batched.py``);
* the metaparameters move by the same :class:`kdlib.schedules.Schedule` as the Tuner of the generic loop
  (fixed, gradient, proposed; clipping, NaN skip by ``where``, metaparameter SGD, projection, Algorithm 1's
  line), here on (S, 2) stacked values; hyperopt is the same TPE outer loop
  (:func:`kdlib.methods.hyperopt_search`), one ``fmin`` per seed in lock-step threads whose candidates are
  trained as one batch;
* logs at ``step % log_every == 0`` and the last step with exactly the fields of ``train.py``'s history rows,
  kept on the device until the run ends (one host transfer per run).

Initial student weights are those of the generic path (``torch.manual_seed(seed)`` then the problem's
``make_student()``), initial metaparameters come from the same ``Method.initial(cfg)``.

Entry points: :func:`supports` and :func:`run_batched` (same records as :func:`kdlib.experiments.runner.run_one`).
"""
from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlib.methods import METHODS, get_method, hyperopt_search
from kdlib.metaparams import project
from kdlib.schedules import Schedule
from kdlib.train import Settings, single_thread  # noqa: F401  (single_thread re-exported: benchmarks use it)

ExperimentConfig = Any  # duck-typed: any config with the fields of kdlib.train.Settings, a seed, method, dataset

ESTIMATORS = ("finite_difference", "unrolled")
FIXED_METHODS = ("no_distillation", "naive", "random")
TUNED_METHODS = ("gradient", "proposed")
BATCHED_METHODS = FIXED_METHODS + TUNED_METHODS + ("hyperopt",)
# config fields that may differ between the configs of one batch
_PER_RUN_FIELDS = ("seed",)
_SYN_TRAIN_SIZE = 15  # kdlib.data.SYN_STUDENT


# ------------------------------------------------------------------------------------------------ support
def supports(cfg: ExperimentConfig) -> bool:
    """True when ``cfg`` can run on the batched engine (synthetic, full batch, a known method/estimator)."""
    if cfg.dataset != "synthetic" or cfg.method not in BATCHED_METHODS:
        return False
    if METHODS.get(cfg.method) is None or METHODS[cfg.method].__module__ != "kdlib.methods":
        return False  # a user re-registered the name
    if cfg.shuffle or (cfg.batch_size is not None and cfg.batch_size < _SYN_TRAIN_SIZE):
        return False
    st = Settings.of(cfg)
    if st.optimizer != "sgd" or st.momentum or st.nesterov or st.weight_decay or st.lr_step_epochs:
        return False  # the closed form is plain SGD at a constant lr
    if cfg.method in TUNED_METHODS:
        if cfg.estimator not in ESTIMATORS:
            return False
        if cfg.estimator == "unrolled" and cfg.unroll_steps != 1:
            return False
    return True


def _check_batch(configs: Sequence[ExperimentConfig]) -> None:
    if not configs:
        raise ValueError("run_batched needs at least one config")
    ref = {k: v for k, v in configs[0].to_dict().items() if k not in _PER_RUN_FIELDS}
    for cfg in configs[1:]:
        other = {k: v for k, v in cfg.to_dict().items() if k not in _PER_RUN_FIELDS}
        if other != ref:
            diff = sorted(k for k in ref if ref[k] != other.get(k))
            raise AssertionError(f"run_batched: configs must share everything but the seed; differing: {diff}")
    seeds = [c.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise AssertionError(f"run_batched: duplicate seeds {seeds}")
    for cfg in configs:
        if not supports(cfg):
            raise ValueError(f"{cfg.key()}: not supported by the batched engine (see kdlib.batched.supports)")


# ---------------------------------------------------------------------------------------- the linear student
@dataclass
class LinearProblem:
    """The synthetic problem as the engine sees it: student features of each part, labels, teacher logits."""

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
        raise NotImplementedError("the batched engine needs a student that is one biased Linear on columns of x")
    cols = getattr(module, "cols", None)
    if cols is None:
        raise NotImplementedError("the batched engine needs a LogReg-like student with a `cols` attribute")
    return linears[0], [int(c) for c in cols]


def linear_problem(problem) -> LinearProblem:
    """Turn a :class:`kdlib.train.Problem` with a LogReg student into a :class:`LinearProblem`.

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
    ``make_student()``, exactly as :func:`kdlib.train.train_student` does."""
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


# ------------------------------------------------------------------------------------------- the training
@dataclass
class BatchRun:
    """Result of one batched training: one history per seed, plus the best validation accuracy per seed."""

    histories: list[list[dict[str, Any]]]
    best_val_accuracy: list[float]
    wall_time: float


def train_batched(cfg: ExperimentConfig, lp: LinearProblem, seeds: Sequence[int], lam0: Tensor, mode: str,
                  with_test: bool = True) -> BatchRun:
    """Train one student per seed (stacked) under a controller ``mode`` in {"fixed", "gradient", "proposed"}.

    ``lam0`` (S, 2): the controllers' initial values (already projected, as the controllers hold them).
    ``with_test=False`` skips the test evaluation (hyperopt scoring runs; test_accuracy is then NaN).
    """
    device = lp.f_train.device
    total = int(cfg.iterations)
    lr = float(cfg.lr)
    n_train = lp.f_train.shape[0]
    bs = cfg.batch_size if cfg.batch_size is not None else n_train
    batches_per_epoch = max(1, -(-n_train // bs))  # 1: full batch (supports() guarantees it)
    n_test, n_val = lp.y_test.shape[0], lp.y_val.shape[0]
    with torch.inference_mode():
        w, b = initial_weights(lp, seeds, device)
        schedule = Schedule(lam0.to(device=device, dtype=torch.float32), mode, cfg.e1, cfg.e2, cfg.meta_lr,
                            cfg.meta_clip, 1, cfg.proposed_reset, cfg.clamp_extrapolation,
                            cfg.temperature_param)
        logs: list[tuple] = []
        t0 = time.perf_counter()

        def hypergradient(lam_: Tensor) -> Tensor:
            return hypergradient_batched(lp, w, b, lam_, lr, cfg.t_val, cfg.estimator, cfg.loss_form, cfg.t2_scaling)

        for step in range(total):
            lam = schedule.step(step, step % batches_per_epoch, hypergradient)
            phase, evals, nan = schedule.phase, schedule.evals, schedule.nonfinite
            # one SGD step on L_train at lam
            z = logits(lp.f_train, w, b)
            gw, gb = param_grad(lp.f_train, train_logit_grad(z, lp.onehot_train, lp.t_train, lam, cfg.t2_scaling))
            w = torch.add(w, gw, alpha=-lr)
            b = torch.add(b, gb, alpha=-lr)
            if step % cfg.log_every == 0 or step == total - 1:
                zv = logits(lp.f_val, w, b)
                val_correct = (zv.argmax(-1) == lp.y_val).sum(-1)
                val_loss = F.cross_entropy((zv / cfg.t_val).transpose(1, 2), lp.y_val.expand(len(seeds), -1),
                                           reduction="none").mean(-1) * n_val
                if not with_test:
                    test_correct = torch.full_like(val_correct, -1)
                elif lp.val_is_test:
                    test_correct = val_correct
                else:
                    test_correct = (logits(lp.f_test, w, b).argmax(-1) == lp.y_test).sum(-1)
                logs.append((step, step // batches_per_epoch, phase, evals, time.perf_counter() - t0,
                             torch.stack([test_correct.double(), val_correct.double(), val_loss.double(),
                                          lam[:, 0].double(), lam[:, 1].double(), nan.double()], -1)))
        wall = time.perf_counter() - t0
        schedule.check(f"seeds {list(seeds)}")
        table = torch.stack([row[-1] for row in logs]).cpu().numpy() if logs else np.zeros((0, len(seeds), 6))
    histories: list[list[dict[str, Any]]] = [[] for _ in seeds]
    best: list[float] = [float("nan")] * len(seeds)
    lam32 = torch.from_numpy(table[..., 3:5]).float()  # the controllers' float32 values
    for j, (step, epoch, phase, ev, wt, _) in enumerate(logs):
        for i in range(len(seeds)):
            tc, vc, vl, _, _, nn_ = table[j, i]
            val_acc = float(np.float32(vc)) / max(n_val, 1)
            best[i] = val_acc if best[i] != best[i] else max(val_acc, best[i])
            histories[i].append(dict(
                step=step, epoch=epoch,
                test_accuracy=float(tc) / max(n_test, 1) if tc >= 0 else float("nan"),
                val_accuracy=val_acc, val_loss=float(np.float32(vl)) / max(n_val, 1),
                lambda1=float(lam32[j, i, 0]), temperature=float(lam32[j, i, 1]),
                hypergrad_evals=int(ev), nan_skipped=int(nn_), wall_time=wt, phase=phase, lr=lr))
    return BatchRun(histories, best, wall)


# ------------------------------------------------------------------------------------------------ hyperopt
class _LockStep:
    """Lock-step rendezvous of per-seed ``fmin`` threads: each objective call posts its candidate and waits; the
    main thread trains all posted candidates as one batch and hands back the scores."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.cv = threading.Condition()
        self.requests: dict[int, Tensor] = {}
        self.replies: dict[int, Any] = {}
        self.done: set[int] = set()
        self.errors: list[BaseException] = []

    def ask(self, i: int, lam: Tensor) -> float:
        with self.cv:
            self.requests[i] = lam
            self.cv.notify_all()
            self.cv.wait_for(lambda: i in self.replies)
            reply = self.replies.pop(i)
        if isinstance(reply, BaseException):
            raise RuntimeError("batched hyperopt aborted") from reply
        return reply

    def finish(self, i: int, error: BaseException | None = None) -> None:
        with self.cv:
            self.done.add(i)
            if error is not None:
                self.errors.append(error)
            self.cv.notify_all()

    def serve(self, train: Callable[[dict[int, Tensor]], dict[int, float]]) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: len(self.requests) + len(self.done) >= self.n)
                if not self.requests:
                    return
                batch = dict(self.requests)
                self.requests.clear()
            try:
                scores: dict[int, Any] = train(batch)
            except BaseException as exc:  # hand the error to every waiting thread, then re-raise
                with self.cv:
                    self.replies.update({i: exc for i in batch})
                    self.cv.notify_all()
                raise
            with self.cv:
                self.replies.update(scores)
                self.cv.notify_all()


def _hyperopt_batched(configs: Sequence[ExperimentConfig], lp: LinearProblem) -> tuple[BatchRun, list[dict], bool]:
    """Hyperopt's outer loop (:func:`kdlib.methods.hyperopt_search`) per seed, in lock-step threads; as in
    :class:`kdlib.methods.Hyperopt`, each seed's final run is its best trial's own run (no retraining)."""
    t0 = time.perf_counter()
    seeds = [c.seed for c in configs]
    trial_runs: list[list[tuple[Tensor, list[dict[str, Any]], float]]] = [[] for _ in configs]
    cfg = configs[0]
    sync = _LockStep(len(configs))
    results: list[tuple[Tensor, list[dict]] | None] = [None] * len(configs)

    def worker(i: int) -> None:
        try:
            results[i] = hyperopt_search(configs[i].hyperopt_evals, configs[i].seed,
                                         lambda lam: sync.ask(i, lam))
            sync.finish(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            sync.finish(i, exc)

    def train(batch: dict[int, Tensor]) -> dict[int, float]:
        idx = sorted(batch)
        lam0 = project(torch.stack([batch[i] for i in idx]))  # a fixed Tuner projects
        res = train_batched(cfg, lp, [seeds[i] for i in idx], lam0, "fixed")
        for k, i in enumerate(idx):
            trial_runs[i].append((batch[i], res.histories[k], res.best_val_accuracy[k]))
        return {i: res.best_val_accuracy[k] for k, i in enumerate(idx)}

    threads = [threading.Thread(target=worker, args=(i,), daemon=True, name=f"kdlib-hyperopt-{i}")
               for i in range(len(configs))]
    for t in threads:
        t.start()
    try:
        sync.serve(train)
    finally:
        for t in threads:
            t.join()
    if sync.errors:
        raise sync.errors[0]
    picked = [next(((h, b) for lam_i, h, b in trial_runs[i] if torch.equal(lam_i, results[i][0])), None)
              for i in range(len(configs))]
    if any(p is None for p in picked):  # no trial matches its best point bit for bit: train the final runs
        lam = torch.stack([results[i][0] for i in range(len(configs))])
        return train_batched(cfg, lp, seeds, project(lam), "fixed"), [{"trials": results[i][1]} for i in
                                                                       range(len(configs))], True
    final = BatchRun([p[0] for p in picked], [p[1] for p in picked], time.perf_counter() - t0)
    return final, [{"trials": results[i][1]} for i in range(len(configs))], False


# ----------------------------------------------------------------------------------------------- the runner
def run_method_batched(configs: Sequence[ExperimentConfig], problem) -> tuple[BatchRun, int, list[dict]]:
    """Run one method for all ``configs`` (same config but the seed) on ``problem`` (a kdlib.train.Problem).

    Returns the batched run, the number of full trainings per seed and the per-seed ``extra`` dicts.
    """
    _check_batch(configs)
    device = problem.f_train.device if isinstance(problem, LinearProblem) else problem.train.x.device
    with single_thread(device):
        return _run_method(configs, problem)


def _run_method(configs: Sequence[ExperimentConfig], problem) -> tuple[BatchRun, int, list[dict]]:
    cfg = configs[0]
    lp = problem if isinstance(problem, LinearProblem) else linear_problem(problem)
    seeds = [c.seed for c in configs]
    if cfg.method == "hyperopt":
        run, extras, retrained = _hyperopt_batched(configs, lp)
        return run, cfg.hyperopt_evals + int(retrained), extras
    method = get_method(cfg.method)
    lam0 = torch.stack([method.initial(c).detach().float().cpu() for c in configs])
    mode = "fixed" if cfg.method in FIXED_METHODS else cfg.method
    return train_batched(cfg, lp, seeds, lam0, mode), 1, [{} for _ in configs]


def run_batched(configs: list[ExperimentConfig], problem_factory: Callable,
                progress: bool = False) -> list[dict[str, Any]]:
    """Run ``configs`` (identical but for the seed) as one batch; one :func:`kdlib.experiments.runner.run_one`-style record
    (``{"config", "history", "summary"}``) per config, in the order given.

    ``problem_factory(cfg)`` returns a :class:`kdlib.train.Problem` or ``(problem, bundle, teacher)``
    (the runner passes :func:`kdlib.experiments.problem.problem_for`). ``progress`` is accepted for signature
    compatibility (the batched run is too short to need a bar).
    """
    _check_batch(configs)
    t0 = time.perf_counter()
    made = problem_factory(configs[0])
    problem, bundle, teacher = made if isinstance(made, tuple) else (made, None, None)
    run, full_trainings, extras = run_method_batched(configs, problem)
    wall = time.perf_counter() - t0
    records = []
    for i, cfg in enumerate(configs):
        history = run.histories[i]
        for row in history:
            row["full_trainings"] = full_trainings
        last = history[-1]
        summary = dict(final_accuracy=last["test_accuracy"], wall_time=wall / len(configs),
                       hypergrad_evals=last["hypergrad_evals"], full_trainings=full_trainings,
                       nan_skipped=last["nan_skipped"],
                       data_source=getattr(bundle, "source", None),
                       teacher=None if teacher is None else dict(
                           name=teacher.name, source=teacher.source, test_accuracy=teacher.test_accuracy,
                           train_agreement=teacher.train_agreement),
                       extra=extras[i], engine="batched", batch_size_seeds=len(configs), batch_wall_time=wall)
        if summary["nan_skipped"]:
            warnings.warn(f"{cfg.key()}: {summary['nan_skipped']} non-finite hypergradient(s) were skipped")
        records.append(dict(config=cfg.to_dict(), history=history, summary=summary))
    return records


__all__ = ["supports", "run_batched", "run_method_batched", "train_batched", "hypergradient_batched",
           "linear_problem", "initial_weights", "LinearProblem", "BatchRun", "ESTIMATORS"]
