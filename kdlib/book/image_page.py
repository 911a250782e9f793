"""The image-dataset page (Fashion-MNIST, reduced CIFAR-10, CIFAR-10): one implementation, three pages.

Each of ``notebooks/05..07`` is prose plus thin calls on an :class:`ImagePage` built with its dataset name;
a change to what the image pages compute or show is made here, once. The runs come from
:func:`kdlib.experiments.runner.run_experiments` at the page's profile (cached under ``results/<profile>/<dataset>``), the
numbers from :mod:`kdlib.analysis`.
"""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from kdlib.analysis import authors_logs
from kdlib.analysis.costs import cost_table, run_summaries
from kdlib.analysis.final import final_accuracy
from kdlib.analysis.separation import paired_difference, separation_text
from kdlib.analysis import archive as A
from kdlib.analysis.labels import DATASET_LABELS, METHOD_LABELS, PROTOCOL_LABELS, teacher_label
from kdlib.analysis.table2 import table2, table2_numeric
from kdlib.book import plots
from kdlib.book.archive_page import archive_columns, show_archive, show_recheck
from kdlib.book.page import (PAGE_WORKERS, PageBanner, error_line, page_configs, resolve_seeds, results_dir,
                             scale_text, show_markdown, show_table, source_text, teacher_table, travel_text)
from kdlib.names import METHOD_NAMES
from kdlib.experiments.profiles import resolve_config
from kdlib.experiments.problem import load_bundle
from kdlib.experiments.store import load_records
from kdlib.experiments.runner import run_experiments


class ImagePage:
    """One image-dataset page at one profile. Construct it in the page's first hidden cell (with the page's
    :class:`~kdlib.book.page.PageBanner`, or one is made),
    then call :meth:`data`, :meth:`runs`, :meth:`accuracy`, :meth:`trajectories`, :meth:`table2_slice` and
    :meth:`what_we_saw` in the page's sections. Every method says so and returns when the data is missing."""

    def __init__(self, dataset: str, profile: str, device: str = "cpu", seeds: Any = None,
                 banner: PageBanner | None = None) -> None:
        self.dataset, self.profile, self.device = dataset, profile, device
        self.label = DATASET_LABELS.get(dataset, dataset)
        self.seed_list = resolve_seeds(seeds, profile, dataset)
        self.out_dir = results_dir(profile, dataset)
        self.available = False
        self.results: pd.DataFrame | None = None
        self.records: list[dict] = []
        self.logs = authors_logs.find_logs_dir()
        self.authors: pd.DataFrame | None = None
        self.banner = banner if banner is not None else PageBanner(
            profile, device, self.seed_list, scale_text(profile, dataset), "checking ...")

    # ------------------------------------------------------------------------------------------ sections
    def paper_protocol(self) -> dict[str, Any]:
        """The archived paper-protocol runs of this dataset, the same at every profile (they are read, not run):
        the archive beside the authors' logs run by run (:func:`~kdlib.book.archive_page.show_archive`), the
        build-time re-check of one record per column (:func:`~kdlib.book.archive_page.show_recheck`), and this
        dataset's Table 2 column at the paper's protocol beside the paper's. Returns what it showed."""
        out = show_archive(self.dataset)
        out["recheck"] = show_recheck(self.dataset)
        out["table"] = self.paper_column()
        out["verdict"] = self.paper_verdict(out)
        return out

    def paper_verdict(self, shown: dict[str, Any]) -> list[str]:
        """Generated lines on the archived columns: per method, our mean against the authors' log mean (within
        :data:`kdlib.analysis.archive.MEAN_TOLERANCE`?), gradient-based minus no distillation, and the tuned runs
        on the authors' branch; each over the runs archived so far."""
        archive = shown.get("archive") or {}
        if self.logs is None or not any(archive.values()):
            return []
        from_archive = A.against_authors(archive, self.logs, self.dataset)
        lines = []
        for protocol, d in from_archive.groupby("protocol", sort=False):
            label = PROTOCOL_LABELS.get(protocol, protocol)
            parts = []
            for _, r in d.iterrows():
                if np.isfinite(r.authors):
                    parts.append(f"{METHOD_LABELS[r.method]} {r.ours:.4f} over {r.runs} run(s) against the authors' "
                                 f"{r.authors:.4f} ({r.difference:+.4f}, "
                                 f"{'within' if r.within else 'outside'} {r.tolerance:g})")
                else:
                    parts.append(f"{METHOD_LABELS[r.method]} {r.ours:.4f} over {r.runs} run(s) (no log of the authors')")
            lines.append(f"- Paper protocol, {label}: " + "; ".join(parts) + ".")
            g = d.set_index("method")
            if {"gradient", "no_distillation"} <= set(g.index):
                lines.append(f"- Gradient-based minus no distillation, {label}: "
                             f"{g.loc['gradient', 'ours'] - g.loc['no_distillation', 'ours']:+.4f} "
                             f"({g.loc['gradient', 'runs']} and {g.loc['no_distillation', 'runs']} runs); in the "
                             f"authors' logs {g.loc['gradient', 'authors'] - g.loc['no_distillation', 'authors']:+.4f}.")
            if d.diverged.sum():
                lines.append(f"- {int(d.diverged.sum())} archived run(s) diverged; they are counted apart.")
        comp = shown.get("comparison")
        if comp is not None and len(comp):
            for (source, method), c in comp.groupby(["source", "method"], sort=True):
                lines.append(f"- {source}, {METHOD_LABELS[method]}: {int(c.same_branch.sum())} of {len(c)} runs "
                             "end on the branch of the authors' run with the same index.")
        show_markdown("\n".join(lines))
        return lines

    def paper_column(self) -> pd.DataFrame:
        """This dataset's Table 2 column at the paper's protocol: the archive's columns and the paper's (the
        authors' logs), mean (max) ± std over runs, with the runs per method."""
        out = pd.DataFrame(index=list(METHOD_NAMES))
        for name, col in archive_columns(self.dataset).items():
            out[name] = col
        if self.logs is not None:
            out["paper (authors' logs)"] = authors_logs.table2(self.logs)[self.dataset]
        out.index = [METHOD_LABELS[m] for m in out.index]
        if out.shape[1]:
            show_table(out.fillna("—"))
        return out

    def data(self) -> bool:
        """Load the dataset (prints its split sizes and source) or say that it is missing."""
        try:
            bundle = load_bundle(resolve_config(self.dataset, "gradient", self.profile, device=self.device))
        except FileNotFoundError as err:
            show_markdown(f"The {self.label} data is not available on this machine, so this page shows no "
                          f"results ({error_line(err, self.dataset)}).")
            return False
        self.available = True
        show_markdown(f"{self.label} ({source_text(bundle.source)}): {len(bundle.train_full):,} training images for "
                      f"the methods without a validation split, {len(bundle.train):,} training and "
                      f"{len(bundle.val):,} validation images for the tuned methods and hyperopt, "
                      f"{len(bundle.test):,} test images.")
        return True

    def runs(self) -> None:
        """Run (or load from the cache) the six methods over the page's seeds; show the teacher."""
        if not self.available:
            return
        configs = page_configs(self.dataset, self.profile, self.seed_list, self.device)
        self.results = run_experiments(self.dataset, list(METHOD_NAMES), self.seed_list, self.profile,
                                       self.out_dir, device=self.device, progress=False,
                                       workers=PAGE_WORKERS)
        self.records = load_records(self.out_dir, configs=configs)
        if self.logs is not None:
            self.authors = authors_logs.curves(self.logs, datasets=[self.dataset])
        show_table(teacher_table(self.teacher), index=False)

    @property
    def teacher(self) -> dict[str, Any]:
        return self.records[0]["summary"]["teacher"] if self.records else {}

    def accuracy(self) -> None:
        """Fig. 4: test accuracy per epoch, ours solid (bottom axis), the authors' dashed (top axis)."""
        if not self.available:
            return
        fig, ax = plt.subplots(figsize=(7.5, 4.6))
        plots.accuracy_curves(self.results, x="epoch", authors=self.authors, ax=ax, xlabel="epoch",
                              title=f"{self.label}: test accuracy, mean ± std over seeds")
        plt.show()

    def trajectories(self) -> None:
        """λ1 (the paper's convention) and T of the tuned methods, with the fitted lines of Theorem 1."""
        if not self.available:
            return
        plots.metaparam_trajectories(self.results, x="epoch", xlabel="epoch of our runs", authors=self.authors,
                                     authors_x="step",
                                     title=f"{self.label}: gradient-based and proposed (dotted: authors' logs)")
        plt.show()

    def table2_slice(self, extra: dict[str, pd.Series] | None = None) -> pd.DataFrame | None:
        """This dataset's column of Table 2: ours, any ``extra`` columns (label -> formatted cells), and the
        paper's, regenerated from the authors' logs."""
        if not self.available:
            return None
        ours = table2(self.results, datasets=[self.dataset])
        out = pd.DataFrame({f"ours ({self.profile})": ours[self.dataset]})
        for name, col in (extra or {}).items():
            out[name] = col
        if self.logs is not None:
            out["paper (authors' logs)"] = authors_logs.table2(self.logs)[self.dataset]
        if "diverged" in ours:
            out["diverged (ours)"] = ours["diverged"]
        out.index = [METHOD_LABELS[m] for m in out.index]
        show_table(out.fillna("—"))
        show_markdown(self.caveat())
        return out

    def separation(self) -> dict[str, Any]:
        """Gradient-based minus no distillation, paired by seed (:func:`kdlib.analysis.separation.paired_difference`)."""
        return paired_difference(final_accuracy(self.results), self.dataset, "gradient", "no_distillation")

    def caveat(self) -> str:
        """What qualifies the ``ours`` column: the scale of the runs (epochs, images, metaparameter steps, the
        travel rule), the seeds, and whether gradient-based tuning and no distillation are separated."""
        sep = separation_text(self.separation(), METHOD_LABELS["gradient"], METHOD_LABELS["no_distillation"])
        return (f"**Scale of `ours ({self.profile})`**, {len(self.seed_list)} seeds per method: "
                f"{travel_text(self.profile, self.dataset)}\n\n**Separated?** {sep}")

    def what_we_saw(self) -> None:
        """The generated summary of the page (every number from the runs), then the banner's wall time."""
        if not self.available:
            show_markdown("No results: the dataset is missing. Point `KDLIB_DATA` at a data root that holds it, "
                          "or allow downloading, and rebuild the book.")
            self.banner.finish(data_source="not available")
            return
        num = table2_numeric(self.results, datasets=[self.dataset]).set_index("method")
        best = num["mean"].idxmax()
        gain = num.loc["gradient", "mean"] - num.loc["no_distillation", "mean"]
        prop = num.loc["proposed", "mean"] - num.loc["gradient", "mean"]
        costs = cost_table(self.results, summaries=run_summaries(self.records)).set_index("method")
        saving = costs.loc["proposed", "saving_vs_gradient_evals"] if "proposed" in costs.index else float("nan")
        t = self.teacher
        t_acc, t_agree = t.get("test_accuracy"), t.get("train_agreement")
        text = (f"- The teacher ({teacher_label(t['name'])}) has test accuracy "
                + (f"{t_acc:.4f}" if t_acc is not None else "not recorded (its test images were never passed through it)")
                + (f" and agrees with {t_agree:.4f} of the training labels" if t_agree is not None else "") + ".\n"
                f"- Over {len(self.seed_list)} seeds the best mean final accuracy belongs to "
                f"**{METHOD_LABELS[best]}** ({num.loc[best, 'mean']:.4f}). Gradient-based tuning scores {gain:+.4f} "
                f"against training without distillation, and the proposed method {prop:+.4f} against gradient-based "
                f"tuning, with {_fewer(saving)} hypergradient evaluations.\n")
        text += f"- {separation_text(self.separation(), METHOD_LABELS['gradient'], METHOD_LABELS['no_distillation'])}\n"
        n_div = int(num["diverged"].sum())
        if n_div:
            text += f"- {n_div} run(s) diverged (no finite final accuracy); they are counted apart, not averaged.\n"
        if self.logs is not None:
            ref = authors_logs.table2_numeric(self.logs).query("dataset == @self.dataset").set_index("method")["mean"]
            text += (f"- In the authors' logs (full protocol) the same differences are "
                     f"{ref['gradient'] - ref['no_distillation']:+.4f} and {ref['proposed'] - ref['gradient']:+.4f}.\n")
        if self.profile != "paper":
            text += (f"- This page ran at the `{self.profile}` profile, far below the paper's scale: "
                     f"{travel_text(self.profile, self.dataset)} Its absolute accuracies are not comparable with the "
                     "paper's; only the ordering of the methods where the seeds separate them, and whether it agrees "
                     "with the authors' logs, carries over.")
        show_markdown(text)
        self.banner.finish(data_source=self.records[0]["summary"]["data_source"] if self.records else "—")


def _fewer(saving: float) -> str:
    if saving is None or not np.isfinite(saving):
        return "no comparable count of"
    return f"{abs(saving):.0%} {'fewer' if saving >= 0 else 'more'}"
