"""The page "Against 2023-24 methods" (``notebooks/11_beyond.md``): the paper's six methods beside CTKD, logit
standardisation and gradient-based tuning on standardised logits, on reduced CIFAR-10.

Two sources, each shown when it holds runs: the archive at the paper protocol (the authors'-protocol column of
the six and ``archive/cifar10_reduced/beyond/``, :mod:`kdlib.analysis.beyond`), read at every profile, and, at the
``smoke`` and ``quick`` profiles, the nine methods run by this build at the page's scale (cached under
``results/<profile>/cifar10_reduced``, shared with the reduced CIFAR-10 page). Every number shown is computed from
those records; the method descriptions read their constants from :mod:`kdlib.methods` and :mod:`kdlib.ctkd`.
"""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from kdlib import ctkd
from kdlib.analysis import archive as A
from kdlib.analysis import beyond as B
from kdlib.analysis.costs import count_text, seconds_text
from kdlib.analysis.labels import DATASET_LABELS, METHOD_LABELS
from kdlib.analysis.provenance import display_path
from kdlib.book import plots
from kdlib.book.page import (PAGE_WORKERS, PageBanner, error_line, resolve_seeds, results_dir, scale_text,
                             show_markdown, show_table, source_text)
from kdlib.experiments.problem import load_bundle
from kdlib.experiments.profiles import resolve_config
from kdlib.experiments.protocol import archive_dir
from kdlib.experiments.runner import plan, run_experiments
from kdlib.experiments.store import load_records
from kdlib.methods import CTKD, LogitStd
from kdlib.names import ALL_METHOD_NAMES, BEYOND_METHOD_NAMES

DATASET = "cifar10_reduced"
ARCHIVE_SOURCE = "paper protocol (archive)"
# profiles at which the page runs the nine methods itself (at "paper" the archive is the paper protocol)
RUN_PROFILES = ("smoke", "quick")


def method_descriptions() -> pd.DataFrame:
    """What each new method does, two sentences each, with its constants read from the code that runs it."""
    tau0 = float(ctkd.temperature_of(torch.tensor(ctkd.THETA_INIT)))
    rows = [
        ("ctkd", "Li et al., AAAI 2023; code `zhengli97/CTKD`",
         f"One learnable global temperature τ = {ctkd.T_START:g} + {ctkd.T_RANGE:g}·sigmoid(θ) (θ starts at "
         f"{ctkd.THETA_INIT:g}, so τ starts at {tau0:.2f}) is trained by the student's own optimizer through a "
         f"gradient-reversal layer, so that τ ascends the distillation loss while the student descends it, with a "
         f"reversal weight that follows a cosine from 0 to −1 over the first {ctkd.DECAY_LOOPS} epochs. The student "
         f"trains on all the training images with {CTKD.ce_weight:g}·CE + {CTKD.kd_weight:g}·τ²·KL(teacher ‖ "
         "student): no validation split, no hypergradient."),
        ("logit_std", "Sun et al., CVPR 2024; code `sunshangquan/logit-standardization-KD`",
         "Each sample's teacher and student logits are z-scored (mean 0, unbiased standard deviation 1) before the "
         f"softmax at a fixed base temperature τ = {LogitStd.base_temperature:g}, so that the student matches the "
         "teacher's logit relations rather than their scale. The loss is "
         f"{LogitStd.ce_weight:g}·CE (raw logits) + {LogitStd.kd_weight:g}·τ²·KL (standardised logits), on all the "
         "training images, with no validation split and no hypergradient."),
        ("gradient_std", "this page: the paper's method on standardised logits",
         "The paper's gradient-based tuning of (λ1, T), eq. (3) at every iteration with the same estimator, clip, "
         "box and starts as gradient-based, with its distillation term on z-scored teacher and student logits (CE "
         "on the raw logits). It asks whether the paper's tuning and the 2024 standardisation add up, a "
         "combination neither paper ran."),
    ]
    return pd.DataFrame([{"method": METHOD_LABELS[m], "source": src, "what it does": text} for m, src, text in rows])


class BeyondPage:
    """The page at one profile: construct it in the first hidden cell, then call :meth:`methods`, :meth:`archive`,
    :meth:`runs`, :meth:`table`, :meth:`figure`, :meth:`temperatures` and :meth:`verdict` in the page's
    sections. ``sources`` maps a source's name to its run records (the archive first)."""

    def __init__(self, profile: str, device: str = "cpu", seeds: Any = None,
                 banner: PageBanner | None = None) -> None:
        self.profile, self.device = profile, device
        self.label = DATASET_LABELS[DATASET]
        self.seed_list = resolve_seeds(seeds, profile, DATASET)
        self.out_dir = results_dir(profile, DATASET)
        self.sources: dict[str, list[dict[str, Any]]] = {}
        self.archived_new = 0
        self.banner = banner if banner is not None else PageBanner(
            profile, device, self.seed_list, scale_text(profile, DATASET), "checking ...")

    @property
    def build_source(self) -> str:
        return f"this build ({self.profile})"

    # ------------------------------------------------------------------------------------------ sections
    def methods(self) -> pd.DataFrame:
        table = method_descriptions()
        show_table(table, index=False)
        return table

    def archive(self) -> dict[str, list[dict[str, Any]]]:
        """Read the archived comparison; say plainly when the new methods' runs are not archived yet."""
        comp = B.comparison_records(DATASET)
        self.archived_new = len(comp["beyond"])
        where = display_path(B.beyond_dir(DATASET))
        n_six = len(comp["authors"])
        if not comp["beyond"]:
            show_markdown(
                f"**The archived comparison has not been run yet.** `{where}/` holds no run record, so the "
                f"paper-protocol rows of the three new methods below are empty: the archive part of this page shows "
                f"only the authors'-protocol column of the paper's six methods ({n_six} records in "
                f"`{display_path(archive_dir(DATASET, 'authors'))}/`). The command that makes it (10 runs per "
                f"method, with the overrides and the CPU-kernel pin of that column):\n\n```\n{B.ARCHIVE_COMMAND}\n```")
        else:
            counts = pd.Series([r["config"]["method"] for r in comp["beyond"]]).value_counts()
            show_markdown(f"Archived paper-protocol runs read beside each other: the authors'-protocol column of the "
                          f"paper's six ({n_six} records) and `{where}/` ("
                          + ", ".join(f"{METHOD_LABELS[m]}: {int(counts.get(m, 0))}" for m in BEYOND_METHOD_NAMES)
                          + " records), made with the same overrides. Their provenance:")
            show_table(A.provenance_table({"authors": comp["authors"], B.BEYOND_FOLDER: comp["beyond"]}),
                       index=False)
        if comp["authors"] or comp["beyond"]:
            self.sources[ARCHIVE_SOURCE] = comp["authors"] + comp["beyond"]
        return comp

    def runs(self) -> list[dict[str, Any]]:
        """At ``smoke`` / ``quick``: run (or load from the cache) the nine methods at the page's scale."""
        if self.profile not in RUN_PROFILES:
            show_markdown(f"At the `{self.profile}` profile this page runs nothing: the archive above is the paper "
                          "protocol.")
            return []
        try:
            bundle = load_bundle(resolve_config(DATASET, "gradient", self.profile, device=self.device))
        except FileNotFoundError as err:
            show_markdown(f"The {self.label} data is not available on this machine, so this build runs nothing "
                          f"({error_line(err, DATASET)}).")
            return []
        configs = plan(DATASET, list(ALL_METHOD_NAMES), self.seed_list, self.profile, self.device, {})
        run_experiments(DATASET, list(ALL_METHOD_NAMES), self.seed_list, self.profile, self.out_dir,
                        device=self.device, progress=False, workers=PAGE_WORKERS)
        recs = load_records(self.out_dir, configs=configs)
        self.sources[self.build_source] = recs
        self.data_source = bundle.source
        show_markdown(f"This build ran the nine methods at the `{self.profile}` profile ({scale_text(self.profile, DATASET)}"
                      f", {len(self.seed_list)} seeds each, {source_text(bundle.source)}), with kdlib's defaults and "
                      f"up to {PAGE_WORKERS} runs at a time: {len(recs)} records.")
        return recs

    def table(self) -> pd.DataFrame:
        """Accuracy (mean (max) ± std over runs) and cost per run (wall time, trainings, hypergradients) of the
        nine methods, one block of rows per source."""
        blocks = []
        for source, recs in self.sources.items():
            t = B.accuracy_cost_table(recs)
            blocks.append(pd.DataFrame({
                "source": source, "method": t.method.map(METHOD_LABELS), "runs": t.runs,
                "final accuracy, mean (max) ± std": [a if n else "not run yet" if source == ARCHIVE_SOURCE else "—"
                                                     for a, n in zip(t.accuracy, t.runs)],
                "wall time per run": t.wall_time_s.map(seconds_text), "full trainings per run": t.trainings.map(count_text),
                "hypergradients per run": t.hypergradients.map(count_text), "timed on": t.machine}))
            if t.diverged.sum():
                blocks[-1]["diverged runs"] = t.diverged
        if not blocks:
            show_markdown("No runs to tabulate: the archive is empty and this build ran nothing.")
            return pd.DataFrame()
        out = pd.concat(blocks, ignore_index=True)
        show_table(out.fillna("—"), index=False)
        return out

    def figure(self) -> None:
        """Final accuracy against wall time, one point per run, one panel per source."""
        sources = [(s, r) for s, r in self.sources.items() if r]
        if not sources:
            return
        fig, axes = plt.subplots(1, len(sources), figsize=(6.2 * len(sources), 4.2), squeeze=False)
        for ax, (source, recs) in zip(axes[0], sources):
            plots.accuracy_vs_wall_time(B.run_points(recs), ALL_METHOD_NAMES, ax=ax, title=f"{self.label}, {source}")
        fig.tight_layout()
        plt.show()

    def temperatures(self) -> None:
        """T per logged epoch, run by run: CTKD's learned τ beside the gradient-based methods' tuned T."""
        methods = ("ctkd", "gradient", "gradient_std")
        for source, recs in self.sources.items():
            curves = B.temperature_curves(recs, methods)
            present = [m for m in methods if m in set(curves.method)]
            if not present:
                continue
            missing = [METHOD_LABELS[m] for m in methods if m not in present]
            if missing:
                show_markdown(f"{source}: no runs of {', '.join(missing)} yet; drawn: "
                              f"{', '.join(METHOD_LABELS[m] for m in present)}.")
            fig, axes = plt.subplots(1, len(present), figsize=(4.6 * len(present), 3.4), squeeze=False)
            for ax, m in zip(axes[0], present):
                plots.run_trajectories(curves[curves.method == m], "temperature", by="seed", ax=ax,
                                       ylabel="τ (learned)" if m == "ctkd" else "T (tuned)",
                                       title=f"{METHOD_LABELS[m]}, {source}")
            fig.tight_layout()
            plt.show()

    def verdict(self) -> dict[str, pd.DataFrame]:
        """The generated verdict, per source: each new method against gradient-based tuning and no distillation,
        paired by seed, and which differences exceed the seed spread; then the best mean and the costs."""
        out: dict[str, pd.DataFrame] = {}
        lines: list[str] = []
        if ARCHIVE_SOURCE in self.sources and not self.archived_new:
            lines.append(f"- **{ARCHIVE_SOURCE}**: no verdict yet, the three new methods are not archived (the "
                         "command above makes them). Among the paper's six archived methods, "
                         + self._best(self.sources[ARCHIVE_SOURCE]) + ".")
        for source, recs in self.sources.items():
            v = B.verdict(recs, DATASET)
            if not len(v):
                continue
            out[source] = v
            shown = pd.DataFrame({"method": v.method.map(METHOD_LABELS), "minus": v.reference.map(METHOD_LABELS),
                                  "paired seeds": v.n, "mean difference": v["mean"],
                                  "95 % interval": [f"[{lo:+.4f}, {hi:+.4f}]" if np.isfinite(lo) else "—"
                                                    for lo, hi in zip(v.low, v.high)],
                                  "exceeds the seed spread": v.separated})
            show_markdown(f"**{source}**: final accuracy differences, paired by seed.")
            show_table(shown, index=False, floatfmt="+.4f")
            lines.append(self._verdict_lines(source, recs, v))
        if lines:
            show_markdown("\n".join(lines))
        if self.profile in RUN_PROFILES and self.build_source in self.sources:
            show_markdown(f"The runs of this build are at the `{self.profile}` profile, far below the paper's "
                          f"scale ({scale_text(self.profile, DATASET)}, {len(self.seed_list)} seeds): their "
                          "accuracies are not the paper's, and with so few seeds most differences cannot exceed "
                          "the seed spread. Only the archived comparison speaks for the paper protocol.")
        self.banner.finish(data_source=getattr(self, "data_source", "the archive"))
        return out

    # ------------------------------------------------------------------------------------------ text
    @staticmethod
    def _best(recs: list[dict[str, Any]]) -> str:
        t = B.accuracy_cost_table(recs)
        t = t[t.runs > 0]
        best = t.loc[t["mean"].idxmax()]
        return f"the best mean final accuracy is {METHOD_LABELS[best.method]}'s ({best['mean']:.4f} over {best.runs} runs)"

    def _verdict_lines(self, source: str, recs: list[dict[str, Any]], v: pd.DataFrame) -> str:
        t = B.accuracy_cost_table(recs).set_index("method")
        sep = v[v.separated]
        not_sep = v[~v.separated]

        def pair(r) -> str:
            return f"{METHOD_LABELS[r.method]} − {METHOD_LABELS[r.reference].lower()} = {r['mean']:+.4f}"

        text = f"- **{source}**: {self._best(recs)} among the nine methods with runs."
        if len(sep):
            text += (" Differences larger than the seed spread: " + "; ".join(
                f"{pair(r)} ({'above' if r['mean'] > 0 else 'below'})" for _, r in sep.iterrows()) + ".")
        else:
            text += " No difference of a new method exceeds the seed spread."
        if len(not_sep):
            text += (" Within the seed spread (not established): " + "; ".join(pair(r) for _, r in not_sep.iterrows())
                     + ".")
        g = t.loc["gradient", "wall_time_s"] if "gradient" in t.index else np.nan
        g_machine = t.loc["gradient", "machine"] if "gradient" in t.index else ""
        costs, elsewhere = [], []
        for m in BEYOND_METHOD_NAMES:
            if t.loc[m, "runs"] + t.loc[m, "diverged"] == 0:
                continue
            comparable = B.same_machine(t.loc[m, "machine"], g_machine)
            ratio = t.loc[m, "wall_time_s"] / g if comparable and np.isfinite(g) and g > 0 else np.nan
            if not comparable and np.isfinite(g):
                elsewhere.append((METHOD_LABELS[m], t.loc[m, "machine"]))
            costs.append(f"{METHOD_LABELS[m]} {seconds_text(t.loc[m, 'wall_time_s'])} per run"
                         + (f" ({ratio:.2f}× gradient-based)" if np.isfinite(ratio) else "")
                         + f", {count_text(t.loc[m, 'hypergradients'])} hypergradients")
        if costs:
            text += " Cost: " + "; ".join(costs) + "."
        if elsewhere:
            by_machine: dict[str, list[str]] = {}
            for label, where in elsewhere:
                by_machine.setdefault(where, []).append(label)
            text += (" Wall times compare only on one CPU model: " + "; ".join(
                f"{', '.join(labels)} {'was' if len(labels) == 1 else 'were'} timed on {where}"
                for where, labels in by_machine.items())
                     + f", gradient-based tuning on {g_machine}, so no wall-time ratio is given for "
                     + ("it" if len(elsewhere) == 1 else "them")
                     + "; the hypergradient and training counts compare across machines.")
        div = int(t.loc[list(BEYOND_METHOD_NAMES), "diverged"].sum())
        if div:
            text += f" {div} run(s) of the new methods diverged; they are counted apart, not averaged."
        return text


__all__ = ["BeyondPage", "method_descriptions", "DATASET", "ARCHIVE_SOURCE", "RUN_PROFILES"]
