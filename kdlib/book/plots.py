"""Figures of the book (seaborn / matplotlib). Plotting only: every number comes from kdlib or the runner.

* :func:`accuracy_curves` - Fig. 4: test accuracy vs step or epoch per method, mean ± std over seeds, with the
  authors' logged curves dashed on their own x axis (top) when their length differs from ours.
* :func:`metaparam_trajectories` - lambda1 and T vs step per method, with lines from
  :func:`kdlib.trajectory.fit_line`.
* :func:`fig5_scatter` - Fig. 5: the three parts of the synthetic data.
* :func:`sweep_curves` / :func:`sweep_final` - Fig. 6: the e1 / e2 sweeps.
* :func:`loss_surface`, :func:`toy_gap`, :func:`extrapolation_error` - the pages on the problem and Theorem 1.
* :func:`table2_points` - Table 2 at a glance: every run of ours and of the authors as a dot, with the means.
* :func:`final_vs_initial_temperature`, :func:`run_trajectories` - the archived paper-protocol runs against the
  authors' logs, run by run.
* :func:`accuracy_vs_wall_time` - final accuracy against wall time, one point per run (the page against 2023-24
  methods).

Every legend and label uses display names (:mod:`kdlib.analysis.labels`), never an internal key.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from kdlib.analysis.labels import METHOD_LABELS as LABELS
from kdlib.analysis.labels import METHODS
from kdlib.names import BEYOND_METHOD_NAMES
from kdlib.trajectory import fit_line

PALETTE = dict(zip(METHODS, sns.color_palette("colorblind", len(METHODS))))
# the methods beyond the paper take the palette's next colours (the six keep theirs)
PALETTE.update(zip(BEYOND_METHOD_NAMES, sns.color_palette("colorblind", 10)[len(METHODS):]))
VALUE_LABELS = {"val_loss": r"validation loss $\mathcal{L}_{\mathrm{val}}$", "test_accuracy": "test accuracy",
                "val_accuracy": "validation accuracy"}
# the authors' axis gets its own scale when their run is this many times longer (or shorter) than ours
OWN_AXIS_RATIO = 1.5


def _ax(ax=None, figsize=(6.4, 4.0)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _present(methods: Sequence[str], values: Sequence[str]) -> list[str]:
    vals = set(values)
    return [m for m in methods if m in vals]


def _authors_axis(ax, ours_x: np.ndarray, theirs_x: np.ndarray, label: str):
    """The axis to draw the authors' curves on: ``ax`` itself when both runs span about the same x range, else
    a twin x axis on top with its own scale (so that our short runs do not occupy a few percent of an axis
    scaled to their 50-100 epochs)."""
    ours_span = float(np.nanmax(ours_x)) if len(ours_x) else 0.0
    theirs_span = float(np.nanmax(theirs_x)) if len(theirs_x) else 0.0
    if ours_span > 0 and theirs_span > 0 and max(ours_span, theirs_span) / min(ours_span, theirs_span) < OWN_AXIS_RATIO:
        return ax
    top = ax.twiny()
    top.set_xlabel(label, color="dimgray")
    top.tick_params(axis="x", colors="dimgray")
    return top


def _legend(axes_list, ax, **kw) -> None:
    handles, labels = [], []
    for a in dict.fromkeys(axes_list):
        h, lab = a.get_legend_handles_labels()
        handles += h
        labels += lab
    if handles:
        ax.legend(handles, labels, **kw)


def _overlay_authors(ax, ours_x: pd.Series, authors: pd.DataFrame | None, methods: Sequence[str],
                     authors_x: str, col: str, authors_xlabel: str, **style) -> list:
    """Draw the authors' per-method mean of ``col`` (on their own top x axis when their length differs from
    ours, see :func:`_authors_axis`); return the extra axes used (none without authors' runs)."""
    if authors is None or not len(authors):
        return []
    a_all = authors[authors.method.isin(methods)]
    top = _authors_axis(ax, ours_x.to_numpy(dtype=float), a_all[authors_x].to_numpy(dtype=float), authors_xlabel)
    for m in _present(methods, a_all.method.unique()):
        a = a_all[a_all.method == m].groupby(authors_x)[col].mean().reset_index()
        top.plot(a[authors_x], a[col], color=PALETTE.get(m), label=f"{LABELS.get(m, m)} (authors' logs)", **style)
    return [top]


def accuracy_curves(results: pd.DataFrame, x: str = "step", methods: Sequence[str] = METHODS,
                    authors: pd.DataFrame | None = None, authors_x: str = "step", ax=None,
                    title: str | None = None, xlabel: str | None = None,
                    authors_xlabel: str = "epoch of the authors' runs (dashed)"):
    """Mean ± std (over seeds) of ``test_accuracy`` vs ``x`` per method; ``authors`` (a frame from
    :func:`kdlib.analysis.authors_logs.curves` with columns method, run, step, accuracy) is drawn dashed, same
    colour, on its own top x axis when its length differs from ours (:func:`_authors_axis`)."""
    ax = _ax(ax)
    xlabel = xlabel or x
    df = results[results.method.isin(methods)].dropna(subset=["test_accuracy"])
    order = _present(methods, df.method.unique())
    for m in order:
        d = df[df.method == m].groupby(x)["test_accuracy"].agg(["mean", "std"]).reset_index()
        d["std"] = d["std"].fillna(0.0)
        ax.plot(d[x], d["mean"], color=PALETTE.get(m), label=LABELS.get(m, m), lw=1.8)
        ax.fill_between(d[x], d["mean"] - d["std"], d["mean"] + d["std"], color=PALETTE.get(m), alpha=0.15)
    axes_used = [ax] + _overlay_authors(ax, df[x], authors, methods, authors_x, "accuracy", authors_xlabel,
                                        ls="--", lw=1.2, alpha=0.9)
    ax.set_xlabel(xlabel if len(axes_used) == 1 or axes_used[-1] is ax else f"{xlabel} of our runs (solid)")
    ax.set_ylabel("test accuracy")
    if title:
        ax.set_title(title, pad=28 if axes_used[-1] is not ax else 6)
    _legend(axes_used, ax, fontsize=7, ncol=2, loc="lower right")
    ax.grid(alpha=0.3)
    return ax


def metaparam_trajectories(results: pd.DataFrame, methods: Sequence[str] = ("gradient", "proposed"),
                           x: str = "step", fit_fraction: float = 0.5, authors: pd.DataFrame | None = None,
                           authors_x: str = "step", axes=None, title: str | None = None,
                           xlabel: str | None = None, authors_xlabel: str = "epoch of the authors' runs (dotted)"):
    """lambda1 (our convention: weight of the classification term) and T vs ``x``: each seed thin, the seed
    mean thick, and a dashed line fitted by :func:`kdlib.trajectory.fit_line` to the first ``fit_fraction``
    of the mean trajectory and extended over the rest (the linearity claimed by Theorem 1). ``authors``
    trajectories (already converted to our convention) are drawn dotted, on their own top x axis when their
    length differs from ours."""
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
        used = [ax] + _overlay_authors(ax, df[x], authors, methods, authors_x, col, authors_xlabel, ls=":", lw=1.5)
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if j == 0:
            _legend(used, ax, fontsize=7)
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
    sns.heatmap(piv, ax=ax, cmap="viridis", cbar_kws={"label": VALUE_LABELS.get(value, value.replace("_", " "))},
                xticklabels=[f"{v:.2f}" for v in piv.columns], yticklabels=[f"{v:.2g}" for v in piv.index])
    ax.set_xlabel(r"$\lambda_1$ (weight of the classification term)")
    ax.set_ylabel("$T$")
    if mark is not None:
        cols, rows = list(piv.columns), list(piv.index)
        ax.plot(cols.index(mark[0]) + 0.5, rows.index(mark[1]) + 0.5, marker="*", color="red", ms=14)
    if title:
        ax.set_title(title)
    return ax


TOY_LABELS = {"lambda_distance": r"$\|\lambda_{\mathrm{greedy}} - \lambda^*\|$",
              "excess_val_loss": r"$\mathcal{L}_{\mathrm{val}}(\lambda_{\mathrm{greedy}}) - \mathcal{L}_{\mathrm{val}}(\lambda^*)$",
              "max_error": r"max $\|\lambda_{\mathrm{line}} - \lambda_{\mathrm{greedy}}\|$ over the $e_2$ window",
              "relative_error": r"max $\|\lambda_{\mathrm{line}} - \lambda_{\mathrm{greedy}}\|$ / distance travelled",
              "e2": r"$e_2$ (iterations extrapolated)"}


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
        ax.set_ylabel(TOY_LABELS.get(y, y.replace("_", " ")))
        ax.grid(alpha=0.3)
    axes[0].figure.tight_layout()
    return axes


def extrapolation_error(df: pd.DataFrame, x: str = "e2", y: str = "max_error", hue: str | None = "case", ax=None,
                        title: str | None = None, ylabel: str | None = None):
    """Error of the linear extrapolation against the true greedy trajectory as e2 grows (log-log). The y label
    names the plotted column ``y`` (:data:`TOY_LABELS`), or ``ylabel``."""
    ax = _ax(ax, figsize=(6.0, 3.8))
    sns.lineplot(data=df, x=x, y=y, hue=hue, marker="o", ax=ax)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(TOY_LABELS.get(x, x))
    ax.set_ylabel(ylabel or TOY_LABELS.get(y, y.replace("_", " ")))
    ax.grid(alpha=0.3, which="both")
    if title:
        ax.set_title(title)
    return ax


SOURCE_MARKERS = {"authors' logs": "o", "kdlib, authors' protocol": "s", "kdlib, kdlib defaults": "^"}


def final_vs_initial_temperature(runs: pd.DataFrame, methods: Sequence[str] = ("gradient", "proposed"),
                                 axes=None, title: str | None = None):
    """Per run: final test accuracy against T at the first logged epoch (log x), one panel per method, one
    marker per source (authors' logs, our archived protocols); the colour is the branch the run ended on.
    ``runs`` is :func:`kdlib.analysis.archive.run_table` and/or ``authors_run_table`` concatenated."""
    methods = [m for m in methods if m in set(runs.method)]
    if axes is None:
        _, axes = plt.subplots(1, max(1, len(methods)), figsize=(5.6 * max(1, len(methods)), 3.8), squeeze=False)
        axes = axes[0]
    branch_colors = {"distillation": "tab:blue", "pure CE": "tab:red", "between": "tab:gray", "diverged": "black"}
    for ax, m in zip(np.atleast_1d(axes), methods):
        d = runs[runs.method == m]
        for (src, br), g in d.groupby(["source", "branch"], sort=False):
            ax.scatter(g.temperature_0, g.final_accuracy.fillna(np.nan), marker=SOURCE_MARKERS.get(src, "x"),
                       color=branch_colors.get(br, "tab:green"), s=42, alpha=0.8, label=f"{src}: {br}")
        ax.set_xscale("log")
        ax.set_xlabel("$T$ after epoch 0")
        ax.set_ylabel("final test accuracy")
        ax.set_title(LABELS.get(m, m))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    if title:
        np.atleast_1d(axes)[0].figure.suptitle(title)
    np.atleast_1d(axes)[0].figure.tight_layout()
    return axes


def run_trajectories(curves: pd.DataFrame, value: str, by: str = "run", x: str = "epoch", ax=None,
                     color_by_branch: dict[int, str] | None = None, title: str | None = None,
                     ylabel: str | None = None, xlabel: str = "epoch"):
    """One thin line per run of ``value`` (e.g. λ1 in the authors' convention, T, test accuracy) against
    ``x``; coloured by the branch of that run when ``color_by_branch`` (run -> branch) is given."""
    ax = _ax(ax, figsize=(6.0, 3.6))
    branch_colors = {"distillation": "tab:blue", "pure CE": "tab:red", "between": "tab:gray", "diverged": "black"}
    seen = set()
    for run, d in curves.groupby(by, sort=True):
        br = (color_by_branch or {}).get(run)
        lab = br if br is not None and br not in seen else None
        seen.add(br)
        d = d.sort_values(x)
        ax.plot(d[x], d[value], lw=1.0, alpha=0.8, color=branch_colors.get(br, "tab:purple"), label=lab)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel or value)
    ax.grid(alpha=0.3)
    if seen - {None}:
        ax.legend(fontsize=7, title="branch", title_fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def table2_points(ours: pd.DataFrame, theirs: pd.DataFrame, datasets: Sequence[str],
                  methods: Sequence[str] = METHODS, dataset_labels: dict[str, str] | None = None,
                  ours_label: str = "ours", theirs_label: str = "authors' logs"):
    """Table 2 at a glance: one panel per dataset, per method our runs' final accuracies (filled dots, left) and
    the authors' (open dots, right), each with its mean as a bar. ``ours`` / ``theirs``: per-run frames with
    columns dataset, method, test_accuracy (NaN rows, diverged runs, are not drawn)."""
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.6 * len(datasets), 3.8), squeeze=False)
    rng = np.random.default_rng(0)  # horizontal jitter only
    for ax, ds in zip(axes[0], datasets):
        for i, m in enumerate(methods):
            for off, frame, filled in ((-0.18, ours, True), (0.18, theirs, False)):
                acc = frame[(frame.dataset == ds) & (frame.method == m)]["test_accuracy"].to_numpy(dtype=float)
                acc = acc[np.isfinite(acc)]
                if not acc.size:
                    continue
                x = i + off + rng.uniform(-0.06, 0.06, acc.size)
                ax.scatter(x, acc, s=14, color=PALETTE.get(m) if filled else "none",
                           edgecolors=PALETTE.get(m), linewidths=0.9, zorder=3)
                ax.hlines(acc.mean(), i + off - 0.13, i + off + 0.13, color="black", lw=1.6, zorder=4)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([LABELS.get(m, m) for m in methods], rotation=45, ha="right", fontsize=8)
        ax.set_title((dataset_labels or {}).get(ds, ds), fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("final test accuracy (one dot per run)")
    handles = [plt.Line2D([], [], marker="o", ls="", color="gray", label=ours_label),
               plt.Line2D([], [], marker="o", ls="", markerfacecolor="none", color="gray", label=theirs_label),
               plt.Line2D([], [], color="black", lw=1.6, label="mean")]
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, 1.02))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def accuracy_vs_wall_time(points: pd.DataFrame, methods: Sequence[str], ax=None, title: str | None = None):
    """One point per run: final test accuracy against the run's wall time (log x), one colour per method.
    ``points``: :func:`kdlib.analysis.beyond.run_points` (method, final_accuracy, wall_time); diverged runs
    (no finite accuracy) are not drawn."""
    ax = _ax(ax, figsize=(6.4, 4.2))
    for m in _present(methods, points["method"]):
        d = points[(points.method == m) & np.isfinite(points.final_accuracy.astype(float))]
        ax.scatter(d.wall_time.astype(float), d.final_accuracy.astype(float), s=30, alpha=0.85,
                   color=PALETTE.get(m), marker="o" if m in METHODS else "D", label=LABELS.get(m, m))
    ax.set_xscale("log")
    # plain numbers at 1, 2 and 5 of each decade (the default labels every minor tick in scientific notation)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(plt.FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** np.floor(np.log10(v))) in (2, 5) else ""))
    ax.set_xlabel("wall time per run (s, log scale)")
    ax.set_ylabel("final test accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return ax
