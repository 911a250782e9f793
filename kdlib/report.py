"""Tables and the page banner for the book: formatting only, no experiments.

* :func:`banner`: the Markdown box every page opens with (profile, device, seeds, epochs, data source, wall
  time, kdlib version, git commit).
* :func:`table2_numeric` / :func:`table2`: the paper's Table 2 from a runner results frame (one row per
  logged step; the final accuracy of a run is its last logged step).
* :func:`cost_table`: per-method cost (hypergradient evaluations, full training runs, wall time) and the
  proposed method's saving against ``gradient``.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

METHODS: tuple[str, ...] = ("no_distillation", "naive", "random", "gradient", "hyperopt", "proposed")
DATASETS: tuple[str, ...] = ("synthetic", "fashion_mnist", "cifar10_reduced", "cifar10")
METHOD_LABELS = {"no_distillation": "Without distillation", "naive": "Naive", "random": "Random",
                 "gradient": "Gradient-based", "hyperopt": "Hyperopt", "proposed": "Proposed"}
DATASET_LABELS = {"synthetic": "Synthetic", "fashion_mnist": "Fashion-MNIST",
                  "cifar10_reduced": "Reduced CIFAR-10", "cifar10": "CIFAR-10"}

_REPO = Path(__file__).resolve().parent.parent


def git_commit(repo: str | Path | None = None) -> str:
    """``git rev-parse --short HEAD`` of the repository, or ``"unknown"``."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=str(repo or _REPO),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _fmt_seeds(seeds: Any) -> str:
    if seeds is None:
        return "—"
    if isinstance(seeds, dict):
        return ", ".join(f"{k}: {len(v) if isinstance(v, (list, tuple)) else v}" for k, v in seeds.items())
    if isinstance(seeds, int):
        return f"{seeds} (0..{seeds - 1})" if seeds > 0 else "0"
    seeds = list(seeds)
    return f"{len(seeds)} ({', '.join(map(str, seeds))})"


def _fmt_time(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def banner(profile: str, device: str, seeds: Any, epochs_or_iterations: Any, data_source: str | None,
           wall_time_s: float | None, *, title: str | None = None, extra: dict[str, Any] | None = None) -> str:
    """The Markdown banner shown at the top of every page.

    ``epochs_or_iterations`` is free text or a number (e.g. ``"2000 iterations"``, ``{"synthetic": 60}``);
    ``data_source`` says whether the data is real or which stand-in was used.
    """
    from kdlib import __version__

    if isinstance(epochs_or_iterations, dict):
        epochs = ", ".join(f"{k}: {v}" for k, v in epochs_or_iterations.items()) or "—"
    else:
        epochs = "—" if epochs_or_iterations is None else str(epochs_or_iterations)
    rows = [("profile", f"`{profile}`"), ("device", f"`{device}`"), ("seeds", _fmt_seeds(seeds)),
            ("epochs / iterations", epochs), ("data source", data_source or "—"),
            ("wall time", _fmt_time(wall_time_s)), ("kdlib", f"{__version__} (commit `{git_commit()}`)")]
    rows += [(str(k), str(v)) for k, v in (extra or {}).items()]
    head = f"**{title}** · " if title else ""
    body = " · ".join(f"**{k}**: {v}" for k, v in rows)
    return f"> {head}{body}\n"


# ------------------------------------------------------------------------------------------------ Table 2

def final_accuracy(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, method, seed): the test accuracy at the last logged step of that run."""
    need = {"dataset", "method", "seed", "step", "test_accuracy"}
    missing = need - set(results.columns)
    if missing:
        raise ValueError(f"results frame lacks column(s) {sorted(missing)}")
    df = results.dropna(subset=["test_accuracy"])
    if "phase" in df.columns:  # hyperopt search trials are not the reported run
        final_phase = df["phase"].isna() | ~df["phase"].astype(str).str.startswith("search")
        df = df[final_phase]
    df = df.sort_values(["dataset", "method", "seed", "step"], kind="stable")
    return df.groupby(["dataset", "method", "seed"], as_index=False).tail(1)[
        ["dataset", "method", "seed", "test_accuracy"]].reset_index(drop=True)


def table2_numeric(results: pd.DataFrame, datasets: Sequence[str] = DATASETS,
                   methods: Sequence[str] = METHODS) -> pd.DataFrame:
    """Long form: one row per (method, dataset) with mean, max, std (population, as the paper), n."""
    fin = final_accuracy(results)
    rows = []
    for m in methods:
        for ds in datasets:
            acc = fin.loc[(fin.method == m) & (fin.dataset == ds), "test_accuracy"].to_numpy(dtype=float)
            rows.append(dict(method=m, dataset=ds, n=int(acc.size),
                             mean=float(acc.mean()) if acc.size else np.nan,
                             max=float(acc.max()) if acc.size else np.nan,
                             std=float(acc.std(ddof=0)) if acc.size else np.nan))
    return pd.DataFrame(rows)


def format_cell(mean: float, mx: float, std: float, digits: int = 4) -> str:
    if mean is None or not np.isfinite(mean):
        return "—"
    return f"{mean:.{digits}f} ({mx:.{digits}f}) ± {std:.{digits}f}"


def table2(results: pd.DataFrame, datasets: Sequence[str] = DATASETS, methods: Sequence[str] = METHODS,
           digits: int = 4) -> pd.DataFrame:
    """Table 2: rows = methods in paper order, columns = datasets, cells ``mean (max) ± std`` of the final test
    accuracy over seeds; ``—`` where nothing was run."""
    num = table2_numeric(results, datasets, methods)
    num["cell"] = [format_cell(a, b, c, digits) for a, b, c in zip(num["mean"], num["max"], num["std"])]
    out = num.pivot(index="method", columns="dataset", values="cell").loc[list(methods), list(datasets)]
    out.index.name, out.columns.name = "method", "dataset"
    return out


def side_by_side(ours: pd.DataFrame, authors: pd.DataFrame, datasets: Sequence[str] = DATASETS,
                 methods: Sequence[str] = METHODS) -> pd.DataFrame:
    """Two formatted Table 2s (rows methods, columns datasets) interleaved: ``<dataset> · ours`` and
    ``<dataset> · paper`` columns."""
    cols = {}
    for ds in datasets:
        cols[(DATASET_LABELS.get(ds, ds), "ours")] = ours[ds] if ds in ours else "—"
        cols[(DATASET_LABELS.get(ds, ds), "paper (authors' logs)")] = authors[ds] if ds in authors else "—"
    out = pd.DataFrame(cols).loc[list(methods)]
    out.index = [METHOD_LABELS.get(m, m) for m in out.index]
    return out


# ------------------------------------------------------------------------------------------------ costs

def run_summaries(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per stored run record (``kdlib.runner.load_records``): dataset, method, seed and the summary's
    wall time (the whole run, hyperopt's search included), hypergradient evaluations and full trainings."""
    rows = []
    for rec in records:
        c, s = rec["config"], rec["summary"]
        rows.append(dict(dataset=c["dataset"], method=c["method"], seed=c["seed"],
                         hypergrad_evals=s.get("hypergrad_evals"), full_trainings=s.get("full_trainings"),
                         wall_time=s.get("wall_time"), final_accuracy=s.get("final_accuracy")))
    return pd.DataFrame(rows, columns=["dataset", "method", "seed", "hypergrad_evals", "full_trainings",
                                       "wall_time", "final_accuracy"])


def cost_table(results: pd.DataFrame, methods: Iterable[str] = METHODS,
               summaries: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (dataset, method): mean over seeds of the hypergradient evaluations, full training runs and wall
    time of a run, plus the proposed method's saving against ``gradient`` in hypergradient evaluations and
    wall time (fractions, positive = cheaper).

    From ``results`` the counters are read at each run's last logged step (they are cumulative); the logged
    wall time of a hyperopt run covers only its final training, so pass ``summaries``
    (:func:`run_summaries`) to use each run's total wall time instead."""
    cols = ["hypergrad_evals", "full_trainings", "wall_time"]
    if summaries is not None and len(summaries):
        df = summaries
    else:
        df = results.sort_values(["dataset", "method", "seed", "step"], kind="stable")
    for c in cols:
        if c not in df.columns:
            df = df.assign(**{c: np.nan})
    last = df.groupby(["dataset", "method", "seed"], as_index=False)[cols].max()
    per = last.groupby(["dataset", "method"], as_index=False).agg(
        seeds=("seed", "nunique"), hypergrad_evals=("hypergrad_evals", "mean"),
        full_trainings=("full_trainings", "mean"), wall_time_s=("wall_time", "mean"))
    order = {m: i for i, m in enumerate(methods)}
    per = per[per.method.isin(order)]
    per["saving_vs_gradient_evals"] = np.nan
    per["saving_vs_gradient_time"] = np.nan
    for ds, grp in per.groupby("dataset"):
        g = grp[grp.method == "gradient"]
        p = grp[grp.method == "proposed"]
        if len(g) and len(p):
            gi, pi = g.index[0], p.index[0]
            if per.at[gi, "hypergrad_evals"] > 0:
                per.at[pi, "saving_vs_gradient_evals"] = 1 - per.at[pi, "hypergrad_evals"] / per.at[gi, "hypergrad_evals"]
            if per.at[gi, "wall_time_s"] > 0:
                per.at[pi, "saving_vs_gradient_time"] = 1 - per.at[pi, "wall_time_s"] / per.at[gi, "wall_time_s"]
    per["_o"] = per.method.map(order)
    return per.sort_values(["dataset", "_o"]).drop(columns="_o").reset_index(drop=True)


def to_markdown(df: pd.DataFrame, index: bool = True, floatfmt: str = ".4f") -> str:
    """A pipe table without the optional ``tabulate`` dependency."""
    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "—" if not np.isfinite(v) else format(float(v), floatfmt)
        return str(v)

    cols = [(" · ".join(map(str, c)) if isinstance(c, tuple) else str(c)) for c in df.columns]
    header = ([str(df.index.name or "")] if index else []) + cols
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for idx, row in df.iterrows():
        cells = ([str(idx)] if index else []) + [fmt(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ notebook helpers

def repo_root() -> Path:
    """The repository root (the folder holding ``kdlib/``)."""
    return _REPO


def results_dir(profile: str, name: str) -> Path:
    """``<base>/<profile>/<name>`` where base is ``$KDLIB_RESULTS`` or ``<repo>/results``."""
    import os

    base = Path(os.environ["KDLIB_RESULTS"]) if os.environ.get("KDLIB_RESULTS") else _REPO / "results"
    return base / profile / name


def resolve_seeds(seeds: Any, profile: str, dataset: str) -> list[int]:
    """``None`` -> the profile's seed count for ``dataset``; an int n -> 0..n-1; a list is kept."""
    if seeds is None:
        from kdlib.experiments.profiles import profile_seeds

        seeds = profile_seeds(profile, dataset)
    return list(range(int(seeds))) if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]


def scale_text(profile: str, dataset: str) -> str:
    """What one run of ``dataset`` does at ``profile``: iterations (synthetic) or epochs and subset sizes."""
    from kdlib.experiments.profiles import resolve_config

    cfg = resolve_config(dataset, "gradient", profile)
    if dataset == "synthetic":
        return f"{cfg.iterations} iterations (logged every {cfg.log_every})"
    sizes = []
    if cfg.n_train:
        sizes.append(f"{cfg.n_train} train images")
    if cfg.n_test:
        sizes.append(f"{cfg.n_test} test images")
    return f"{cfg.epochs} epochs" + (f" on {', '.join(sizes)}" if sizes else " on the full data")


class PageBanner:
    """The banner of a notebook page: shown at once, then updated in place by :meth:`finish` with the wall
    time (and anything learnt during the run, such as the data source)."""

    def __init__(self, profile: str, device: str, seeds: Any, epochs_or_iterations: Any,
                 data_source: str | None, title: str | None = None, **extra: Any) -> None:
        import time

        from IPython.display import Markdown, display

        self.kw = dict(profile=profile, device=device, seeds=seeds, epochs_or_iterations=epochs_or_iterations,
                       data_source=data_source, title=title, extra=extra or None)
        self.t0 = time.perf_counter()
        self._handle = display(Markdown(banner(wall_time_s=None, **self.kw)), display_id=True)

    def finish(self, **changes: Any) -> str:
        """Update the banner (wall time since creation, plus ``changes`` to any field) and return its text."""
        import time

        from IPython.display import Markdown

        extra = changes.pop("extra", None)
        if extra:
            self.kw["extra"] = {**(self.kw.get("extra") or {}), **extra}
        self.kw.update(changes)
        text = banner(wall_time_s=time.perf_counter() - self.t0, **self.kw)
        if self._handle is not None:
            self._handle.update(Markdown(text))
        return text


def show_markdown(text: str) -> None:
    """Display generated Markdown (used for the "what we saw" paragraphs, whose numbers come from code)."""
    from IPython.display import Markdown, display

    display(Markdown(text))
