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
from kdlib.analysis.labels import DATASET_LABELS, METHOD_LABELS, teacher_label
from kdlib.analysis.table2 import table2, table2_numeric
from kdlib.book import plots
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
