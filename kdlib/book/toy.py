"""A quadratic bilevel problem where everything in Theorem 1 can be computed exactly.

Inner (train) loss, smooth and strictly convex in w with constant Hessian H::

    L_train(w, lam) = 1/2 w^T H w - w^T (B lam + c),        w_hat(lam) = H^{-1} (B lam + c)

Outer (validation) loss, with no explicit dependence on lam (as in the paper)::

    L_val(w) = 1/2 ||w - w_star||^2

* The bilevel optimum (1)-(2) is a linear least-squares problem: :meth:`QuadraticBilevel.optimum`.
* The greedy iteration (3), lam' = lam - meta_lr * grad_lam L_val(w - lr * grad_w L_train(w, lam)), has the
  exact one-step hypergradient lr * B^T (w' - w_star); :meth:`QuadraticBilevel.greedy` runs it jointly with
  the inner gradient steps. Its fixed point solves B^T (w_hat(lam) - w_star) = 0, while the true optimum solves
  B^T H^{-1} (w_hat(lam) - w_star) = 0: the two coincide when H = I and drift apart as H leaves I
  (:meth:`QuadraticBilevel.greedy_fixed_point`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kdlib.trajectory import extrapolate


@dataclass
class QuadraticBilevel:
    H: np.ndarray  # (d, d) symmetric positive definite
    B: np.ndarray  # (d, 2) full column rank
    c: np.ndarray  # (d,)
    w_star: np.ndarray  # (d,)

    @property
    def dim(self) -> int:
        return int(self.H.shape[0])

    @property
    def hessian_gap(self) -> float:
        """||H - I||_2, how far the Hessian is from the identity."""
        return float(np.linalg.norm(self.H - np.eye(self.dim), 2))

    # ---------------------------------------------------------------- exact quantities
    def inner_solution(self, lam: np.ndarray) -> np.ndarray:
        """w_hat(lam) = argmin_w L_train(w, lam); ``lam`` may be (2,) or (n, 2)."""
        lam = np.asarray(lam, dtype=float)
        rhs = lam @ self.B.T + self.c
        return np.linalg.solve(self.H, rhs.T).T

    def train_loss(self, w: np.ndarray, lam: np.ndarray) -> float:
        return float(0.5 * w @ self.H @ w - w @ (self.B @ lam + self.c))

    def val_loss_w(self, w: np.ndarray) -> np.ndarray:
        return 0.5 * np.sum((np.asarray(w) - self.w_star) ** 2, axis=-1)

    def val_loss(self, lam: np.ndarray) -> np.ndarray:
        """The outer objective L_val(w_hat(lam)) of the bilevel problem; vectorised over rows of ``lam``."""
        return self.val_loss_w(self.inner_solution(lam))

    def optimum(self) -> np.ndarray:
        """The exact bilevel optimum: least squares of H^{-1} B lam ≈ w_star - H^{-1} c."""
        A = np.linalg.solve(self.H, self.B)
        b = self.w_star - np.linalg.solve(self.H, self.c)
        return np.linalg.lstsq(A, b, rcond=None)[0]

    def greedy_fixed_point(self) -> np.ndarray:
        """Where the greedy iteration stops: B^T (w_hat(lam) - w_star) = 0."""
        A = self.B.T @ np.linalg.solve(self.H, self.B)
        b = self.B.T @ (self.w_star - np.linalg.solve(self.H, self.c))
        return np.linalg.solve(A, b)

    def grid_optimum(self, lo: tuple[float, float], hi: tuple[float, float], n: int = 401) -> np.ndarray:
        """Brute force: the best point of an n x n grid over the box [lo, hi] (independent of the algebra)."""
        g1, g2 = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
        L1, L2 = np.meshgrid(g1, g2, indexing="ij")
        lam = np.stack([L1.ravel(), L2.ravel()], axis=1)
        return lam[int(np.argmin(self.val_loss(lam)))]

    # ---------------------------------------------------------------- the greedy method (eq. 3)
    def hypergradient(self, w: np.ndarray, lam: np.ndarray, lr: float) -> np.ndarray:
        """Exact grad_lam L_val(w - lr * grad_w L_train(w, lam)) = lr * B^T (w' - w_star)."""
        w_next = w - lr * (self.H @ w - self.B @ lam - self.c)
        return lr * self.B.T @ (w_next - self.w_star)

    def greedy(self, lam0: np.ndarray, steps: int, lr: float = 0.5, meta_lr: float = 1.0,
               w0: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Run eq. (3) jointly with the inner gradient descent. Returns ``lam`` (steps+1, 2), ``w`` (steps+1, d),
        ``val_loss`` (steps+1,) at the current w, and ``hypergrad`` (steps, 2)."""
        lam = np.asarray(lam0, dtype=float).copy()
        w = np.zeros(self.dim) if w0 is None else np.asarray(w0, dtype=float).copy()
        lams, ws, grads = [lam.copy()], [w.copy()], []
        for _ in range(steps):
            g = self.hypergradient(w, lam, lr)
            lam = lam - meta_lr * g
            w = w - lr * (self.H @ w - self.B @ lam - self.c)
            lams.append(lam.copy())
            ws.append(w.copy())
            grads.append(g)
        W = np.array(ws)
        return dict(lam=np.array(lams), w=W, val_loss=self.val_loss_w(W), hypergrad=np.array(grads))


def make_problem(dim: int = 8, hessian_spread: float = 0.0, seed: int = 0,
                 target_scale: float = 1.0) -> QuadraticBilevel:
    """A random instance with H = Q diag(1 - s .. 1 + s) Q^T, so ||H - I||_2 = s = ``hessian_spread``
    (0 <= s < 1 keeps H positive definite). ``target_scale`` moves w_star away, which makes the metaparameter
    gradient nearly constant over a long stretch of the greedy trajectory."""
    if not 0.0 <= hessian_spread < 1.0:
        raise ValueError(f"hessian_spread={hessian_spread}: choose 0 <= s < 1 so that H stays positive definite")
    if dim < 2:
        raise ValueError("dim must be >= 2 (two metaparameters)")
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    eig = np.linspace(1.0 - hessian_spread, 1.0 + hessian_spread, dim)
    H = (Q * eig) @ Q.T
    H = 0.5 * (H + H.T)
    B = rng.normal(size=(dim, 2)) / np.sqrt(dim)
    c = rng.normal(size=dim) * 0.1
    w_star = rng.normal(size=dim) * target_scale
    return QuadraticBilevel(H=H, B=B, c=c, w_star=w_star)


def extrapolation_errors(history: np.ndarray, start: int, e1: int, e2_values: list[int]) -> list[float]:
    """Fit a line (``kdlib.trajectory``) to ``history[start:start+e1]`` and report, for each e2, the largest
    distance between the extrapolated and the actual points ``history[start+e1 : start+e1+e2]``."""
    hist = torch.as_tensor(np.asarray(history[start:start + e1]), dtype=torch.float64)
    out = []
    for e2 in e2_values:
        actual = np.asarray(history[start + e1:start + e1 + e2])
        if len(actual) < e2:
            raise ValueError(f"history too short for e2={e2}: need {start + e1 + e2} points, have {len(history)}")
        pred = extrapolate(hist, e2).detach().cpu().numpy()
        out.append(float(np.max(np.linalg.norm(pred - actual, axis=1))))
    return out
