"""The authors' own run logs, parsed, and the paper's Table 2 regenerated from them.

The authors (Intelligent-Systems-Phystech/Gorpinich-BS-Thesis, pinned commit :data:`PINNED_COMMIT`) logged
every run as one JSON line ``{"results": [{"epoch", "accuracy", "lambda1", "temp", ...}, ...], "version"}``
in ``log/*.jsonl``. Each Table 2 cell is the mean, and in brackets the max, over the runs (lines) of a file
of the *last* logged accuracy; :data:`TABLE2_FILES` maps the cells to the files (see the README of the data
folder).

Convention. In the authors' ``param_loss`` (code/funcs.py, code/synthetic_funcs.py) ``lambda1`` weights the
**distillation** term, the opposite of the paper and of kdlib. Every log written through ``param_loss`` is
converted on reading, ``lambda1_ours = 1 - lambda1_theirs``: the gradient-based, proposed ("splines") and
hyperopt logs of every dataset, and the random baseline of the image datasets (``cifar_base`` also calls
``param_loss``). The synthetic baselines (``synthetic_base``) already use the paper's convention and are
left as they are. The raw value stays available in the ``lambda1_theirs`` column.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from kdlib.analysis.final import summarize
from kdlib.analysis.labels import DATASETS, METHODS
from kdlib.analysis.table2 import format_cell
from kdlib.fileio import NETWORK_ERRORS, atomic_write_bytes, download, file_sha256
from kdlib.paths import data_root, shared_data_dir

REPO = "Intelligent-Systems-Phystech/Gorpinich-BS-Thesis"
PINNED_COMMIT = "885af35bfdf96da070a43fa7d7c8916854d05d6f"
RAW_URL = f"https://raw.githubusercontent.com/{REPO}/{PINNED_COMMIT}/log/{{name}}"

# Table 2 cell -> log file (None: the paper reports no value for that cell)
TABLE2_FILES: dict[str, dict[str, str | None]] = {
    "synthetic": {
        "no_distillation": "synthetic_exp8_nodistil.jsonl",
        "naive": "synthetic_exp8_distil.jsonl",
        "random": "synthetic_exp8_random.jsonl",
        "gradient": "synthetic_exp8_opt.jsonl",
        "hyperopt": "synthetic_exp8_hyperopt.jsonl",
        "proposed": "synthetic_exp8_splines_esize_10_period_2.jsonl",
    },
    "fashion_mnist": {
        "no_distillation": "exp4_full_fmnist__nodistil.jsonl",
        "naive": "exp4_full_fmnist__distil.jsonl",
        "random": "exp4_full_fmnist__random.jsonl",
        "gradient": "exp4_full_fmnist__opt.jsonl",
        "hyperopt": "exp3_full_fmnist__hyperopt.jsonl",  # 40 epochs, the only FMNIST hyperopt log
        "proposed": "exp4_full_fmnist__splines.jsonl",
    },
    "cifar10_reduced": {
        "no_distillation": "exp33_nodistil.jsonl",
        "naive": "exp33_distil.jsonl",
        "random": "exp33_random.jsonl",
        "gradient": "exp33_opt.jsonl",
        "hyperopt": "exp33_hyperopt.jsonl",
        "proposed": "exp33_splines.jsonl",
    },
    "cifar10": {
        "no_distillation": "exp20_full_cifar__nodistil.jsonl",
        "naive": "exp20_full_cifar__distil.jsonl",
        "random": "exp20_full_cifar__random.jsonl",
        "gradient": "exp20_full_cifar__opt.jsonl",
        "hyperopt": None,  # the paper has no hyperopt value for full CIFAR-10
        "proposed": "exp20_full_cifar__splines.jsonl",
    },
}

# The e1/e2 sweeps of Fig. 6 (synthetic): (e1, e2) -> file; e1 = m_e, e2 = (period - 1) * m_e.
SWEEP_FILES: dict[tuple[int, int], str] = {
    (10, 10): "synthetic_exp8_splines_esize_10_period_2.jsonl",
    (100, 100): "synthetic_exp8_splines_esize_100_period_2.jsonl",
    (500, 500): "synthetic_exp8_splines_esize_500_period_2.jsonl",
    (1000, 1000): "synthetic_exp8_splines_esize_1000_period_2.jsonl",
    (10, 20): "synthetic_exp8_splines_esize_10_period_3.jsonl",
    (10, 40): "synthetic_exp8_splines_esize_10_period_5.jsonl",
    (10, 90): "synthetic_exp8_splines_esize_10_period_10.jsonl",
}

# The values printed in the paper's Table 2 (mean; None where the paper has no value).
PAPER_TABLE2: dict[str, dict[str, float | None]] = {
    "synthetic": dict(no_distillation=0.630, naive=0.630, random=0.6425, gradient=0.770, hyperopt=0.771,
                      proposed=0.7635),
    "fashion_mnist": dict(no_distillation=0.8734, naive=0.8737, random=0.7945, gradient=0.8816,
                          hyperopt=0.8741, proposed=0.8817),
    "cifar10_reduced": dict(no_distillation=0.5483, naive=0.5489, random=0.5411, gradient=0.5711,
                            hyperopt=0.5483, proposed=0.5705),
    "cifar10": dict(no_distillation=0.6554, naive=0.6583, random=0.6419, gradient=0.7043, hyperopt=None,
                    proposed=0.7036),
}

CURVE_COLUMNS = ["dataset", "method", "file", "run", "step", "accuracy", "lambda1", "temperature",
                 "lambda1_theirs"]


class AuthorsLogsMissing(FileNotFoundError):
    """The authors' logs are neither in the data root nor downloadable."""


def _data_root() -> Path:
    return Path(data_root())


def _candidate_dirs(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        return [Path(root) / "authors" / "logs", Path(root)]
    out = [_data_root() / "authors" / "logs"]
    shared = shared_data_dir()
    if shared is not None:
        out.append(Path(shared) / "authors" / "logs")
    return out


def find_logs_dir(root: str | os.PathLike | None = None) -> Path | None:
    """The first folder holding the authors' ``*.jsonl`` logs: ``<root>/authors/logs`` (``root`` defaults to
    the kdlib data root, ``$KDLIB_DATA``), then the project's ``../shared/data``; ``None`` if none has them."""
    for d in _candidate_dirs(root):
        if d.is_dir() and any(d.glob("*.jsonl")):
            return d
    return None


def logs_dir(root: str | os.PathLike | None = None, download: bool = False) -> Path:
    """Like :func:`find_logs_dir` but raises :class:`AuthorsLogsMissing` naming the fix; with ``download``
    fetches the Table 2 files from the pinned commit into ``<data root>/authors/logs`` first."""
    d = find_logs_dir(root)
    if d is not None:
        return d
    if download:
        target = (Path(root) if root is not None else _data_root()) / "authors" / "logs"
        fetch_logs(target)
        return target
    raise AuthorsLogsMissing(
        "the authors' run logs were not found (looked in: "
        + ", ".join(str(p) for p in _candidate_dirs(root))
        + "). Set KDLIB_DATA to a data root holding authors/logs/*.jsonl, or call "
          "kdlib.analysis.authors_logs.fetch_logs() (needs internet) to download them from "
          f"{REPO}@{PINNED_COMMIT[:7]}.")


def table2_file_names() -> list[str]:
    names = {f for cols in TABLE2_FILES.values() for f in cols.values() if f}
    names.update(SWEEP_FILES.values())
    return sorted(names)


def fetch_logs(target: str | os.PathLike | None = None, names: Iterable[str] | None = None,
               timeout: float = 30.0) -> Path:
    """Download the logs behind Table 2 (and Fig. 6) from the pinned commit into ``target``
    (default ``<data root>/authors/logs``). Raises :class:`AuthorsLogsMissing` with a clear message when
    there is no network."""
    target = Path(target) if target is not None else _data_root() / "authors" / "logs"
    names = list(names) if names is not None else table2_file_names()
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        dest = target / name
        if dest.exists():
            continue
        url = RAW_URL.format(name=name)
        try:
            data = download(url, timeout)
        except NETWORK_ERRORS as exc:
            raise AuthorsLogsMissing(
                f"could not download {url} ({exc}). There is no network access, or the host is blocked. "
                f"Copy the authors' logs (log/*.jsonl of {REPO} at commit {PINNED_COMMIT}) into {target} "
                f"by hand, or set KDLIB_DATA to a data root that holds authors/logs.") from exc
        atomic_write_bytes(dest, data)
    return target


sha256 = file_sha256  # the SHA-256 of a log file (kdlib.fileio), under its old name


# ----------------------------------------------------------------------------------------------- parsing

@dataclass
class Run:
    """One logged run (one JSON line)."""

    results: list[dict]
    version: str | None


def read_jsonl(path: str | os.PathLike) -> list[Run]:
    """Parse one authors' log file into runs; blank lines are skipped, malformed lines raise ``ValueError``
    naming the file and line."""
    runs: list[Run] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("results"), list):
                raise ValueError(f"{path}:{lineno}: expected an object with a 'results' list")
            for r in obj["results"]:
                if "accuracy" not in r or "epoch" not in r:
                    raise ValueError(f"{path}:{lineno}: every result needs 'epoch' and 'accuracy'")
            runs.append(Run(results=obj["results"], version=obj.get("version")))
    return runs


def uses_authors_convention(dataset: str, method: str) -> bool:
    """True if this log's ``lambda1`` weights the distillation term (written through ``param_loss``)."""
    if method in ("gradient", "proposed", "hyperopt"):
        return True
    return method == "random" and dataset != "synthetic"


def parse_log(path: str | os.PathLike, dataset: str = "", method: str = "",
              convert: bool | None = None) -> pd.DataFrame:
    """Tidy per-step curves of one log file, columns :data:`CURVE_COLUMNS`.

    ``step`` is the logged ``epoch`` field (an iteration for synthetic, an epoch for images). ``lambda1`` is in
    kdlib's convention (weight of the classification term): converted as ``1 - lambda1_theirs`` when
    ``convert`` is true (default: :func:`uses_authors_convention`). Missing metaparameters are NaN.
    """
    path = Path(path)
    if convert is None:
        convert = uses_authors_convention(dataset, method)
    # the image baselines log no metaparameters; their values are fixed by the protocol
    fixed = {"no_distillation": (1.0, np.nan), "naive": (0.5, 1.0)}.get(method, (np.nan, np.nan))
    rows = []
    for run_id, run in enumerate(read_jsonl(path)):
        for r in run.results:
            theirs = r.get("lambda1")
            theirs = float(theirs) if theirs is not None else np.nan
            temp = float(r["temp"]) if r.get("temp") is not None else fixed[1]
            rows.append(dict(dataset=dataset, method=method, file=path.name, run=run_id, step=int(r["epoch"]),
                             accuracy=float(r["accuracy"]),
                             lambda1=(1.0 - theirs) if convert else (fixed[0] if np.isnan(theirs) else theirs),
                             temperature=temp,
                             lambda1_theirs=theirs))
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def loss_ratios(path: str | os.PathLike, epoch: int = 0) -> list[float]:
    """Per run of one log file, its logged validation loss over its test loss at ``epoch`` (the tuned methods'
    logs hold both; the baselines', which have no D_val, do not: an empty list)."""
    out = []
    for run in read_jsonl(path):
        row = next((r for r in run.results if int(r["epoch"]) == epoch), None)
        if row is not None and row.get("val loss") is not None and row.get("test loss"):
            out.append(float(row["val loss"]) / float(row["test loss"]))
    return out


def extrapolation_extremes(root: str | os.PathLike | None = None) -> dict[str, float]:
    """Smallest and largest logged ``lambda1`` (the authors' convention) and ``temp`` over the linear-trajectory
    ("splines") runs behind the paper (synthetic exp8 and reduced-CIFAR exp33, including the e1/e2 sweeps):
    values outside the box show that their extrapolations were not clamped."""
    logs = find_logs_dir(root)
    if logs is None:
        raise FileNotFoundError("the authors' logs are not on this machine (see kdlib.analysis.authors_logs.fetch_logs)")
    lam, temp = [], []
    for path in sorted([*logs.glob("synthetic_exp8_splines*.jsonl"), *logs.glob("exp33_splines*.jsonl")]):
        for run in read_jsonl(path):
            lam += [float(r["lambda1"]) for r in run.results if r.get("lambda1") is not None]
            temp += [float(r["temp"]) for r in run.results if r.get("temp") is not None]
    return dict(lambda1_min=min(lam), lambda1_max=max(lam), temperature_min=min(temp), temperature_max=max(temp))


def final_accuracies(path: str | os.PathLike) -> np.ndarray:
    """The last logged accuracy of every run (line) of a file (NaN where a run logged a non-number; such a
    run counts as diverged in :func:`kdlib.analysis.final.summarize`)."""
    def last(run: Run) -> float:
        v = run.results[-1]["accuracy"]
        return float(v) if v is not None else np.nan
    return np.array([last(run) for run in read_jsonl(path) if run.results], dtype=float)


def _table2_logs(root: str | os.PathLike | None, datasets: Iterable[str], methods: Iterable[str],
                 download: bool) -> Iterable[tuple[str, str, Path]]:
    """(dataset, method, path) of every Table 2 log of ``datasets`` x ``methods`` (cells with no log left out)."""
    d = logs_dir(root, download=download)
    for ds in datasets:
        for m in methods:
            name = TABLE2_FILES[ds][m]
            if name is not None:
                yield ds, m, d / name


def final_table(root: str | os.PathLike | None = None, datasets: Iterable[str] = DATASETS,
                methods: Iterable[str] = METHODS, download: bool = False) -> pd.DataFrame:
    """The final accuracy of every run behind Table 2: columns dataset, method, run (line of the log),
    test_accuracy (NaN for a run that logged a non-number)."""
    rows = [dict(dataset=ds, method=m, run=i, test_accuracy=float(a))
            for ds, m, path in _table2_logs(root, datasets, methods, download)
            for i, a in enumerate(final_accuracies(path))]
    return pd.DataFrame(rows, columns=["dataset", "method", "run", "test_accuracy"])


def curves(root: str | os.PathLike | None = None, datasets: Iterable[str] = DATASETS,
           methods: Iterable[str] = METHODS, download: bool = False) -> pd.DataFrame:
    """Per-step curves of every Table 2 log as one tidy DataFrame (see :func:`parse_log`)."""
    frames = [parse_log(path, dataset=ds, method=m) for ds, m, path in _table2_logs(root, datasets, methods, download)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CURVE_COLUMNS)


def sweep_curves(root: str | os.PathLike | None = None, download: bool = False) -> pd.DataFrame:
    """Curves of the synthetic e1/e2 sweep logs (Fig. 6), with ``e1``/``e2`` columns."""
    d = logs_dir(root, download=download)
    frames = []
    for (e1, e2), name in SWEEP_FILES.items():
        if not (d / name).exists():
            continue
        df = parse_log(d / name, dataset="synthetic", method="proposed")
        df["e1"], df["e2"] = e1, e2
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CURVE_COLUMNS + ["e1", "e2"])


def table2_numeric(root: str | os.PathLike | None = None, download: bool = False) -> pd.DataFrame:
    """Table 2 regenerated from the logs, long form: one row per (dataset, method) with mean, max, std, n and
    the source file; cells with no log (full CIFAR-10 hyperopt) have NaN and ``file=None``."""
    d = logs_dir(root, download=download)
    rows = []
    for ds in DATASETS:
        for m in METHODS:
            name = TABLE2_FILES[ds][m]
            stats = summarize(final_accuracies(d / name)) if name else summarize(np.array([]))
            rows.append(dict(dataset=ds, method=m, file=name, **stats))
    return pd.DataFrame(rows)


def table2(root: str | os.PathLike | None = None, download: bool = False, digits: int = 4) -> pd.DataFrame:
    """Table 2 as the paper lays it out: rows = methods, columns = datasets, cells ``mean (max) ± std``."""
    num = table2_numeric(root, download=download)
    num["cell"] = [format_cell(a, b, c, digits) for a, b, c in zip(num["mean"], num["max"], num["std"])]
    out = num.pivot(index="method", columns="dataset", values="cell")
    return out.loc[list(METHODS), list(DATASETS)]


def paper_table2() -> pd.DataFrame:
    """The printed Table 2 means (rows methods, columns datasets; NaN where the paper is empty)."""
    return pd.DataFrame({ds: {m: (np.nan if v is None else v) for m, v in col.items()}
                         for ds, col in PAPER_TABLE2.items()}).loc[list(METHODS), list(DATASETS)]
