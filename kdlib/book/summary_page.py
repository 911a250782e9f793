"""The summary page (notebooks/08_summary.md): the paper's Table 2 from the authors' logs, ours beside it (with
the archived paper-protocol reduced CIFAR-10 columns), what each method costs, the benchmark's targets and the
generated "What we saw". It reads the records the dataset pages wrote at the same profile and runs nothing.
"""
from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from kdlib.analysis import archive, authors_logs, benchmarks
from kdlib.analysis.costs import cost_table, cost_table_display, run_summaries
from kdlib.analysis.labels import DATASET_LABELS, METHOD_LABELS
from kdlib.analysis.provenance import display_path
from kdlib.analysis.final import final_accuracy, records_final, summarize
from kdlib.analysis.table2 import format_numeric, side_by_side, table2, table2_from_final, table2_numeric
from kdlib.book import plots
from kdlib.book.archive_page import archive_columns
from kdlib.book.page import PageBanner, page_configs, resolve_seeds, results_dir, scale_text, show_markdown, show_table
from kdlib.experiments.profiles import PAPER_PROTOCOL, resolve_config
from kdlib.experiments.store import load_records, load_results
from kdlib.names import DATASETS, METHOD_NAMES

# the image datasets whose paper-protocol columns are archived runs (archive/<dataset>/authors)
ARCHIVE_DATASETS: tuple[str, ...] = ("fashion_mnist", "cifar10_reduced", "cifar10")


class SummaryPage:
    """One summary page at ``profile``: call its sections in order, then :meth:`finish`."""

    def __init__(self, profile: str, device: str = "cpu", seeds: Any = None) -> None:
        self.profile, self.device, self.seeds = profile, device, seeds
        self.banner = PageBanner(profile, device, {d: len(resolve_seeds(seeds, profile, d)) for d in DATASETS},
                                 {d: scale_text(profile, d) for d in DATASETS},
                                 "the results written by the dataset pages of this build")
        self.logs = authors_logs.find_logs_dir()
        self.authors = pd.DataFrame("—", index=list(METHOD_NAMES), columns=list(DATASETS))
        self.results = pd.DataFrame(columns=["dataset", "method", "seed", "step", "test_accuracy"])
        self.records: list[dict[str, Any]] = []
        self.costs = pd.DataFrame()
        self.paper = pd.DataFrame()
        self.paper_costs = pd.DataFrame()
        self.archived: dict[str, list[dict[str, Any]]] = {}  # dataset -> its authors'-protocol records
        self._missing: list[str] | None = None

    @cached_property
    def theirs(self) -> pd.DataFrame:
        """The authors' runs, one final accuracy each (read once from their logs; empty without them)."""
        if self.logs is None:
            return pd.DataFrame(columns=["dataset", "method", "run", "test_accuracy"])
        return authors_logs.final_table(self.logs)

    def authors_table(self) -> pd.DataFrame:
        """The paper's Table 2 rebuilt from the authors' logs, checked against the printed values (a mismatch
        fails the page)."""
        if self.logs is None:
            show_markdown("The authors' logs are not on this machine; set `KDLIB_DATA` to a data root with "
                          "`authors/logs`, or run `kdlib.analysis.authors_logs.fetch_logs()` with internet access.")
            return self.authors
        num = authors_logs.table2_numeric(self.logs)
        printed = authors_logs.paper_table2()
        diff = max(abs(round(r["mean"], 4) - printed.loc[r.method, r.dataset])
                   for _, r in num.iterrows() if np.isfinite(printed.loc[r.method, r.dataset]))
        assert diff < 1e-9, f"the authors' logs no longer reproduce the printed Table 2 (max difference {diff})"
        self.authors = authors_logs.table2(self.logs)
        show = self.authors.copy()
        show.index = [METHOD_LABELS[m] for m in show.index]
        show.columns = [DATASET_LABELS[d] for d in show.columns]
        show_table(show)
        return self.authors

    def _load_results(self) -> list[str]:
        """Read the runs the dataset pages wrote at this profile (exactly their configs), once; return the
        datasets with none."""
        if self._missing is None:
            frames, self._missing = [], []
            for ds in DATASETS:
                configs = page_configs(ds, self.profile, self.seeds, self.device)
                df = load_results(results_dir(self.profile, ds), configs=configs)
                if len(df):
                    frames.append(df)
                    self.records += load_records(results_dir(self.profile, ds), configs=configs)
                else:
                    self._missing.append(ds)
            if frames:
                self.results = pd.concat(frames, ignore_index=True)
        return self._missing

    def paper_protocol_finals(self) -> pd.DataFrame:
        """Our runs at the paper's protocol, one row per run (dataset, method, seed, test_accuracy, diverged,
        source): the synthetic column from this build's runs when its profile runs synthetic at the paper's
        scale, every image column from the archive under the authors' protocol (a column in progress
        included)."""
        self._load_results()
        frames = []
        syn = resolve_config("synthetic", "gradient", self.profile, 0)
        if syn.iterations == PAPER_PROTOCOL["synthetic"]["iterations"] and len(self.results):
            f = final_accuracy(self.results[self.results.dataset == "synthetic"])
            frames.append(f.assign(source=f"this build ({self.profile})"))
        else:
            show_markdown(f"- Synthetic: this build's `{self.profile}` profile runs it below the paper's scale "
                          f"({syn.iterations} of {PAPER_PROTOCOL['synthetic']['iterations']} iterations), so its "
                          "paper-protocol column is empty here; the `quick` and `paper` profiles fill it.")
        for ds in ARCHIVE_DATASETS:
            recs = archive.load_archive(ds, pending=True, protocols=("authors",))["authors"]
            if recs:
                self.archived[ds] = recs
                state = archive.column_states(ds, protocols=("authors",))["authors"]
                frames.append(records_final(recs).assign(
                    source="archive" + (", in progress" if state == "in progress" else "")))
        cols = ["dataset", "method", "seed", "test_accuracy", "diverged", "source"]
        return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)

    def paper_table2(self) -> pd.DataFrame:
        """Table 2 at the paper's protocol for all four datasets (:meth:`paper_protocol_finals`; the image columns
        under the authors' protocol) beside the paper's (the authors' logs), mean (max) ± std with the runs, and
        the figure of every run as a dot (:func:`kdlib.book.plots.table2_points`)."""
        finals = self.paper_protocol_finals()
        num = table2_from_final(finals, list(DATASETS), list(METHOD_NAMES))
        ours = format_numeric(num, list(DATASETS), list(METHOD_NAMES))
        runs = num.pivot(index="method", columns="dataset", values="n").reindex(list(METHOD_NAMES))
        cols = {}
        for ds in DATASETS:
            label = DATASET_LABELS[ds]
            src = sorted(set(finals[finals.dataset == ds].source))
            cols[(label, "ours, paper protocol")] = ours[ds].where(runs[ds] > 0, "—")
            cols[(label, "runs")] = runs[ds].fillna(0).astype(int)
            cols[(label, "paper (authors' logs)")] = self.authors[ds] if ds in self.authors else "—"
            if src:
                show_markdown(f"- {label}: ours from {', '.join(src)}.")
        table = pd.DataFrame(cols).reindex(list(METHOD_NAMES)).fillna("—")
        table.index = [METHOD_LABELS[m] for m in table.index]
        for ds in DATASETS:
            part = table[[c for c in table.columns if c[0] == DATASET_LABELS[ds]]]
            part.columns = [c[1] for c in part.columns]
            show_markdown(f"**{DATASET_LABELS[ds]}**")
            show_table(part)
        if self.logs is not None and len(finals):
            plots.table2_points(finals, self.theirs, list(DATASETS), dataset_labels=DATASET_LABELS,
                                ours_label="ours, paper protocol", theirs_label="authors' logs")
            plt.show()
        self.paper = num
        return table

    def ours_beside_paper(self) -> pd.DataFrame:
        """Per dataset: our runs at this profile (exactly the configs its page ran), the archived paper-protocol
        columns where the archive holds them, and the paper's column."""
        missing = self._load_results()
        archived = {(ds, name): col for ds in ARCHIVE_DATASETS for name, col in archive_columns(ds).items()}
        side = side_by_side(table2(self.results), self.authors, extra=archived)
        if missing:
            show_markdown("No runs at this profile for: " + ", ".join(DATASET_LABELS[d] for d in missing)
                          + " (dataset unavailable, or its page was not executed).")
        if not archived:
            show_markdown("The archive of paper-protocol runs (`archive/`) is empty: no paper-protocol column yet.")
        for ds in DATASETS:
            part = side[[c for c in side.columns if c[0] == DATASET_LABELS[ds]]]
            part.columns = [c[1] for c in part.columns]
            show_markdown(f"**{DATASET_LABELS[ds]}**")
            show_table(part)
        if ("", "diverged (ours)") in side:
            show_table(side[[("", "diverged (ours)")]].rename(columns=lambda c: "diverged runs (ours)"))
        return side

    def cost(self) -> pd.DataFrame:
        """Hypergradient evaluations, full trainings and wall time per (dataset, method), from the records."""
        if len(self.results):
            self.costs = cost_table(self.results, summaries=run_summaries(self.records))
        if len(self.costs):
            show_table(cost_table_display(self.costs), index=False)
        else:
            show_markdown("No runs at this profile, so no costs.")
        return self.costs

    def paper_cost(self) -> pd.DataFrame:
        """The cost table of the archived paper-protocol runs (call after :meth:`paper_table2`): hypergradient
        evaluations and full trainings per run as counted, and the median wall time of a run, which is robust to
        the few runs that shared the machine with other work."""
        recs = [r for ds in ARCHIVE_DATASETS for r in self.archived.get(ds, [])]
        if not recs:
            show_markdown("No archived paper-protocol runs on this machine, so no costs at the paper's protocol.")
            return self.paper_costs
        self.paper_costs = cost_table(None, summaries=run_summaries(recs), wall_time="median")
        show_table(cost_table_display(self.paper_costs).rename(
            columns={"Wall time per run": "Wall time per run (median)"}), index=False)
        return self.paper_costs

    def benchmark(self) -> pd.DataFrame | None:
        """The benchmark's targets at this profile (``results/<profile>/benchmark.json``, written by
        ``make book``), or a line saying it was not run."""
        path = results_dir(self.profile, "benchmark.json")
        if not path.exists():
            show_markdown(f"Benchmarks: not run at this profile (no `{display_path(path)}`).")
            return None
        bench = json.loads(path.read_text())
        show_markdown(f"Benchmark at this profile: {benchmarks.machine_text(bench)}.")
        table = benchmarks.targets_table(bench)
        show_table(table, index=False)
        return table

    def what_we_saw(self) -> list[str]:
        """The generated findings, each computed from the tables above: the paper's protocol first (the
        archived columns and this build's synthetic runs at the paper's scale), then this build's profile."""
        paper, profile = self._paper_findings(), self._profile_findings()
        lines = []
        if paper:
            lines += ["**At the paper's protocol**", "", *paper, ""]
        if profile:
            lines += [f"**At this build's profile (`{self.profile}`)**", "", *profile]
        show_markdown("\n".join(lines) if lines else "No runs were found at this profile.")
        return lines

    @staticmethod
    def _saving_lines(costs: pd.DataFrame, where: str) -> list[str]:
        if not len(costs):
            return []
        lines = []
        for _, r in costs[costs.method == "proposed"].iterrows():
            if not (np.isfinite(r.saving_vs_gradient_evals) and np.isfinite(r.saving_vs_gradient_time)):
                continue
            ev, wt = r.saving_vs_gradient_evals, r.saving_vs_gradient_time
            g = costs[(costs.dataset == r.dataset) & (costs.method == "gradient")].seeds.iloc[0]
            lines.append(f"- {DATASET_LABELS[r.dataset]}{where}: the proposed method used {abs(ev):.0%} "
                         f"{'fewer' if ev >= 0 else 'more'} hypergradient evaluations than gradient-based "
                         f"tuning, and {abs(wt):.0%} {'less' if wt >= 0 else 'more'} wall time "
                         f"({int(r.seeds)} and {int(g)} runs).")
        return lines

    def _paper_findings(self) -> list[str]:
        """Per dataset at the paper's protocol: the gain of gradient-based tuning beside the authors', how many
        methods land within the tolerance of the authors' mean, the runs on the authors' branch, and what the
        proposed method saved."""
        def authors(ds: str, method: str) -> dict[str, float | int]:
            t = self.theirs
            return summarize(t[(t.dataset == ds) & (t.method == method)].test_accuracy)

        lines = []
        for ds in DATASETS:
            n = self.paper[self.paper.dataset == ds].set_index("method") if len(self.paper) else pd.DataFrame()
            if self.logs is not None and {"gradient", "no_distillation"} <= set(n.index[n["n"] > 0]):
                gain = n.loc["gradient", "mean"] - n.loc["no_distillation", "mean"]
                g, b = authors(ds, "gradient"), authors(ds, "no_distillation")
                lines.append(f"- {DATASET_LABELS[ds]}: gradient-based minus no distillation {gain:+.4f} "
                             f"({int(n.loc['gradient', 'n'])} and {int(n.loc['no_distillation', 'n'])} runs); in "
                             f"the authors' logs {g['mean'] - b['mean']:+.4f} ({g['n']} and {b['n']} runs).")
            if ds in self.archived and self.logs is not None:
                vs = archive.against_authors({"authors": self.archived[ds]}, self.logs, ds)
                vs = vs[np.isfinite(vs.authors)]
                if len(vs):
                    off = [f"{METHOD_LABELS[r.method]} {r.difference:+.4f} over {r.runs} run{'s' * (r.runs != 1)}"
                           for r in vs.itertuples() if not r.within]
                    lines.append(f"- {DATASET_LABELS[ds]}: {int(vs.within.sum())} of {len(vs)} archived methods "
                                 f"within {vs.tolerance.iloc[0]} of the authors' mean"
                                 + (f" (outside: {', '.join(off)})" if off else "") + ".")
                comp = archive.branch_comparison(archive.run_table({"authors": self.archived[ds]}),
                                                 archive.authors_run_table(self.logs, ds))
                for _, r in archive.agreement(comp).iterrows():
                    lines.append(f"- {DATASET_LABELS[ds]}, {METHOD_LABELS[r.method]}: {r['same branch']} of {r.runs} "
                                 "runs end on the branch of the authors' run with the same index.")
        lines += self._saving_lines(self.paper_costs, " at the paper's protocol")
        if self.logs is not None:
            lines.append("- The paper's column is regenerated from the authors' logs and matches the printed "
                         "Table 2 to every printed digit.")
        return lines

    def _profile_findings(self) -> list[str]:
        """This build's own runs at its profile: the best method, the gain, the proposed method's saving, and
        (below the paper's scale) how far tuning could move."""
        lines = []
        num = table2_numeric(self.results)
        for ds in DATASETS:
            n = num[(num.dataset == ds)].set_index("method")
            if not np.isfinite(n["mean"]).any():
                continue
            best = n["mean"].idxmax()
            lines.append(f"- {DATASET_LABELS[ds]}: best mean final accuracy **{METHOD_LABELS[best]}** "
                         f"({n.loc[best, 'mean']:.4f}, {int(n.loc[best, 'n'])} seeds); gradient-based minus no "
                         f"distillation {n.loc['gradient', 'mean'] - n.loc['no_distillation', 'mean']:+.4f}.")
        lines += self._saving_lines(self.costs, "")
        if self.profile != "paper" and lines:
            lines.append(f"- This build ran at the `{self.profile}` profile, so these columns are scaled-down runs. "
                         "Compare the ordering of the methods, not the absolute accuracies.")
            for ds in DATASETS:  # how far tuning could move: each metaparameter step is clipped to meta_lr*meta_clip
                cfg = resolve_config(ds, "gradient", self.profile, 0)
                g = self.results[(self.results.dataset == ds) & (self.results.method == "gradient")]
                if len(g):
                    steps = int(g.hypergrad_evals.max())
                    lines.append(f"- {DATASET_LABELS[ds]}: gradient-based tuning took {steps} metaparameter steps, "
                                 f"each at most {cfg.meta_lr * cfg.meta_clip:.3g}, so $\\lambda_1$ could move by "
                                 f"at most {min(1.0, steps * cfg.meta_lr * cfg.meta_clip):.2f} from its random "
                                 "start.")
        return lines

    def finish(self) -> None:
        self.banner.finish()


__all__ = ["SummaryPage"]
