"""The page banner and the small helpers every notebook of the book uses (formatting only, no experiments).

* :func:`banner` / :class:`PageBanner`: the Markdown box a page opens with (profile, device, seeds, epochs,
  data source, wall time, kdlib version, git commit).
* :func:`resolve_seeds`, :func:`scale_text`, :func:`results_dir` (:func:`results_root`): what a page runs, and
  where it caches it.
* :func:`travel_text`: the metaparameter steps and travel of an image run at a profile, beside the paper's.
* :func:`show_markdown`, :func:`show_table`: generated text and tables, with display labels, no index noise.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from kdlib import __version__
from kdlib.analysis.labels import DATASET_LABELS, dataset_label, teacher_label
from kdlib.analysis.provenance import REPO_ROOT, display_path, head_commit
from kdlib.experiments.profiles import PAPER_PROTOCOL, meta_steps, profile_seeds, resolve_config
from kdlib.experiments.runner import plan
from kdlib.names import METHOD_NAMES
from kdlib.paths import data_root


def _fmt_seeds(seeds: Any) -> str:
    if seeds is None:
        return "—"
    if isinstance(seeds, dict):
        return ", ".join(f"{dataset_label(k)}: {len(v) if isinstance(v, (list, tuple)) else v}"
                         for k, v in seeds.items())
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


def source_text(text: str | None) -> str:
    """A data-source description for a reader: any absolute path in it is replaced by its form relative to the
    data root (``<data root>/...``) or the repository, or by its last component."""
    if not text:
        return "—"
    roots = {"[data root]": data_root()}
    words = []
    for word in str(text).split(" "):
        core = word.strip("()[],;:'\"`")
        if core.startswith(("/", "~")) and len(core) > 1:
            word = word.replace(core, display_path(core, roots))
        words.append(word)
    return " ".join(words)


def banner(profile: str, device: str, seeds: Any, epochs_or_iterations: Any, data_source: str | None,
           wall_time_s: float | None, *, title: str | None = None, extra: dict[str, Any] | None = None) -> str:
    """The Markdown banner shown at the top of every page.

    ``epochs_or_iterations`` is free text or a number (e.g. ``"2000 iterations"``, ``{"synthetic": 60}``);
    ``data_source`` says whether the data is real or which stand-in was used (local paths are shown relative
    to the data root, :func:`source_text`).
    """
    if isinstance(epochs_or_iterations, dict):
        epochs = ", ".join(f"{dataset_label(k)}: {v}" for k, v in epochs_or_iterations.items()) or "—"
    else:
        epochs = "—" if epochs_or_iterations is None else str(epochs_or_iterations)
    rows = [("profile", f"`{profile}`"), ("device", f"`{device}`"), ("seeds", _fmt_seeds(seeds)),
            ("epochs / iterations", epochs), ("data source", source_text(data_source)),
            ("wall time", _fmt_time(wall_time_s)), ("kdlib", f"{__version__} (commit `{head_commit()}`)")]
    rows += [(str(k), str(v)) for k, v in (extra or {}).items()]
    head = f"**{title}** · " if title else ""
    body = " · ".join(f"**{k}**: {v}" for k, v in rows)
    return f"> {head}{body}\n"


def repo_root() -> Path:
    """The repository root (the folder holding ``kdlib/``)."""
    return REPO_ROOT


def results_root(profile: str) -> Path:
    """``<base>/<profile>`` where base is ``$KDLIB_RESULTS`` or ``<repo>/results``: a profile's results cache."""
    base = Path(os.environ["KDLIB_RESULTS"]) if os.environ.get("KDLIB_RESULTS") else REPO_ROOT / "results"
    return base / profile


def results_dir(profile: str, name: str) -> Path:
    """``<base>/<profile>/<name>`` (:func:`results_root`)."""
    return results_root(profile) / name


def resolve_seeds(seeds: Any, profile: str, dataset: str) -> list[int]:
    """``None`` -> the profile's seed count for ``dataset``; an int n -> 0..n-1; a list is kept."""
    if seeds is None:
        seeds = profile_seeds(profile, dataset)
    return list(range(int(seeds))) if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]


# worker processes for a page's runs (one intra-op thread each; the records do not depend on the count)
PAGE_WORKERS: int = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                               else (os.cpu_count() or 1)))

# the overrides of each dataset page's headline runs (the synthetic page runs the authors' data variant)
PAGE_OVERRIDES: dict[str, dict[str, Any]] = {"synthetic": {"variant": "authors"}}


def page_configs(dataset: str, profile: str, seeds: Any = None, device: str = "cpu",
                 overrides: dict[str, Any] | None = None) -> list:
    """The configs of a dataset page's headline runs (six methods x the page's seeds): the page runs exactly
    these and the summary page reads exactly their records, so the two can never show different runs."""
    merged = {**PAGE_OVERRIDES.get(dataset, {}), **(overrides or {})}
    return plan(dataset, list(METHOD_NAMES), resolve_seeds(seeds, profile, dataset), profile, device, merged)


def scale_text(profile: str, dataset: str) -> str:
    """What one run of ``dataset`` does at ``profile``: iterations (synthetic) or epochs and subset sizes."""
    cfg = resolve_config(dataset, "gradient", profile)
    if dataset == "synthetic":
        return f"{cfg.iterations} iterations (logged every {cfg.log_every})"
    sizes = []
    if cfg.n_train:
        sizes.append(f"{cfg.n_train} train images")
    if cfg.n_test:
        sizes.append(f"{cfg.n_test} test images")
    return f"{cfg.epochs} epochs" + (f" on {', '.join(sizes)}" if sizes else " on the full data")


def travel_text(profile: str, dataset: str) -> str:
    """Scale of one gradient-based run of an image ``dataset`` at ``profile`` against the paper's (Sec. 4.2):
    epochs, images, metaparameter steps, ``meta_lr`` and the maximal travel ``meta_lr * meta_clip * steps``
    (the travel rule of :mod:`kdlib.experiments.profiles`)."""
    cfg = resolve_config(dataset, "gradient", profile)
    paper = resolve_config(dataset, "gradient", "paper")
    steps = meta_steps(dataset, cfg.epochs, cfg.batch_size, cfg.n_train)
    p_steps = meta_steps(dataset, paper.epochs, paper.batch_size, paper.n_train)
    travel, p_travel = cfg.meta_lr * cfg.meta_clip * steps, paper.meta_lr * paper.meta_clip * p_steps
    images = f"{cfg.n_train} images" if cfg.n_train else "all images"
    text = (f"{cfg.epochs} epochs on {images} (split 9:1 into train and validation), {steps} metaparameter steps of "
            f"at most `meta_lr` × `meta_clip` = {cfg.meta_lr:.4g} × {cfg.meta_clip:g} each (maximal travel {travel:.4g})")
    if profile == "paper":
        return text + ": the paper's protocol."
    text += f"; the paper: {paper.epochs} epochs, {p_steps} steps at `meta_lr` = {paper.meta_lr:g} (travel {p_travel:.4g})"
    if abs(cfg.meta_lr - PAPER_PROTOCOL[dataset]["meta_lr"]) > 1e-12:
        text += (f". Travel rule: `meta_lr` = {paper.meta_lr:g} × {p_steps} / {steps}, so that the tuning methods can "
                 "move (λ1, T) as far as at the paper's scale")
    return text + "."


class PageBanner:
    """The banner of a notebook page: shown at once, then updated in place by :meth:`finish` with the wall
    time (and anything learnt during the run, such as the data source)."""

    def __init__(self, profile: str, device: str, seeds: Any, epochs_or_iterations: Any,
                 data_source: str | None, title: str | None = None, **extra: Any) -> None:
        self.kw = dict(profile=profile, device=device, seeds=seeds, epochs_or_iterations=epochs_or_iterations,
                       data_source=data_source, title=title, extra=extra or None)
        self.t0 = time.perf_counter()
        self._handle = display(Markdown(banner(wall_time_s=None, **self.kw)), display_id=True)

    def finish(self, **changes: Any) -> str:
        """Update the banner (wall time since creation, plus ``changes`` to any field) and return its text."""
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
    display(Markdown(text))


def to_markdown(df: pd.DataFrame, index: bool = True, floatfmt: str = ".4f") -> str:
    """A pipe table without the optional ``tabulate`` dependency (NaN shown as an em dash, integers without
    decimals when stored as integers, ``|`` inside a cell escaped)."""
    def fmt(v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, (float, np.floating)):
            if not np.isfinite(v):
                return "—"
            return format(float(v), floatfmt)
        return str(v).replace("|", "\\|")

    cols = [(" · ".join(str(p) for p in c if p) if isinstance(c, tuple) else str(c)) for c in df.columns]
    header = [c.replace("|", "\\|") for c in ([str(df.index.name or "")] if index else []) + cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for idx, row in df.iterrows():
        cells = ([fmt(idx if not isinstance(idx, tuple) else " · ".join(map(str, idx)))] if index else []) \
            + [fmt(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def show_table(df: pd.DataFrame, index: bool = True, floatfmt: str = ".4f") -> None:
    """Display ``df`` as a Markdown table: wraps to the column's width (no clipped wide frame), NaN as —."""
    show_markdown(to_markdown(df, index=index, floatfmt=floatfmt))


def teacher_table(teacher: dict[str, Any]) -> pd.DataFrame:
    """A run record's ``summary.teacher`` for a reader: name, source (no local path), test accuracy and
    agreement with the training labels ("not recorded" where the teacher never saw the test images)."""
    def num(v: Any) -> str:
        return "not recorded" if v is None or not np.isfinite(float(v)) else f"{float(v):.4f}"
    return pd.DataFrame([{"teacher": teacher_label(teacher.get("name", "—")), "source": source_text(teacher.get("source")),
                          "test accuracy": num(teacher.get("test_accuracy")),
                          "agreement with the training labels": num(teacher.get("train_agreement"))}])


def error_line(err: BaseException, dataset: str) -> str:
    """The first line of a data error for a reader: local paths shortened (:func:`source_text`), the dataset's key
    replaced by its label, the list of searched folders left out."""
    text = source_text(str(err).splitlines()[0]).split(" Searched:")[0].rstrip(". ")
    label = DATASET_LABELS.get(dataset, dataset)
    return text.replace(f"{dataset}:", f"{label}:").replace(f"'{dataset}'", label)

