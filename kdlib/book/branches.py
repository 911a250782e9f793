"""Beyond the paper, *why the branches?*: the section of the reduced CIFAR-10 page that reads the sweep of
:mod:`kdlib.experiments.sweeps` (``archive/cifar10_reduced/branches/runs``) and says whether a longer
hypergradient horizon (K-step unrolled eq. 3) or a step on log T lets a small-T start leave the pure-CE branch.

Everything shown is computed from the stored records: per (start, variant) the trajectory of λ1 (the authors'
convention, ``1 - lambda1``: the weight of the distillation term) and T after every epoch, the branch by
:func:`kdlib.analysis.archive.branch_of` on the last λ1 (``"undecided"`` where that rule says *between*: a few
epochs cannot call it), the test accuracy, and the wall time per epoch relative to the one-step run of the same
start. The section runs nothing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from kdlib.analysis.archive import DISTILLATION_MIN, PURE_CE_MAX, branch_of, read_records
from kdlib.analysis.provenance import display_path
from kdlib.book.page import show_markdown, show_table
from kdlib.experiments.sweeps import BRANCHES_STARTS, BRANCHES_VARIANTS, branches_dir, variant_of
from kdlib.metaparams import authors_initial

COMMAND = 'python -c "from kdlib.experiments.sweeps import run_branches; run_branches()"'
BASELINE = "one-step"
SLOWER_BY = 0.05  # a variant "slows the fall" when its mean last λ1 (small-T starts) exceeds one-step's by this
TABLE_COLUMNS = ["run", "start", "T0", "variant", "epochs", "trajectory", "lambda1_authors_last",
                 "temperature_last", "test_accuracy", "branch", "seconds_per_epoch", "cost_vs_one_step"]


def load_branch_records(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The run records of the sweep under ``<root>/runs`` (default :func:`~kdlib.experiments.sweeps.branches_dir`),
    validated (:func:`kdlib.analysis.archive.validate_record`); records of no known variant are left out."""
    folder = (branches_dir() if root is None else Path(root)) / "runs"
    return [rec for rec in read_records(folder, "branches/runs").values() if variant_of(rec["config"]) is not None]


def _branch(lambda1_authors: float) -> str:
    b = branch_of(lambda1_authors)
    return "undecided" if b == "between" else b


def branches_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per record: ``run`` (seed = the authors' run index), ``start`` (its role in the sweep), ``T0``
    (the authors' initial draw), ``variant``, ``epochs`` logged, ``trajectory`` (list of (λ1 authors, T) after
    epochs 0..E-1), the last λ1 (authors' convention) and T, test accuracy after the last epoch, ``branch``,
    seconds per epoch (evaluation included) and that cost relative to the one-step run of the same start
    (NaN when that run is missing). Sorted by start then variant in :data:`BRANCHES_VARIANTS` order."""
    rows = []
    for rec in records:
        cfg = rec["config"]
        hist = sorted(rec["history"], key=lambda h: (h["epoch"], h.get("step", 0)))
        last = hist[-1]
        lam_a = 1.0 - float(last["lambda1"])
        seed = int(cfg["seed"])
        rows.append(dict(
            run=seed, start=BRANCHES_STARTS.get(seed, "other"), T0=float(authors_initial(seed)[1]),
            variant=variant_of(cfg), epochs=len(hist),
            trajectory=[(1.0 - float(h["lambda1"]), float(h["temperature"])) for h in hist],
            lambda1_authors_last=lam_a, temperature_last=float(last["temperature"]),
            test_accuracy=float(last["test_accuracy"]) if last["test_accuracy"] is not None else float("nan"),
            branch=_branch(lam_a), seconds_per_epoch=float(last["wall_time"]) / (int(last["epoch"]) + 1)))
    df = pd.DataFrame(rows, columns=TABLE_COLUMNS[:-1])
    if df.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    base = df[df.variant == BASELINE].set_index("run")["seconds_per_epoch"]
    df["cost_vs_one_step"] = df.seconds_per_epoch / df.run.map(base)
    order = {v: i for i, v in enumerate(BRANCHES_VARIANTS)}
    df["_start"] = df.start.ne("small T")
    df["_v"] = df.variant.map(order)
    return df.sort_values(["_start", "run", "_v"]).drop(columns=["_start", "_v"]).reset_index(drop=True)


def branches_display(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the page shows it: one column per epoch with "λ1 / T" after that epoch."""
    epochs = int(table.epochs.max()) if len(table) else 0
    out = pd.DataFrame({"start": [f"run {r}, {s}, T0 = {t:.2f}" for r, s, t in zip(table.run, table.start, table.T0)],
                        "variant": table.variant})
    for e in range(epochs):
        out[f"λ1 / T after epoch {e}"] = [f"{tr[e][0]:.2f} / {tr[e][1]:.2f}" if e < len(tr) else "—"
                                          for tr in table.trajectory]
    out["test accuracy"] = table.test_accuracy.map(lambda v: f"{v:.3f}")
    out["branch"] = table.branch
    out["time per epoch vs one-step"] = table.cost_vs_one_step.map(
        lambda v: "—" if not np.isfinite(v) else f"{v:.1f}×")
    return out


def _counts(d: pd.DataFrame) -> str:
    parts = [f"{(d.branch == b).sum()} {b}" for b in ("distillation", "undecided", "pure CE") if (d.branch == b).any()]
    return ", ".join(parts)


def largest_t_moves(config: dict[str, Any], temperatures: Iterable[float]) -> dict[str, list[float]]:
    """The most T can move in one iteration at each of ``temperatures`` under ``config``'s meta_lr and clip:
    ``"linear"``: meta_lr * clip (the same at every T); ``"log"``: T * (exp(meta_lr * clip) - 1)."""
    step = float(config["meta_lr"]) * float(config["meta_clip"])
    ts = [float(t) for t in temperatures]
    return {"linear": [step for _ in ts], "log": [t * float(np.expm1(step)) for t in ts]}


def _direction(trajectory: list[tuple[float, float]]) -> str:
    """How λ1 (authors' convention) moved over the last logged epoch: "rising a → b", "falling a → b" or "flat"."""
    if len(trajectory) < 2:
        return "one epoch logged"
    a, b = trajectory[-2][0], trajectory[-1][0]
    return "flat" if abs(b - a) < 5e-3 else f"{'rising' if b > a else 'falling'} {a:.2f} → {b:.2f}"


def branches_verdict(table: pd.DataFrame, config: dict[str, Any] | None = None) -> str:
    """The generated conclusion: per variant, where the small-T starts are after the last epoch and at what
    cost, which variant (if any) brings one to the distillation branch, where the undecided runs are heading,
    and the large-T control; with ``config`` (a record's), the most T can move per iteration under either
    parametrisation."""
    small = table[table.start == "small T"]
    runs = sorted(small.run.unique())
    epochs = int(table.epochs.max())
    lines, leavers = [], []
    for variant in BRANCHES_VARIANTS:
        d = small[small.variant == variant]
        if d.empty:
            lines.append(f"- *{variant}*: not run.")
            continue
        cost = d.cost_vs_one_step.mean()
        cost_txt = "" if variant == BASELINE or not np.isfinite(cost) else \
            f"; {cost:.1f}× the one-step time per epoch"
        first = np.mean([tr[0][0] for tr in d.trajectory])
        lines.append(f"- *{variant}*: {_counts(d)} after {epochs} epochs (λ1 after epoch 0: mean {first:.2f}; last "
                     f"λ1 {', '.join(f'{v:.2f}' for v in d.lambda1_authors_last)}; T "
                     f"{', '.join(f'{v:.2f}' for v in d.temperature_last)}){cost_txt}.")
        reached = d[d.branch == "distillation"]
        if len(reached) and variant != BASELINE:
            leavers.append((variant, len(reached), len(d), cost))
    head = (f"From the small-T starts (the authors' runs {', '.join(map(str, runs))}), where each run is after the "
            f"last epoch, λ1 in the authors' convention (pure CE at or below {PURE_CE_MAX}, distillation at or "
            f"above {DISTILLATION_MIN}, undecided between):")
    if leavers:
        tail = "So " + "; ".join(f"*{v}* brings {k} of {n} small-T starts to the distillation branch, at {c:.1f}× "
                                 f"the one-step cost per epoch" for v, k, n, c in leavers) + "."
    else:
        tried = [v for v in BRANCHES_VARIANTS if v != BASELINE and (small.variant == v).any()]
        tail = (f"So none of {', '.join(f'*{v}*' for v in tried) or 'the variants'} brings a small-T start to the "
                f"distillation branch within {epochs} epochs.")
        last = small.groupby("variant").lambda1_authors_last.mean()
        if BASELINE in last:
            slower = [v for v in tried if last[v] > last[BASELINE] + SLOWER_BY]
            if slower:
                tail += (" " + " and ".join(f"*{v}*" for v in slower) + " slow" + ("s" if len(slower) == 1 else "")
                         + " the fall of λ1 (mean last λ1 over the small-T starts: "
                         + ", ".join(f"{v} {last[v]:.2f}" for v in (BASELINE, *slower)) + ").")
        if any(v.startswith("unrolled") for v in tried):
            tail += (" A longer horizon (K virtual steps, all on the current batch) does not by itself undo the "
                     "collapse within these epochs; whether the slowed runs settle elsewhere needs more epochs.")
    undecided = small[small.branch == "undecided"]
    if len(undecided):
        tail += " Undecided after the last epoch: " + "; ".join(
            f"*{r.variant}* from run {r.run} (λ1 {_direction(r.trajectory)})" for r in undecided.itertuples()) + "."
    control = table[table.start != "small T"]
    if len(control):
        tail += " The large-T control: " + "; ".join(
            f"*{r.variant}* {r.branch}" + ("" if r.branch != "undecided" else f" (λ1 {_direction(r.trajectory)})")
            for r in control.itertuples()) + "."
    out = [head, "", *lines, "", tail]
    if config is not None and len(small):
        t0 = sorted(small.drop_duplicates("run").T0)
        moves = largest_t_moves(config, t0)
        out += ["", f"With the same meta_lr ({config['meta_lr']}) and clip ({config['meta_clip']}), the log-T step "
                    f"moves a small T *less* than the linear one: at most {moves['linear'][0]:.4f} per iteration "
                    f"on T, against " + ", ".join(f"{m:.4f} at T = {t:.2f}" for m, t in zip(moves["log"], t0))
                    + " on log T."]
    return "\n".join(out)


def plot_branches(table: pd.DataFrame):
    """λ1 (authors' convention) and T against epoch, one line per (start, variant): colour = variant, solid =
    small-T start, dashed = the large-T control."""
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4))
    colors = dict(zip(BRANCHES_VARIANTS, ("tab:gray", "tab:green", "tab:blue", "tab:purple")))
    seen = set()
    for _, r in table.iterrows():
        ep = np.arange(len(r.trajectory))
        tr = np.asarray(r.trajectory, dtype=float)
        ls = "-" if r.start == "small T" else "--"
        lab = r.variant if r.variant not in seen else None
        seen.add(r.variant)
        axes[0].plot(ep, tr[:, 0], ls, marker="o", ms=3, color=colors.get(r.variant, "black"), label=lab)
        axes[1].plot(ep, tr[:, 1], ls, marker="o", ms=3, color=colors.get(r.variant, "black"))
    axes[0].set_ylabel("λ1 (authors' convention)")
    axes[1].set_ylabel("T")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="solid: small-T starts, dashed: control", title_fontsize=7)
    fig.tight_layout()
    return axes


def show_branches(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The page section: the table, the plot and the generated verdict; says so when the folder holds no
    record (the page still builds). Returns the table."""
    folder = branches_dir() if root is None else Path(root)
    table = branches_table(load_branch_records(folder))
    if table.empty:
        show_markdown(f"**No run of this sweep is stored yet.** `{display_path(folder)}/runs/` holds no record; "
                      f"run `{COMMAND}` to make them (a CPU hour or so).")
        return table
    show_markdown(f"{len(table)} run records in `{display_path(folder)}/runs/` (made by `{COMMAND}`, stored with "
                  "their provenance; not re-run by this build).")
    show_table(branches_display(table), index=False)
    plot_branches(table)
    plt.show()
    show_markdown(branches_verdict(table, load_branch_records(folder)[0]["config"]))
    return table


__all__ = ["load_branch_records", "branches_table", "branches_display", "branches_verdict", "largest_t_moves",
           "plot_branches",
           "show_branches"]
