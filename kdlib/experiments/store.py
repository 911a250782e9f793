"""The config-keyed run store: one JSON record per finished run, under ``<out>/runs/<key>.json``.

Key: ``{dataset}__{method}__seed{k}__{hash}``, where ``hash`` is the first 16 hex digits of the SHA-256 of the
canonical JSON of the resolved config (sorted keys, no NaN) and the number of intra-op threads the run used.
Two fields are left out of the hash because they cannot change a result: ``data_root`` (where the same files
are read from; the data actually used is recorded in ``summary.data_source``) and ``download`` (whether a
missing file may be fetched). ``device`` is kept, reduced to its type (``cuda:0`` and ``cuda:1`` are one
device type; ``cpu`` and ``cuda`` give different floating-point results). Fields added to the schema after
store version 2 (:data:`STORE_V2_FIELDS`; :data:`HASH_OMITTED_AT_DEFAULT` lists them with their defaults) enter the
hash only when they differ from their default, so
the records written before them keep their keys. The thread count is in the key
because a CPU run's result depends on it (reductions are split differently), and so is a CPU-kernel pin
(:mod:`kdlib.cpu_kernels`) when one is in effect: a pinned run is another cell than a native one.

Records of different configs coexist; readers ask for the configs they want (:func:`load_records`,
:func:`load_results`) and never get others. ``results.csv`` (every logged step of every record, with its
``config_hash``) and ``config.json`` (one entry per record) are derived from ``runs/`` alone by
:func:`aggregate`, atomically, under a lock. Every file is written to a unique temporary file and moved in
place with ``os.replace``, so concurrent writers never leave a half-written or mixed file. A record that
cannot be read or lacks the required structure is moved to ``runs/.damaged/`` with a warning (and recomputed
by the next run). JSON is standard: NaN and infinities are written as ``null``.

Record layout (contract 2)::

    {"key", "config_hash", "config": {...}, "history": [...], "summary": {"status": "ok" | "diverged",
     "final_accuracy": float | null, ...}, "provenance": {"kdlib_version", "commit", "torch", "cpu_capability",
     "cpu_kernels", "threads", "machine", "created"}}
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import re
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from kdlib import __version__, cpu_kernels, precision
from kdlib.analysis.final import RUN_KEYS, final_rows
from kdlib.analysis.final import summarize as summarize_final
from kdlib.errors import ConfigError, OutputDirError
from kdlib.experiments.config import ExperimentConfig, field_names
from kdlib.experiments.profiles import profile_seeds, resolve_config
from kdlib.fileio import FILE_MODE, atomic_write_text  # atomic_write_text: also importable from here
from kdlib.names import ALL_METHOD_NAMES, METHOD_NAMES, STATUSES

STORE_VERSION = 2
HASH_EXCLUDED = ("data_root", "download")  # cannot change a result (see the module docstring)
# the config fields of store version 2: every field added to the schema after them (temperature_param, engine,
# and any new knob of the run settings) enters the hash only when it differs from its default
STORE_V2_FIELDS: frozenset[str] = frozenset({
    "dataset", "method", "seed", "profile", "device", "variant", "holdout", "n_train", "n_test", "split_seed",
    "shuffle", "data_root", "download", "teacher", "teacher_epochs", "iterations", "epochs", "batch_size", "lr",
    "lr_step_epochs", "lr_gamma", "t_val", "log_every", "eval_every", "optimizer", "momentum", "nesterov",
    "weight_decay", "betas", "meta_lr", "meta_clip", "estimator", "unroll_steps", "e1", "e2", "proposed_reset",
    "clamp_extrapolation", "random_law", "hyperopt_evals", "init_lambda1", "init_temperature", "init_law",
    "fd_virtual_lr", "loss_form", "t2_scaling", "extra"})
HASH_OMITTED_AT_DEFAULT: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)
                                           if f.name not in STORE_V2_FIELDS}
RESULT_COLUMNS = ["dataset", "method", "seed", "profile", "variant", "holdout", "config_hash", "threads", "status",
                  "step", "epoch", "test_accuracy", "val_accuracy", "val_loss", "lambda1", "temperature",
                  "hypergrad_evals", "full_trainings", "wall_time", "nan_skipped", "phase", "lr"]
RUNS = "runs"
PARTIAL = ".partial"
_KEY = re.compile(r"__seed\d+__[0-9a-f]{16}$")
DAMAGED = ".damaged"


# ------------------------------------------------------------------------------------------------ JSON
def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as None, tuples as lists and numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    """Standard JSON (``allow_nan=False``; NaN/inf become null)."""
    return json.dumps(json_safe(obj), indent=indent, sort_keys=True, allow_nan=False)


# ------------------------------------------------------------------------------------------------ keys
def run_threads(cfg: ExperimentConfig, threads: int) -> int:
    """The intra-op threads a run of ``cfg`` uses: 1 for the synthetic problem (a few hundred numbers per
    tensor; the batched engine pins it to 1), else ``threads``."""
    return 1 if cfg.dataset == "synthetic" else int(threads)


def hashed_config(cfg: ExperimentConfig | dict[str, Any]) -> dict[str, Any]:
    """The part of a config that can change a result (see the module docstring)."""
    d = cfg.to_dict() if isinstance(cfg, ExperimentConfig) else dict(cfg)
    for k in HASH_EXCLUDED:
        d.pop(k, None)
    for k, default in HASH_OMITTED_AT_DEFAULT.items():
        if d.get(k, default) == default:
            d.pop(k, None)
    d["device"] = str(d.get("device", "cpu")).split(":")[0]
    return json_safe(d)


def config_hash(cfg: ExperimentConfig | dict[str, Any], threads: int, kernels: str = cpu_kernels.NATIVE) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of the hashed config, the thread count and, when not
    ``"native"``, the CPU-kernel pin (so native records keep the keys they had before pins existed)."""
    parts: dict[str, Any] = {"config": hashed_config(cfg), "threads": int(threads), "store": STORE_VERSION}
    if cpu_kernels.check_name(kernels) != cpu_kernels.NATIVE:
        parts["cpu_kernels"] = kernels
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def record_key(cfg: ExperimentConfig, threads: int = 1) -> str:
    """``{dataset}__{method}__seed{k}__{hash}`` of the run of ``cfg`` at ``threads`` requested threads, under the
    CPU kernels of this process (:func:`kdlib.cpu_kernels.in_effect`)."""
    return f"{cfg.key()}__{config_hash(cfg, run_threads(cfg, threads), cpu_kernels.in_effect())}"


def record_path(out_dir: str | os.PathLike, cfg: ExperimentConfig, threads: int = 1) -> Path:
    return Path(out_dir) / RUNS / f"{record_key(cfg, threads)}.json"


def checkpoint_dir(out_dir: str | os.PathLike) -> Path:
    """Where the unfinished runs of a store keep their checkpoints (:mod:`kdlib.train.checkpoint`), one file per
    training, ``<record key>.<k>.pt``, deleted once the run's record is written (ignored by git; an archive sitting
    commits its in-flight ones at its stop, ``archive/README.md``)."""
    return Path(out_dir) / PARTIAL


# ------------------------------------------------------------------------------------------------ provenance
_COMMIT: str | None = None


COMMIT_ENV = "KDLIB_RUN_COMMIT"  # set by pin_commit(): the commit a command started at, for its workers


def git_commit() -> str:
    """The commit recorded in provenance: ``$KDLIB_RUN_COMMIT`` when a command pinned it (:func:`pin_commit`),
    else ``git rev-parse HEAD`` of the kdlib checkout (with ``+dirty`` when it has changes) at the first call in
    this process, or ``"unknown"``."""
    global _COMMIT
    if _COMMIT is None and os.environ.get(COMMIT_ENV):
        _COMMIT = os.environ[COMMIT_ENV]
    if _COMMIT is None:
        repo = Path(__file__).resolve().parents[2]
        try:
            head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                  timeout=10)
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                   capture_output=True, text=True, timeout=10)
            _COMMIT = head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") \
                if head.returncode == 0 and head.stdout.strip() else "unknown"
        except (OSError, subprocess.SubprocessError):
            _COMMIT = "unknown"
    return _COMMIT


def pin_commit() -> str:
    """Fix the commit that this process and the workers it starts record to the checkout's state *now*, before
    any compute: a checkout that moves while a long command runs (a commit, a merge) must not relabel the
    records of code loaded earlier."""
    commit = git_commit()
    os.environ[COMMIT_ENV] = commit
    return commit


def cpu_capability() -> str:
    """The CPU kernels torch dispatches to on this machine (``torch.backends.cpu.get_cpu_capability()``: "AVX2",
    "AVX512", ...). Machines with other kernels round differently from the first step, so a float32 run is
    reproduced bit for bit only where this (with the torch version and the threads) is the same."""
    return str(torch.backends.cpu.get_cpu_capability())


@functools.cache
def cpu_model() -> str:
    """The CPU's vendor and model name (``/proc/cpuinfo``'s ``vendor_id`` and ``model name``, else
    :func:`platform.processor`). Kernels capped at one instruction set still round differently on another vendor's
    CPU (an archived reduced CIFAR-10 record made on an AMD EPYC under the AVX2 pin is 0.011 off in accuracy after
    its first epoch on an Intel Xeon under the same pin), so a re-check is strict only on the record's own model."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("vendor_id", "model name") and key not in fields:
                    fields[key] = " ".join(value.split())
                if len(fields) == 2:
                    break
    except OSError:
        pass
    return " ".join(fields[k] for k in ("vendor_id", "model name") if k in fields) \
        or platform.processor() or platform.machine() or "unknown"


def accelerator(device: str | torch.device) -> dict[str, Any] | None:
    """The GPU a run on a CUDA ``device`` used (None on the CPU): its name and compute capability, the CUDA and
    cuDNN versions torch was built with, and the TF32 flags in effect (TF32 rounds the float32 products of
    cuDNN's convolutions, or of matrix products, to about 1e-3 relative: another result than float32's; the runner
    sets them from the run's ``tf32`` setting, :mod:`kdlib.precision`)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return dict(name=torch.cuda.get_device_name(index), capability=f"{major}.{minor}", cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(), **precision.flags())


def provenance(threads: int, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Where and with what a record was made (``cpu_kernels``: the pin in effect, :mod:`kdlib.cpu_kernels`;
    ``cpu_model``: :func:`cpu_model`; for a run on a GPU also ``accelerator``: :func:`accelerator`)."""
    out = dict(kdlib_version=__version__, commit=git_commit(), torch=torch.__version__,
               cpu_capability=cpu_capability(), cpu_kernels=cpu_kernels.in_effect(), cpu_model=cpu_model(),
               threads=int(threads),
               machine=f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores)",
               created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    gpu = accelerator(device)
    if gpu is not None:
        out["accelerator"] = gpu
    return out


# ------------------------------------------------------------------------------------------------ records
def check_record(rec: Any, expected_key: str | None = None) -> str | None:
    """What is structurally wrong with ``rec`` (None when it is a valid record)."""
    if not isinstance(rec, dict):
        return f"a record is a JSON object, found {type(rec).__name__}"
    missing = [k for k in ("key", "config_hash", "config", "history", "summary", "provenance") if k not in rec]
    if missing:
        return f"missing key(s) {missing}"
    if not isinstance(rec["config"], dict) or not isinstance(rec["summary"], dict):
        return "config and summary must be objects"
    status = rec["summary"].get("status")
    if status not in STATUSES:
        return f"summary.status must be one of {STATUSES}, found {status!r}"
    hist = rec["history"]
    if not isinstance(hist, list) or not all(isinstance(h, dict) and "step" in h and "test_accuracy" in h
                                             for h in hist):
        return "history must be a list of rows with step and test_accuracy"
    if status == "ok" and not hist:
        return "empty history"
    threads = rec["provenance"].get("threads") if isinstance(rec["provenance"], dict) else None
    if not isinstance(threads, int):
        return "provenance.threads missing"
    try:
        cfg = ExperimentConfig.from_dict(rec["config"])
        h = config_hash(cfg, threads, cpu_kernels.of_record(rec)[0])
    except (TypeError, ValueError) as e:
        return f"config does not parse ({e})"
    if h != rec["config_hash"]:
        return f"config_hash {rec['config_hash']} does not match its config ({h})"
    if rec["key"] != f"{cfg.key()}__{h}":
        return f"key {rec['key']} does not match its config"
    if expected_key is not None and rec["key"] != expected_key:
        return f"stored under {expected_key} but its key is {rec['key']}"
    return None


def quarantine(path: Path, reason: str) -> Path | None:
    """Move a damaged record to ``runs/.damaged/`` (kept for inspection) with a warning."""
    dest_dir = path.parent / DAMAGED
    dest_dir.mkdir(exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    dest = dest_dir / f"{path.name}.{stamp}.{os.getpid()}"
    try:
        os.replace(path, dest)
    except FileNotFoundError:  # another reader moved it first
        return None
    warnings.warn(f"{path}: damaged run record ({reason}); moved to {dest}; it will be recomputed", stacklevel=3)
    return dest


def read_record(path: str | os.PathLike, move_damaged: bool = True) -> dict[str, Any] | None:
    """The record at ``path``; None if absent or damaged (a damaged one is moved aside with a warning)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        rec = json.loads(text)
        problem = check_record(rec, expected_key=path.stem)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problem = f"not valid JSON: {e}"
        rec = None
    if problem is not None and isinstance(rec, dict) and isinstance(rec.get("config"), dict) \
            and set(rec["config"]) - field_names():
        # a record of a newer kdlib (config fields this one does not know) is valid there: never move it
        warnings.warn(f"{path}: run record written by a newer kdlib (unknown config field(s) "
                      f"{sorted(set(rec['config']) - field_names())}); skipped and left in place", stacklevel=2)
        return None
    if problem is not None:
        if move_damaged:
            quarantine(path, problem)
        else:
            warnings.warn(f"{path}: damaged run record ({problem}); ignored", stacklevel=2)
        return None
    return rec


def write_record(out_dir: str | os.PathLike, rec: dict[str, Any]) -> Path:
    """Write one finished record atomically to ``out_dir/runs/<key>.json``; returns its path."""
    problem = check_record(rec)
    if problem is not None:
        raise ValueError(f"refusing to write a malformed record ({problem})")
    path = Path(out_dir) / RUNS / f"{rec['key']}.json"
    atomic_write_text(path, dumps(rec))
    return path


def make_record(cfg: ExperimentConfig, history: list[dict[str, Any]], summary: dict[str, Any],
                threads: int) -> dict[str, Any]:
    """A record in the store's layout (``threads`` as requested; the run's own count is recorded)."""
    t = run_threads(cfg, threads)
    h = config_hash(cfg, t, cpu_kernels.in_effect())
    return json_safe(dict(key=f"{cfg.key()}__{h}", config_hash=h, config=cfg.to_dict(), history=history,
                          summary=summary, provenance=provenance(t, cfg.device)))


# ------------------------------------------------------------------------------------------------ out dir
def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir/runs`` and prove it writable, before any compute; :class:`OutputDirError` otherwise."""
    out = Path(out_dir)
    for p in (out, out / RUNS):
        if p.exists() and not p.is_dir():
            raise OutputDirError(f"output directory {p}: expected a directory, found a file; fix: pass another "
                                 f"--out (or remove/rename the file {p})")
    try:
        (out / RUNS).mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out / RUNS, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OutputDirError(f"output directory {out}: expected a writable directory, found it cannot be "
                             f"written ({e.strerror or e}); fix: pass a writable --out or fix its permissions"
                             ) from e
    return out


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``out_dir/.lock`` (serialises aggregation between writers)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / ".lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ------------------------------------------------------------------------------------------------ readers
def _record_paths(out_dir: Path) -> list[Path]:
    return sorted(p for p in (out_dir / RUNS).glob("*.json") if not p.name.startswith("."))


def load_records(out_dir: str | os.PathLike, configs: Iterable[ExperimentConfig] | None = None,
                 threads: int = 1, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The stored records of exactly ``configs`` (run at ``threads`` intra-op threads) or of exactly the
    store ``keys``; with neither, every valid record of ``out_dir``. Absent records are skipped (compare
    lengths to find them); damaged ones are moved aside with a warning."""
    out = Path(out_dir)
    if configs is not None:
        wanted = [record_key(c, threads) for c in configs]
    elif keys is not None:
        wanted = list(keys)
        cells = [k for k in wanted if not _KEY.search(k)]
        if cells:
            raise ConfigError(f"load_records: expected store keys ending in __<16 hex digits of the config hash>, "
                              f"found {cells[:3]}{' ...' if len(cells) > 3 else ''} (cell names match records "
                              f"of any config); fix: pass configs=[...] or use load_results(out_dir, dataset=..., "
                              f"profile=..., seeds=..., **overrides)")
    else:
        wanted = None
    if wanted is None:
        paths = _record_paths(out)
    else:
        paths = [out / RUNS / f"{k}.json" for k in dict.fromkeys(wanted)]
    return [r for r in (read_record(p) for p in paths) if r is not None]


def records_to_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Tidy rows: one per logged step of every record, with the record's config hash, threads and status (a
    diverged record without history gives one row with no metrics, so that it is still counted)."""
    rows = []
    for rec in records:
        c = rec["config"]
        base = dict(dataset=c["dataset"], method=c["method"], seed=c["seed"], profile=c["profile"],
                    variant=c["variant"], holdout=c["holdout"], config_hash=rec["config_hash"],
                    threads=rec["provenance"]["threads"], status=rec["summary"]["status"])
        hist = rec["history"] or [dict(step=-1, test_accuracy=None)]
        for h in hist:
            rows.append({**base, **h})
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    cols = [c for c in RESULT_COLUMNS if c in df.columns] + [c for c in df.columns if c not in RESULT_COLUMNS]
    return df[cols]


def resolve_configs(dataset: str, methods: Sequence[str] | None = None, seeds: int | Sequence[int] | None = None,
                    profile: str = "quick", known_methods: Iterable[str] = ALL_METHOD_NAMES,
                    **overrides: Any) -> list[ExperimentConfig]:
    """The configs of a (method x seed) grid: ``seeds`` an int n (0..n-1), a list, or None (the profile's)."""
    methods = list(METHOD_NAMES if methods is None else methods)
    if seeds is None:
        seeds = profile_seeds(profile, dataset)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    return [resolve_config(dataset, m, profile, s, known_methods=known_methods, **overrides)
            for m in methods for s in seed_list]


def load_results(out_dir: str | os.PathLike, dataset: str | None = None, methods: Sequence[str] | None = None,
                 seeds: int | Sequence[int] | None = None, profile: str = "quick", threads: int = 1,
                 configs: Iterable[ExperimentConfig] | None = None, keys: Iterable[str] | None = None,
                 **overrides: Any) -> pd.DataFrame:
    """Tidy results (one row per logged step) of exactly the runs asked for.

    ``load_results(out, dataset="fashion_mnist", profile="smoke", seeds=2, lr=0.5)`` resolves the configs of
    the six methods (or ``methods``) x those seeds with those overrides, exactly as
    :func:`kdlib.experiments.runner.run_experiments` does, and reads only their records; ``configs`` /
    ``keys`` ask for records directly; with none of these, every record of ``out_dir``. ``frame.attrs
    ["missing"]`` lists the requested keys that are not (yet) stored."""
    if configs is None and dataset is not None:
        configs = resolve_configs(dataset, methods, seeds, profile, **overrides)
    if configs is not None:
        configs = list(configs)
        keys = [record_key(c, threads) for c in configs]
    recs = load_records(out_dir, keys=keys)
    df = records_to_frame(recs)
    df.attrs["missing"] = sorted(set(keys) - {r["key"] for r in recs}) if keys is not None else []
    return df


def run_finals(df: pd.DataFrame) -> pd.DataFrame:
    """Per run (dataset, method, seed, config hash): :func:`kdlib.analysis.final.final_rows` -- the test
    accuracy at the last logged point, NaN and ``diverged`` for a diverged run (counted apart, never averaged)."""
    by = [*RUN_KEYS] + [c for c in ("config_hash",) if c in df.columns]
    if df.empty:
        return pd.DataFrame(columns=by + ["test_accuracy", "status", "diverged"])
    fin = final_rows(df, by)
    fin["status"] = np.where(fin["diverged"], "diverged", "ok")
    return fin[by + ["test_accuracy", "status", "diverged"]]


def method_summaries(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per method: :func:`kdlib.analysis.final.summarize` of its runs' final accuracies (mean, max, population
    std and count of the finite ones, and the number of diverged runs); JSON-ready (null for no runs)."""
    fin = run_finals(df)
    out: dict[str, dict[str, Any]] = {}
    for m, g in fin.groupby("method", sort=False):
        s = summarize_final(g["test_accuracy"])
        out[str(m)] = dict(mean=s["mean"] if s["n"] else None, max=s["max"] if s["n"] else None,
                           std=s["std"] if s["n"] else None, count=s["n"], diverged=s["diverged"])
    return out


def aggregate(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Rewrite ``results.csv`` and ``config.json`` from ``runs/`` alone (atomically, under the directory's
    lock) and return the results frame. ``results.csv``: every logged step of every valid record with its
    ``config_hash``; ``config.json``: one entry (key, config_hash, threads, status, config) per record."""
    out = Path(out_dir)
    with _locked(out):
        recs = load_records(out)
        df = records_to_frame(recs)
        atomic_write_text(out / "results.csv", df.to_csv(index=False))
        entries = [dict(key=r["key"], config_hash=r["config_hash"], threads=r["provenance"]["threads"],
                        status=r["summary"]["status"], config=r["config"]) for r in recs]
        atomic_write_text(out / "config.json", dumps(entries, indent=1))
    return df
