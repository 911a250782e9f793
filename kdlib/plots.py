"""Figures of the book (seaborn / matplotlib). Plotting only: every number comes from kdlib or the runner.

* :func:`accuracy_curves` - Fig. 4: test accuracy vs step or epoch per method, mean ± std over seeds, with the
  authors' logged curves dashed on top.
* :func:`metaparam_trajectories` - lambda1 and T vs step per method, with lines from
  :func:`kdlib.trajectory.fit_line`.
* :func:`fig5_scatter` - Fig. 5: the three parts of the synthetic data.
* :func:`sweep_curves` / :func:`sweep_final` - Fig. 6: the e1 / e2 sweeps.
* :func:`loss_surface`, :func:`toy_gap`, :func:`extrapolation_error` - the pages on the problem and Theorem 1.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

METHODS = ("no_distillation", "naive", "random", "gradient", "hyperopt", "proposed")
LABELS = {"no_distillation": "without distillation", "naive": "naive", "random": "random",
          "gradient": "gradient-based", "hyperopt": "hyperopt", "proposed": "proposed"}
PALETTE = dict(zip(METHODS, sns.color_palette("colorblind", len(METHODS))))


def _ax(ax=None, figsize=(6.4, 4.0)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _present(methods: Sequence[str], values: Sequence[str]) -> list[str]:
    vals = set(values)
    return [m for m in methods if m in vals]


def accuracy_curves(results: pd.DataFrame, x: str = "step", methods: Sequence[str] = METHODS,
                    authors: pd.DataFrame | None = None, authors_x: str = "step", ax=None,
                    title: str | None = None, xlabel: str | None = None):
    """Mean ± std (over seeds) of ``test_accuracy`` vs ``x`` per method; ``authors`` (a frame from
    :func:`kdlib.authors_logs.curves` with columns method, run, step, accuracy) is drawn dashed, same colour."""
    ax = _ax(ax)
    df = results[results.method.isin(methods)].dropna(subset=["test_accuracy"])
    order = _present(methods, df.method.unique())
    for m in order:
        d = df[df.method == m].groupby(x)["test_accuracy"].agg(["mean", "std"]).reset_index()
        d["std"] = d["std"].fillna(0.0)
        ax.plot(d[x], d["mean"], color=PALETTE.get(m), label=LABELS.get(m, m), lw=1.8)
        ax.fill_between(d[x], d["mean"] - d["std"], d["mean"] + d["std"], color=PALETTE.get(m), alpha=0.15)
    if authors is not None and len(authors):
        for m in _present(methods, authors.method.unique()):
            a = authors[authors.method == m].groupby(authors_x)["accuracy"].mean().reset_index()
            ax.plot(a[authors_x], a["accuracy"], ls="--", lw=1.2, color=PALETTE.get(m), alpha=0.9,
                    label=f"{LABELS.get(m, m)} (authors' logs)")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel("test accuracy")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ax.grid(alpha=0.3)
    return ax


def metaparam_trajectories(results: pd.DataFrame, methods: Sequence[str] = ("gradient", "proposed"),
                           x: str = "step", fit_fraction: float = 0.5, authors: pd.DataFrame | None = None,
                           authors_x: str = "step", axes=None, title: str | None = None):
    """lambda1 (our convention: weight of the classification term) and T vs ``x``: each seed thin, the seed
    mean thick, and a dashed line fitted by :func:`kdlib.trajectory.fit_line` to the first ``fit_fraction``
    of the mean trajectory and extended over the rest (the linearity claimed by Theorem 1). ``authors``
    trajectories (already converted to our convention) are drawn dotted."""
    import torch

    from kdlib.trajectory import fit_line

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    df = results[results.method.isin(methods)]
    for j, (col, name) in enumerate((("lambda1", r"$\lambda_1$"), ("temperature", "$T$"))):
        ax = axes[j]
        for m in _present(methods, df.method.unique()):
            d = df[df.method == m]
            for _, s in d.groupby("seed"):
                ax.plot(s[x], s[col], color=PALETTE.get(m), alpha=0.2, lw=0.8)
            mean = d.groupby(x)[col].mean().reset_index()
            ax.plot(mean[x], mean[col], color=PALETTE.get(m), lw=2, label=LABELS.get(m, m))
            n_fit = max(2, int(round(len(mean) * fit_fraction)))
            if len(mean) >= 3 and np.isfinite(mean[col].to_numpy()).all():
                hist = torch.tensor(mean[col].to_numpy()[:n_fit, None], dtype=torch.float64)
                slope, intercept = fit_line(hist)
                idx = np.arange(len(mean))
                line = float(intercept[0]) + float(slope[0]) * idx
                ax.plot(mean[x], line, color=PALETTE.get(m), ls="--", lw=1.2,
                        label=f"{LABELS.get(m, m)}: line fitted on first {n_fit} points")
        if authors is not None and len(authors):
            for m in _present(methods, authors.method.unique()):
                a = authors[authors.method == m].groupby(authors_x)[col].mean().reset_index()
                ax.plot(a[authors_x], a[col], color=PALETTE.get(m), ls=":", lw=1.5,
                        label=f"{LABELS.get(m, m)} (authors' logs)")
        ax.set_xlabel(x)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        axes[0].figure.suptitle(title)
    axes[0].figure.tight_layout()
    return axes


def fig5_scatter(bundle, axes=None):
    """Fig. 5: x1-x2 scatter coloured by class for the teacher's training part, the student's training part
    and the test part of the synthetic bundle."""
    parts = [("teacher train", bundle.teacher_train), ("student train", bundle.train), ("test", bundle.test)]
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharex=True, sharey=True)
    for ax, (name, split) in zip(axes, parts):
        x = split.x.detach().cpu().numpy()
        y = split.y.detach().cpu().numpy()
        sns.scatterplot(x=x[:, 0], y=x[:, 1], hue=y, palette="coolwarm", ax=ax, s=18, legend=(name == "test"))
        ax.set_title(f"{name} ({len(y)} points)")
        ax.set_xlabel("$x_1$")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
    axes[0].set_ylabel("$x_2$")
    axes[0].figure.tight_layout()
    return axes


def sweep_curves(results: pd.DataFrame, by: str = "setting", x: str = "step", authors: pd.DataFrame | None = None,
                 authors_by: str = "setting", ax=None, title: str | None = None):
    """Fig. 6: accuracy vs ``x`` (mean over seeds) for each value of ``by`` (e.g. "e1=e2=10"); authors dashed."""
    ax = _ax(ax)
    levels = list(dict.fromkeys(results[by]))
    pal = dict(zip(levels, sns.color_palette("viridis", max(1, len(levels)))))
    for lev in levels:
        d = results[results[by] == lev].groupby(x)["test_accuracy"].agg(["mean", "std"]).reset_index()
        ax.plot(d[x], d["mean"], color=pal[lev], lw=1.8, label=str(lev))
        ax.fill_between(d[x], d["mean"] - d["std"].fillna(0), d["mean"] + d["std"].fillna(0), color=pal[lev],
                        alpha=0.12)
    if authors is not None and len(authors):
        apal = dict(zip(list(dict.fromkeys(authors[authors_by])),
                        sns.color_palette("rocket", max(1, authors[authors_by].nunique()))))
        for lev, a in authors.groupby(authors_by, sort=False):
            a = a.groupby("step")["accuracy"].mean().reset_index()
            ax.plot(a["step"], a["accuracy"], ls="--", lw=1.1, color=apal[lev], label=f"{lev} (authors)")
    ax.set_xlabel(x)
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title)
    return ax


def sweep_final(final: pd.DataFrame, by: str = "setting", value: str = "test_accuracy", ax=None,
                title: str | None = None):
    """Final accuracy per sweep setting: one point per seed plus mean ± std."""
    ax = _ax(ax, figsize=(6.0, 3.6))
    sns.pointplot(data=final, x=by, y=value, errorbar="sd", ax=ax, color="black", linestyles="none")
    sns.stripplot(data=final, x=by, y=value, ax=ax, alpha=0.5, size=4)
    ax.set_ylabel("final test accuracy")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return ax


def loss_surface(grid: pd.DataFrame, value: str = "val_loss", ax=None, title: str | None = None,
                 mark: tuple[float, float] | None = None):
    """Heat map of ``value`` over a (lambda1, temperature) grid (columns lambda1, temperature, value)."""
    ax = _ax(ax, figsize=(6.0, 4.4))
    piv = grid.pivot_table(index="temperature", columns="lambda1", values=value).sort_index(ascending=False)
    sns.heatmap(piv, ax=ax, cmap="viridis", cbar_kws={"label": value},
                xticklabels=[f"{v:.2f}" for v in piv.columns], yticklabels=[f"{v:.2g}" for v in piv.index])
    ax.set_xlabel(r"$\lambda_1$ (weight of the classification term)")
    ax.set_ylabel("$T$")
    if mark is not None:
        cols, rows = list(piv.columns), list(piv.index)
        ax.plot(cols.index(mark[0]) + 0.5, rows.index(mark[1]) + 0.5, marker="*", color="red", ms=14)
    if title:
        ax.set_title(title)
    return ax


def toy_gap(df: pd.DataFrame, x: str = "hessian_gap", ys: Sequence[str] = ("lambda_distance", "excess_val_loss"),
            axes=None):
    """Theorem 1 demo: distance of the greedy limit to the bilevel optimum (and the excess validation loss) as
    the Hessian moves away from the identity."""
    if axes is None:
        _, axes = plt.subplots(1, len(ys), figsize=(5 * len(ys), 3.4))
    axes = np.atleast_1d(axes)
    for ax, y in zip(axes, ys):
        ax.plot(df[x], df[y], marker="o")
        ax.set_xlabel(r"$\|H - I\|_2$")
        ax.set_ylabel(y.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].figure.tight_layout()
    return axes


def extrapolation_error(df: pd.DataFrame, x: str = "e2", y: str = "max_error", hue: str | None = "case", ax=None,
                        title: str | None = None):
    """Error of the linear extrapolation against the true greedy trajectory as e2 grows (log-log)."""
    ax = _ax(ax, figsize=(6.0, 3.8))
    sns.lineplot(data=df, x=x, y=y, hue=hue, marker="o", ax=ax)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel(r"max $\|\lambda_{\mathrm{line}} - \lambda_{\mathrm{greedy}}\|$ over the $e_2$ window")
    ax.grid(alpha=0.3, which="both")
    if title:
        ax.set_title(title)
    return ax
