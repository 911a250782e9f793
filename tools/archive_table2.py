"""Make (or resume) the paper-protocol archive of Table 2's Fashion-MNIST and CIFAR-10 columns.

One command for every sitting (the runs take about 20 hours of a 2-core machine): each (dataset, method) of
:data:`QUEUE` is a column of 10 seeds under the authors' protocol
(:func:`kdlib.experiments.protocol.authors_protocol`) and the AVX2 pin, written to
``<out-root>/<dataset>/authors/``; ``--dry-run`` prints each column's ``python -m kdlib run --seeds 10`` command.
``--lanes`` processes (one thread each) take the runs not yet stored in the queue's order, one run at a time:
the column's command restricted to that seed (``--seed-list s``, the same record), so that both lanes work on
the first unfinished column and no lane idles while the last one runs; a partial archive thus already answers
the main question (gradient-based against no distillation first). An interrupted sitting resumes with the same
command: a run the sitting interrupted goes on from its last finished epoch
(``<out-root>/<dataset>/authors/.partial/``, :mod:`kdlib.train.checkpoint`), bit for bit.

Run it from a clean checkout at a fixed commit (``git worktree add ../kd-archive <commit>``), so that work on the
code beside it cannot change a record::

    python tools/archive_table2.py --out-root /path/to/main/archive/pending   # resume; --dry-run lists the commands

When a column holds all its records, move ``archive/pending/<dataset>/authors/runs`` to
``archive/<dataset>/authors/runs`` (archive/README.md); with ``--out-root`` an archive's ``pending/`` folder, the
command counts the records of both places as stored (:func:`run_folders`).
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from kdlib.experiments.profiles import resolve_config
from kdlib.experiments.protocol import archive_dir, authors_protocol
from kdlib.experiments.store import checkpoint_dir
from kdlib.train.checkpoint import SUFFIX, peek

REPO = Path(__file__).resolve().parents[1]
SEEDS = 10
# The finished paper-protocol column whose per-method costs estimate the entries with no stored run yet
REFERENCE = REPO / "archive" / "cifar10_reduced" / "authors" / "runs"
# The methods that train with fixed metaparameters (a plain student step); the others tune them (about 3x a step)
FIXED = ("no_distillation", "naive", "random", "hyperopt")
# (dataset, method, extra overrides), in the order of issue 19: the headline comparison first
QUEUE: list[tuple[str, str, dict[str, object]]] = [
    # (the reduced CIFAR-10 random column, re-made with random_law="authors" from 17520f5, is in archive/)
    ("cifar10", "gradient", {}),
    ("cifar10", "no_distillation", {}),
    ("fashion_mnist", "gradient", {}),
    ("fashion_mnist", "no_distillation", {}),
    ("cifar10", "proposed", {}),
    ("fashion_mnist", "proposed", {}),
    ("cifar10", "naive", {}),
    ("fashion_mnist", "naive", {}),
    ("cifar10", "random", {}),
    ("fashion_mnist", "random", {}),
    # 40 epochs, as the authors' only Fashion-MNIST hyperopt log (kdlib.experiments.protocol.AUTHORS_DATASET_PROTOCOL)
    ("fashion_mnist", "hyperopt", {}),
]


def command(dataset: str, method: str, extra: dict[str, object], out_root: Path,
            seeds: list[int] | None = None) -> list[str]:
    """The ``kdlib run`` command of one queue entry: its whole column (``--seeds 10``), or only ``seeds``
    (``--seed-list``: the same records)."""
    sets = [f"--set={k}={v}" for k, v in {**authors_protocol(method, dataset), **extra}.items()]
    which = ["--seeds", str(SEEDS)] if seeds is None else ["--seed-list", ",".join(map(str, seeds))]
    return [sys.executable, "-m", "kdlib", "run", "--dataset", dataset, "--methods", method, "--profile", "paper",
            *which, "--no-progress", "--workers", "1", "--threads", "1", "--cpu-kernels", "avx2",
            *sets, "--out", str(out_root / dataset / "authors")]


def run_folders(dataset: str, out_root: Path) -> list[Path]:
    """Where a dataset's records count as stored: ``<out-root>/<dataset>/authors/runs`` and, when ``out_root`` is
    an archive's ``pending/`` folder, the finished column it is moved to (``archive/<dataset>/authors/runs``), so
    that moving a complete column does not make the next sitting run it again."""
    folders = [archive_dir(dataset, "authors", out_root)]
    if out_root.name == "pending":  # out_root is pending_dir's parent: the column moves to archive_dir
        folders.append(archive_dir(dataset, "authors", out_root.parent))
    return folders


def stored(dataset: str, method: str, out_root: Path) -> list[Path]:
    """The records of this entry already stored (any config; the runner checks the config itself)."""
    return sorted(p for folder in run_folders(dataset, out_root)
                  for p in folder.glob(f"{dataset}__{method}__seed*__*.json"))


def done(dataset: str, method: str, out_root: Path) -> int:
    return len(stored(dataset, method, out_root))


def stored_seeds(dataset: str, method: str, out_root: Path) -> set[int]:
    """The seeds of this entry with a stored record (``<dataset>__<method>__seed<k>__<hash>.json``)."""
    return {int(p.name.split("__")[2][len("seed"):]) for p in stored(dataset, method, out_root)}


def pending_runs(queue: list[tuple[str, str, dict[str, object]]], out_root: Path
                 ) -> list[tuple[str, str, dict[str, object], int]]:
    """(dataset, method, extra, seed) of every run not stored yet, in the queue's order, seeds ascending."""
    todo = []
    for ds, m, extra in queue:
        have = stored_seeds(ds, m, out_root)
        todo += [(ds, m, extra, seed) for seed in range(SEEDS) if seed not in have]
    return todo


def in_flight(dataset: str, method: str, out_root: Path) -> tuple[list[str], float]:
    """This entry's runs that a sitting cut off, as their checkpoints hold them (``seed s: epoch e/N``, and the
    training for hyperopt's several), from ``<out-root>/<dataset>/authors/.partial``; and how many runs they have
    done (a checkpoint at epoch 37 of 100 counts 0.37; hyperopt's training k of n at epoch e of N counts
    (k + e/N)/n, the furthest training of a seed once, since a finished training keeps its file beside the next
    one's; an unreadable file counts 0)."""
    trainings = 1
    if method == "hyperopt":
        trainings = int(resolve_config(dataset, method, "paper", 0, **authors_protocol(method, dataset)).hyperopt_evals)
    rows, per_seed = [], {}
    folder = checkpoint_dir(out_root / dataset / "authors")
    for path in sorted(folder.glob(f"{dataset}__{method}__seed*__*{SUFFIX}")):
        try:
            at = peek(path)
        except Exception as e:  # a torn file: the runner will start that training over
            rows.append(f"{path.name}: unreadable ({type(e).__name__})")
            continue
        rows.append(f"seed {at['seed']}: epoch {at['epoch']}/{at['epochs']}"
                    + (f" of training {at['training']}" if method == "hyperopt" else ""))
        done = (min(at["training"], trainings - 1) + at["epoch"] / max(at["epochs"], 1)) / trainings
        per_seed[at["seed"]] = max(per_seed.get(at["seed"], 0.0), done)
    return rows, sum(per_seed.values())


def _hours(record: dict) -> float:
    """A run record's wall time in hours (every sitting of a resumed run counted)."""
    return float(record["summary"].get("wall_time") or 0.0) / 3600


def run_hours(dataset: str, method: str, out_root: Path) -> list[float]:
    """The wall time (hours) of each stored record of this entry."""
    return [_hours(json.loads(p.read_text())) for p in stored(dataset, method, out_root)]


def epoch_hours(records: list[Path]) -> float | None:
    """The median wall time (hours) of one epoch of these records (a run's wall time over its config's epochs;
    hyperopt's epoch counts all its trainings), or None for no record."""
    per_epoch = [_hours(r) / int(r["config"]["epochs"]) for r in (json.loads(p.read_text()) for p in records)]
    return statistics.median(per_epoch) if per_epoch else None


def anchors(dataset: str, method: str) -> list[str]:
    """The dataset's other queue entries in the order :func:`estimate` tries them: those of the same kind
    (:data:`FIXED` or tuned) first, the latest in :data:`QUEUE` first (made last, so on the machine and load
    closest to the runs left)."""
    others = [m for ds, m, _ in reversed(QUEUE) if ds == dataset and m != method]
    return sorted(others, key=lambda m: (m in FIXED) != (method in FIXED))


def estimate(dataset: str, method: str, out_root: Path, reference: Path) -> tuple[float, str] | None:
    """Hours a run of an entry with no stored run will take: a stored method of the same dataset (the anchor,
    the first of :func:`anchors` with records), per epoch, times the two methods' per-epoch ratio in the
    ``reference`` column, times the entry's epochs. Returns (hours, how), or None without an anchor or a
    reference."""
    ref = epoch_hours(sorted(reference.glob(f"*__{method}__seed*__*.json")))
    for anchor in anchors(dataset, method):
        mine = stored(dataset, anchor, out_root)
        ref_anchor = epoch_hours(sorted(reference.glob(f"*__{anchor}__seed*__*.json")))
        if mine and ref and ref_anchor:
            epochs = resolve_config(dataset, method, "paper", 0, **authors_protocol(method, dataset)).epochs
            return (epoch_hours(mine) * ref / ref_anchor * int(epochs),
                    f"{dataset} {anchor} x {method}/{anchor} of {reference.parent.parent.name}, {epochs} epochs")
    return None


def status(queue: list[tuple[str, str, dict[str, object]]], out_root: Path, lanes: int,
           reference: Path | None = None) -> list[str]:
    """Per entry: records stored, the median wall time of a stored run (or, with none, :func:`estimate`), the
    runs in flight; then the lane-hours left (at those times, less what the runs in flight have done, on this
    machine and its load). ``reference``:
    default :data:`REFERENCE`."""
    reference = REFERENCE if reference is None else reference
    lines, measured, estimated, unknown = [], 0.0, 0.0, []
    for ds, m, _ in queue:
        hours, (flying, ahead) = run_hours(ds, m, out_root), in_flight(ds, m, out_root)
        line = f"# {ds} {m}: {len(hours)}/{SEEDS} stored"
        if hours:
            typical = statistics.median(hours)
            line += f", {typical:.2f} h a run (median of {len(hours)})"
            measured += max(SEEDS - len(hours) - ahead, 0) * typical
        elif (guess := estimate(ds, m, out_root, reference)) is not None:
            line += f", about {guess[0]:.2f} h a run (estimated: {guess[1]})"
            estimated += max(SEEDS - ahead, 0) * guess[0]
        else:
            unknown.append(f"{ds} {m}")
        if flying:
            line += "; in flight: " + ", ".join(flying)
        lines.append(line)
    left = measured + estimated
    lines.append(f"# left: about {left:.1f} lane-hours ({measured:.1f} at stored runs' medians, {estimated:.1f} "
                 f"estimated; {left / lanes:.1f} h on {lanes} lanes; the in-flight runs' epochs done subtracted)"
                 + (f"; not estimated (no run stored, no reference): {', '.join(unknown)}" if unknown else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-root", default=str(REPO / "archive" / "pending"))
    ap.add_argument("--lanes", type=int, default=2, help="processes running at once (one thread each)")
    ap.add_argument("--only", default=None, help="comma-separated dataset:method entries to run (default: all)")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the commands, what is stored and in flight, and the hours left; run nothing")
    args = ap.parse_args(argv)
    out_root = Path(args.out_root).resolve()
    queue = [q for q in QUEUE if args.only is None or f"{q[0]}:{q[1]}" in args.only.split(",")]
    if args.dry_run:
        for ds, m, extra in queue:
            print(" ".join(command(ds, m, extra, out_root)))
        print("\n".join(status(queue, out_root, args.lanes)))
        return 0
    out_root.mkdir(parents=True, exist_ok=True)
    lock = open(out_root / ".archive_table2.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another archive_table2 is running into {out_root}; stop it first", file=sys.stderr)
        return 2
    todo = pending_runs(queue, out_root)
    take = threading.Lock()
    failed: list[str] = []

    def lane(k: int) -> None:
        while True:
            with take:
                if not todo:
                    return
                ds, m, extra, seed = todo.pop(0)
            log = out_root / ds / "authors" / f"{m}.seed{seed}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            print(f"[lane {k}] {time.strftime('%H:%M:%S')} {ds} {m} seed {seed}: start "
                  f"({done(ds, m, out_root)}/{SEEDS} stored)", flush=True)
            with open(log, "a") as fh:
                rc = subprocess.call(command(ds, m, extra, out_root, seeds=[seed]), cwd=REPO, stdout=fh,
                                     stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
            print(f"[lane {k}] {time.strftime('%H:%M:%S')} {ds} {m} seed {seed}: exit {rc} after "
                  f"{time.time() - t0:.0f} s ({done(ds, m, out_root)}/{SEEDS} stored)", flush=True)
            if rc != 0:
                failed.append(f"{ds} {m} seed {seed} (exit {rc}, log {log})")

    threads = [threading.Thread(target=lane, args=(k,)) for k in range(args.lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for f in failed:
        print(f"failed: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
