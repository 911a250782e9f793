"""*Which knob?*: the section of the reduced CIFAR-10 page that attributes the gap between the archive's two
gradient-based columns (the authors' protocol and kdlib's defaults) to the two fields that differ for that method,
``init_law`` and ``fd_virtual_lr`` (:data:`kdlib.experiments.sweeps.ATTRIBUTION_FACTORS`), from the four corners of
the 2 x 2 design: two are the archive's columns (``archive/<dataset>/{authors,defaults}/runs``), two are run by
:func:`kdlib.experiments.sweeps.run_attribution` (``archive/<dataset>/attribution/runs``).

Everything shown is computed from stored records (and the authors' logs, where they are on the machine); the
section runs nothing.
"""
from __future__ import annotations

import os
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from kdlib.analysis import archive as A
from kdlib.analysis import authors_logs
from kdlib.analysis.final import record_final
from kdlib.analysis.labels import PROTOCOL_LABELS
from kdlib.analysis.provenance import display_path
from kdlib.book import plots
from kdlib.book.page import show_markdown, show_table
from kdlib.experiments.protocol import PROTOCOLS
from kdlib.experiments.sweeps import (ATTRIBUTION_CELLS, ATTRIBUTION_FACTORS, ATTRIBUTION_FOLDER, ATTRIBUTION_METHOD,
                                      attribution_dir)

COMMAND = 'python -c "from kdlib.experiments.sweeps import run_attribution; run_attribution(workers=2)"'
FIELD_LABELS = {"init_law": "starts", "fd_virtual_lr": "virtual step at"}
LEVEL_LABELS = {"init_law": {"authors": "the authors' draws", "uniform": "kdlib's draws"},
                "fd_virtual_lr": {"initial": "the initial lr", "current": "the current lr"}}
# the archive folder that holds each corner of the design
CORNER_FOLDERS = {("authors", "initial"): "authors", ("uniform", "current"): "defaults"}


def attribution_records(dataset: str = "cifar10_reduced",
                        root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The gradient-based records of the four corners: the archive's two columns and the attribution folder."""
    archive = A.load_archive(dataset, root=root)
    recs = [r for p in PROTOCOLS for r in archive.get(p, []) if r["config"]["method"] == ATTRIBUTION_METHOD]
    folder = attribution_dir(root, dataset) / "runs"
    recs += list(A.read_records(folder, f"{dataset}/{ATTRIBUTION_FOLDER}/runs").values())
    return recs


def attribution_display(table: pd.DataFrame) -> pd.DataFrame:
    """The design table as the page shows it: labelled levels, the archive folder of each corner, runs per
    branch and the final accuracy as mean ± std."""
    fields = list(ATTRIBUTION_FACTORS)
    out = pd.DataFrame({FIELD_LABELS[f]: table[f].map(LEVEL_LABELS[f]) for f in fields})
    out["records in"] = [f"{CORNER_FOLDERS.get(tuple(levels), ATTRIBUTION_FOLDER)}/"
                         for levels in table[fields].itertuples(index=False)]
    out["runs"] = table.runs
    for b in ("distillation", "between", "pure CE"):
        out[f"runs ending on {b}"] = table[b]
    out["final accuracy, mean ± std"] = [
        "—" if not np.isfinite(m) else f"{m:.4f} ± {s:.4f}"
        for m, s in zip(table["mean final accuracy"], table["std final accuracy"])]
    out["mean final λ1 (authors' convention)"] = table["mean final lambda1_authors"].map(
        lambda v: "—" if not np.isfinite(v) else f"{v:.2f}")
    return out


def _cell(table: pd.DataFrame, **levels: str) -> pd.Series:
    mask = np.logical_and.reduce([table[f] == v for f, v in levels.items()])
    return table[mask].iloc[0]


def attribution_verdict(table: pd.DataFrame, reference: float | None = None) -> str:
    """The generated conclusion: per start law, the effect of the virtual step's lr on the branch counts and
    the final accuracy; the two main effects when all four corners are complete, and which is larger;
    ``reference`` (the mean final accuracy without distillation) for the gains."""
    (f_init, (init_a, init_k)), (f_lr, (lr_i, lr_c)) = ATTRIBUTION_FACTORS.items()
    missing = table[table.runs == 0]
    lines = []
    for init in (init_a, init_k):
        parts = []
        for lr in (lr_i, lr_c):
            c = _cell(table, **{f_init: init, f_lr: lr})
            if c.runs == 0:
                parts.append(f"at {LEVEL_LABELS[f_lr][lr]}, not run")
                continue
            gain = "" if reference is None else f", {c['mean final accuracy'] - reference:+.4f} over no distillation"
            parts.append(f"at {LEVEL_LABELS[f_lr][lr]}, {c.distillation} of {c.runs} runs end on the distillation "
                         f"branch (mean final accuracy {c['mean final accuracy']:.4f}{gain})")
        lines.append(f"- From {LEVEL_LABELS[f_init][init]}: with the virtual step " + "; ".join(parts) + ".")
    if len(missing):
        lines.append(f"\nThe design is not complete ({len(missing)} corner(s) without records), so no main effect "
                     f"is computed; `{COMMAND}` runs the missing corners.")
        return "\n".join(lines)
    acc = A.main_effects(table, ATTRIBUTION_FACTORS)
    dist = A.main_effects(table.assign(distillation=table.distillation.astype(float)), ATTRIBUTION_FACTORS,
                          value="distillation")
    lines.append("")
    lines.append(
        f"Main effects, each averaged over the two levels of the other field: the virtual step at "
        f"{LEVEL_LABELS[f_lr][lr_i]} instead of {LEVEL_LABELS[f_lr][lr_c]} changes the mean final accuracy by "
        f"{acc[f_lr]:+.4f} and the number of runs on the distillation branch by {dist[f_lr]:+.1f}; "
        f"{LEVEL_LABELS[f_init][init_a]} instead of {LEVEL_LABELS[f_init][init_k]} change them by "
        f"{acc[f_init]:+.4f} and {dist[f_init]:+.1f}.")
    larger = max(acc, key=lambda f: abs(acc[f]))
    other = f_init if larger == f_lr else f_lr
    lines.append(f"The larger effect on the final accuracy is that of `{larger}` ({abs(acc[larger]):.4f} against "
                 f"{abs(acc[other]):.4f} for `{other}`).")
    return "\n".join(lines)


def no_distillation_mean(dataset: str = "cifar10_reduced", root: str | os.PathLike | None = None) -> float | None:
    """The mean final accuracy of the archived no-distillation runs (the authors' protocol; no tuned knob
    touches them), or None when none is archived."""
    recs = [r for r in A.load_archive(dataset, root=root, protocols=("authors",))["authors"]
            if r["config"]["method"] == "no_distillation"]
    acc = [f["test_accuracy"] for f in map(record_final, recs) if not f["diverged"]]
    return float(np.mean(acc)) if acc else None


def show_attribution(dataset: str = "cifar10_reduced", root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The page section: the 2 x 2 table, the generated verdict, the authors' starts run by run under both
    virtual-step lrs beside the authors' logs, and their λ1 trajectories. Returns the design table."""
    recs = attribution_records(dataset, root)
    table = A.factorial_table(recs, ATTRIBUTION_FACTORS, ATTRIBUTION_METHOD)
    folder = display_path(attribution_dir(root, dataset) / "runs")
    n_new = int(table.runs.sum() - sum(_cell(table, init_law=i, fd_virtual_lr=v).runs
                                       for i, v in CORNER_FOLDERS))
    show_markdown(f"{n_new} records of the two switched corners in `{folder}/` (made by `{COMMAND}`, "
                  f"{', '.join(f'*{c}*' for c in ATTRIBUTION_CELLS)}; stored with their provenance, not re-run by "
                  "this build); the other two corners are the archive's columns.")
    show_table(attribution_display(table), index=False)
    show_markdown(attribution_verdict(table, no_distillation_mean(dataset, root)))
    logs = authors_logs.find_logs_dir()
    starts = [r for r in recs if r["config"].get("init_law") == "authors"]
    if logs is None or not starts:
        return table
    by_lr = {f"virtual step at {LEVEL_LABELS['fd_virtual_lr'][lr]}":
             [r for r in starts if r["config"]["fd_virtual_lr"] == lr] for lr in ATTRIBUTION_FACTORS["fd_virtual_lr"]}
    ours = A.run_table({k: v for k, v in by_lr.items() if v}, methods=(ATTRIBUTION_METHOD,))
    comp = A.branch_comparison(ours, A.authors_run_table(logs, dataset, methods=(ATTRIBUTION_METHOD,)))
    wide = comp.pivot(index="run", columns="source", values=["branch (ours)", "final accuracy (ours)"])
    shown = pd.DataFrame({"run": wide.index,
                          "T after epoch 0 (authors)": comp.groupby("run")["T0 (authors)"].first().to_numpy(),
                          "branch (authors' logs)": comp.groupby("run")["branch (authors)"].first().to_numpy()})
    for src in (f"kdlib, {k}" for k, v in by_lr.items() if v):  # the initial lr first, as the design table
        shown[f"branch, ours, {src.removeprefix('kdlib, ')}"] = wide["branch (ours)"][src].to_numpy()
        shown[f"final accuracy, ours, {src.removeprefix('kdlib, ')}"] = wide["final accuracy (ours)"][src].to_numpy()
    shown["final accuracy (authors' logs)"] = comp.groupby("run")["final accuracy (authors)"].first().to_numpy()
    show_markdown(f"From the authors' starts, run by run (our seed *i* starts at their *i*-th draw; the "
                  f"{PROTOCOL_LABELS['authors']} column is the one at the initial lr):")
    show_table(shown, index=False, floatfmt=".3f")
    curves = A.archive_curves({k: v for k, v in by_lr.items() if v})
    fig, axes = plt.subplots(1, len(by_lr), figsize=(11, 3.4), sharey=True, squeeze=False)
    for ax, (src, d) in zip(axes[0], curves.groupby("protocol", sort=False)):
        o = ours[ours.source == f"kdlib, {src}"]
        plots.run_trajectories(d.assign(lambda1_authors=1.0 - d.lambda1), "lambda1_authors", by="seed", ax=ax,
                               color_by_branch=dict(zip(o.run, o.branch)), title=f"authors' starts, {src}",
                               ylabel=r"$\lambda_1$ (authors' convention)")
    fig.tight_layout()
    plt.show()
    return table


__all__ = ["attribution_records", "attribution_display", "attribution_verdict", "no_distillation_mean",
           "show_attribution"]
