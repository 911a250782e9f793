"""The GPU check of issue 20: ONE prepared run, at most ~8 minutes, that a session with a GPU launches at once.

    python tools/gpu_check.py --device cuda --out $OUT [--budget-s 460] [--column-workers 10] [--tf32 off|on]
    python tools/gpu_check.py --device cpu --out DIR       # the dry run CI runs (tiny sizes, a few steps)

How to stage the data and wheels and the exact device call: ``tools/gpu_stage.py`` (its docstring).

Stages (numbered by topic; the order they run in and their time boxes are below), each time-boxed and run in its
own process (a crash, a hang or a CUDA error in one is written down and the next stage still runs);
``results-cuda.json`` is rewritten after every stage, so a run killed at any point leaves the stages it finished:

1. ``environment``: GPU name, driver and memory (``nvidia-smi``), compute capability and multiprocessors, python,
   torch, CUDA, cuDNN, the versions of the carried packages, the commit (``.gpu/COMMIT`` when the tree travels
   without ``.git``), the TF32 setting every stage computes under (``--tf32``, below).
2. ``tests``: pytest on the CUDA-marked tests (``tests/test_cuda.py`` and every test marked ``cuda``) and the two
   tests with a CUDA branch; counts and failures from its JUnit XML.
3. ``step_times``, per image dataset (one process each): the student's step one by one (:func:`kdlib.train.
   train_student`, the Tuner's shared-forward step) and stacked (:func:`kdlib.train.train_students_stacked`,
   ``--seeds`` runs as one vmapped model), fixed metaparameters and tuned (gradient and proposed, with the finite
   difference of the authors' protocol and with the unrolled estimator), at the paper profile's student and batch
   size on random tensors of the datasets' shapes (the real data cannot travel; a step's cost does not depend on
   the pixel values). Each time is a difference of two whole training runs through the loop, of N1 and N2 steps,
   after a warm-up run: ``step = (T(N2) - T(N1)) / (N2 - N1)``, timed with CUDA events (and the wall clock), so
   that the loop's own per-step work (batch slicing, stacking) is in it and the set-up and the one evaluation
   at the end of each run cancel; ``eval = T(N1) - N1 * step`` is the cost of one evaluation on the paper-size
   test and validation sets (plus the run's set-up). The same pair of runs under ``torch.profiler`` gives the
   device's busy time per step (the union of the kernels' and copies' intervals), and the ``busy fraction =
   busy time per step / step``; under ``torch.cuda.set_sync_debug_mode("warn")`` it counts the host
   synchronisations per step. Peak memory is that of the N2 run. A stacked variant the engine does not implement
   is reported as ``unsupported`` with the engine's reason. N1 = 5, N2 = 25: the 20 steps between them are one
   whole cycle of Algorithm 1 (e1 + e2 = 20), so the proposed method's step is its mean over both phases.
4. ``projection``: the time of each Table 2 column and of the whole table (formula below).
5. ``graphs``, per image dataset (one process each): the stacked step eager (:mod:`kdlib.train.stacked`) against
   the same step captured into CUDA graphs (:mod:`kdlib.train.stacked_graph`, ``engine="stacked_graph"``) for the
   fixed step, the authors' finite difference and the unrolled estimator, ``--seeds`` runs at the paper's batch
   size: both backends from the same seeds through the same steps (full batches and a shorter last batch, each
   captured after its warm-up) and the largest difference of their weights and values (``bit_identical`` when
   none), then the step time of each (CUDA events over 20 full-batch steps, the fastest of 2 rounds) and
   ``graphed_speedup`` = eager / graphed. The dry run takes the graphs' CPU stand-in (the same code, no graph).
6. ``tuner``: :func:`benchmarks.tuner.bench_tuner_step` on the device (the Tuner's iteration against a plain step
   on the CIFAR-10 student, batch 128; on CUDA the timer synchronises around each call), with issue 22's figures
   ``tuner_*_after_backward_over_plain`` (target <= 2.6) gathered under ``issue_22``.
7. ``column``: if the budget allows, the reduced CIFAR-10 column under the authors' protocol
   (:func:`kdlib.experiments.protocol.authors_protocol`, ``--set engine=stacked``), gradient-based first, through the
   CLI on the GPU, with ``--column-workers`` processes; its records are packed into ``authors-cuda.tar.gz``
   (``cifar10_reduced/authors-cuda/runs/*.json``) and the final branch of each tuned run is compared with the CPU
   archive's run of the same seed (``archive/cifar10_reduced/authors/runs``).

**Projection formula** (per column c = dataset, method m of Table 2 under the authors' protocol, R = 10 runs):

    steps(m)  = epochs(m) * ceil(n(m) / batch_size),  n(m) = |D_train| = |D| - |D| // 10 for the methods that tune on
                D_val (gradient, proposed, hyperopt), |D| for the others (|D| = 60,000 / 12,800 / 50,000)
    evals(m)  = the epochs after which a run evaluates (eval_every = 5: epochs 0, 4, 9, ...; kdlib.train.evaluates_after)
    trainings(m) = hyperopt_evals (5) for hyperopt, else 1
    one run     = steps(m) * step + evals(m) * eval
    one_by_one: T(c) = sum_m R * trainings(m) * one run (one-by-one step and eval)
    stacked:    T(c) = sum_m ceil(R / S) * trainings(m) * one run (stacked step and eval of S = --seeds runs)

with ``step`` the measured step of the method's variant (fixed for no distillation, naive, random and hyperopt's
trials; gradient_fd / proposed_fd for the tuned methods). Three projections are given: ``one_by_one`` (every run
alone), ``today`` (what ``--set engine=stacked`` runs now, from :func:`kdlib.experiments.runner.choose_backend`:
the stacked step where the engine implements the method -- every method of the authors' protocol, hyperopt's k-th
trials of all seeds as one stacked model -- one by one elsewhere) and ``all_stacked`` (every method stacked; where
a variant's stacked step was not measured, the stacked unrolled step stands in for it, and the column says so).
Table 2 = the sum over the three image columns;
the synthetic column runs on the CPU's batched engine in seconds and is left out.

**Order and time boxes** (``--budget-s``, 460 s by default): environment, tests, graphs, tuner, step times,
projection, column. The tests get at most 180 s and leave 280 s. Stages 5 and 6 are short and go first, each
time-boxed so that the step times keep at least 3 x 30 s and the column 60 s: each dataset's graphs at most 35 s,
the tuner at most 40 s, each skipped (said so in the JSON) when less than 10 s would be left to it; what they do
not use goes to the step times (each dataset at most 150 s, leaving 60 s, as before) and the column gets the rest.
Worst case: 5 + 180 + 87 + 40 + 90 + 50 s < 460 s.

**TF32** (``--tf32``, default ``off``): the run's one TF32 setting (:mod:`kdlib.precision`): every measuring stage
computes inside ``kdlib.precision.tf32(setting)`` (both flags on or off, restored after), the column's runs get it
as their config field ``tf32`` (so their records say it, and their keys change only when it is on), and the
cuda-marked tests switch TF32 off themselves. Nothing sets the flags process-wide.

**After the run** (on the session's machine): ``results-cuda.json`` goes to ``benchmarks/results-cuda.json`` and
``tar xzf authors-cuda.tar.gz -C archive/`` gives ``archive/cifar10_reduced/authors-cuda/runs/``.

Everything is written to ONE folder (``--out``, ``$OUT`` on the device machine), at most 6 files, none in
sub-folders: ``results-cuda.json``, ``gpu_check.log`` (this run's whole output), ``pytest-cuda.xml``,
``nvidia-smi.txt``, ``authors-cuda.tar.gz`` (records, if the column ran). kdlib is imported inside the stages
only (each stage is a child process): a missing package fails that stage, with its error in the JSON, not the run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # kdlib from this checkout's source

import torch  # noqa: E402  (after the path: the device machine runs kdlib from source)

from benchmarks.timing import Timer  # noqa: E402

SCHEMA = 1
DATASETS = ("cifar10_reduced", "cifar10", "fashion_mnist")
# variant -> (method, protocol, estimator override): what one step of each Table 2 method costs
VARIANTS: dict[str, tuple[str, str, str | None]] = {
    "fixed": ("naive", "authors", None),  # no distillation, naive, random and every hyperopt trial
    "gradient_fd": ("gradient", "authors", None),  # the authors' protocol: finite difference, per-epoch reset, KL
    "proposed_fd": ("proposed", "authors", None),
    "gradient_unrolled": ("gradient", "defaults", "unrolled"),  # the paper's defaults with the exact estimator
    "proposed_unrolled": ("proposed", "defaults", "unrolled"),
}
METHOD_VARIANT = {"no_distillation": "fixed", "naive": "fixed", "random": "fixed", "hyperopt": "fixed",
                  "gradient": "gradient_fd", "proposed": "proposed_fd"}
STACKED_STANDIN = {"gradient_fd": "gradient_unrolled", "proposed_fd": "proposed_unrolled"}
GRAPH_VARIANTS = ("fixed", "gradient_fd", "gradient_unrolled")  # stage 5: the stacked step eager vs graphed
# the column's CLI invocations, in order: the headline (gradient-based) first
COLUMN_ORDER: tuple[tuple[str, ...], ...] = (("gradient",), ("no_distillation", "naive", "random"), ("proposed",),
                                             ("hyperopt",))
FILES = ("results-cuda.json", "gpu_check.log", "pytest-cuda.xml", "nvidia-smi.txt", "authors-cuda.tar.gz")
CUDA_TEST_NODES = ("tests/test_cuda.py", "tests/test_hypergrad_optimizers.py::test_no_host_sync_on_cuda",
                   "tests/test_hypergrad_state.py::test_generator_gives_fresh_reproducible_seeds_and_default_is_fixed",
                   "tests/test_trajectory.py::test_device_and_dtype_preserved_and_no_numpy")


# ------------------------------------------------------------------------------------------------ plumbing
class Log:
    """Progress lines with the elapsed time, to stdout and to ``gpu_check.log``."""

    def __init__(self, path: Path | None) -> None:
        self.t0 = time.monotonic()
        self.fh = open(path, "a", buffering=1) if path is not None else None
        self.lock = threading.Lock()

    def raw(self, line: str) -> None:
        with self.lock:
            sys.stdout.write(line if line.endswith("\n") else line + "\n")
            sys.stdout.flush()
            if self.fh is not None:
                self.fh.write(line if line.endswith("\n") else line + "\n")

    def __call__(self, msg: str) -> None:
        self.raw(f"[gpu_check +{time.monotonic() - self.t0:6.1f}s] {msg}")


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False, default=str))
    os.replace(tmp, path)


def run_child(cmd: list[str], log: Log, timeout: float, env: dict[str, str] | None = None,
              cwd: Path = REPO) -> tuple[int | None, float]:
    """Run ``cmd`` in its own process group, copying its output line by line into the log; kill the group at
    ``timeout`` seconds. Returns (exit code or None when killed, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.raw("    " + line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc: int | None = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        log(f"  time box of {timeout:.0f} s reached: stopping {cmd[1:3]}")
        try:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait()
        rc = None
    reader.join(timeout=5)
    return rc, time.monotonic() - t0


def child_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    commit = REPO / ".gpu" / "COMMIT"
    if commit.is_file() and not (REPO / ".git").exists() and "KDLIB_RUN_COMMIT" not in env:
        env["KDLIB_RUN_COMMIT"] = commit.read_text().strip()  # the tree travelled without .git
    return env


# ------------------------------------------------------------------------------------------ 1. environment
def package_versions(names: tuple[str, ...] = ("torch", "torchvision", "numpy", "scipy", "pandas", "hyperopt",
                                                "higher", "networkx", "cloudpickle", "tqdm", "pytest")
                     ) -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def environment(device: str, out: Path, tf32: str = "off") -> dict[str, Any]:
    """The machine and the packages; ``tf32``: the flags every measuring stage computes under (the setting)."""
    on = tf32 == "on"
    env: dict[str, Any] = dict(python=sys.version.split()[0], executable=sys.executable, platform=platform.platform(),
                               cpu_count=os.cpu_count(), torch=torch.__version__, cuda=torch.version.cuda,
                               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                               cuda_available=torch.cuda.is_available(), packages=package_versions(),
                               tf32=dict(cudnn=on, matmul=on), tf32_setting=tf32,
                               kdlib_data=os.environ.get("KDLIB_DATA"))
    commit_file = REPO / ".gpu" / "COMMIT"
    env["commit"] = (os.environ.get("KDLIB_RUN_COMMIT") or (commit_file.read_text().strip() if commit_file.is_file()
                                                          else None))
    if device == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = dict(name=p.name, capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                          memory_gib=round(p.total_memory / 2**30, 2), count=torch.cuda.device_count())
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        env["nvidia_smi_query"] = q.stdout.strip() or q.stderr.strip()
        if q.returncode == 0 and q.stdout.strip():
            env["driver"] = q.stdout.strip().splitlines()[0].split(",")[1].strip()
        full = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        (out / "nvidia-smi.txt").write_text(full.stdout + full.stderr)
    except (OSError, subprocess.SubprocessError) as exc:
        env["nvidia_smi_query"] = f"not available: {type(exc).__name__}: {exc}"
    return env


# ------------------------------------------------------------------------------------------------ 2. tests
def junit_summary(path: Path) -> dict[str, Any]:
    """Counts and the failed tests (with the first lines of their message) from pytest's JUnit XML."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in root.iter("testcase"):
        for tag in ("failure", "error"):
            el = case.find(tag)
            if el is not None:
                msg = (el.get("message") or el.text or "").strip().splitlines()
                failed.append(dict(test=f"{case.get('classname')}::{case.get('name')}", kind=tag,
                                   message=" | ".join(msg[:3])[:500]))
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return dict(counts, failed=failed)


def run_tests(args: argparse.Namespace, log: Log, timeout: float) -> dict[str, Any]:
    xml = args.out / "pytest-cuda.xml"
    cmd = [sys.executable, "-m", "pytest", *CUDA_TEST_NODES, "-q", "-rfEs", "-p", "no:cacheprovider",
           f"--junitxml={xml}"]
    if importlib.util.find_spec("pytest_timeout") is not None:  # one hanging test must not cost the others
        cmd.append("--timeout=150")
    rc, secs = run_child(cmd, log, timeout, env=child_env(args))
    res: dict[str, Any] = dict(command=" ".join(cmd[1:]), rc=rc, seconds=round(secs, 1))
    if xml.is_file():
        res.update(junit_summary(xml))
    res["status"] = "ok" if rc == 0 else ("timed out" if rc is None else "failed")
    return res


# ------------------------------------------------------------------------------------------- 3. step times
class Clock(Timer):
    """Seconds of a call: CUDA events around it (and the wall clock), synchronised only outside it
    (:class:`benchmarks.timing.Timer`'s device and synchronisation)."""

    def time(self, fn: Callable[[], Any]) -> tuple[float, float]:
        """(event seconds, wall seconds); on the CPU both are the wall clock."""
        self.sync()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            w0 = time.perf_counter()
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0, time.perf_counter() - w0
        w0 = time.perf_counter()
        fn()
        w = time.perf_counter() - w0
        return w, w

    def busy(self, fn: Callable[[], Any]) -> float | None:
        """Seconds the device was busy during ``fn`` (union of the kernels' and copies' intervals,
        ``torch.profiler``); None on the CPU."""
        if not self.cuda:
            return None
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        self.sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            self.sync()
        spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                       if e.device_type == DeviceType.CUDA and e.time_range.end > e.time_range.start)
        total, cur_s, cur_e = 0.0, None, None
        for s, e in spans:
            if cur_e is None or s > cur_e:
                if cur_e is not None:
                    total += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        if cur_e is not None:
            total += cur_e - cur_s
        return total / 1e6  # microseconds

    def syncs(self, fn: Callable[[], Any]) -> int | None:
        """Host synchronisations during ``fn`` (``torch.cuda.set_sync_debug_mode("warn")``); None on the CPU."""
        if not self.cuda:
            return None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message).lower() for w in caught)


def _sizes(dataset: str, dry: bool) -> dict[str, Any]:
    from kdlib.experiments.profiles import PAPER_IMAGES

    n = PAPER_IMAGES[dataset]
    if dry:
        return dict(n_val=16, n_test=16, n1=1, n2=2, repeats=1, batch_size=8)
    return dict(n_val=n // 10, n_test=10_000, n1=5, n2=25, repeats=2, batch_size=None)


def variant_config(dataset: str, variant: str, seed: int, device_name: str, batch_size: int | None = None):
    """The paper profile's config of ``variant`` (:data:`VARIANTS`) on ``dataset``: one epoch, lr 0.1 (random data
    stay finite; a step's cost does not depend on the lr), ``batch_size`` when given."""
    from kdlib.experiments.protocol import authors_protocol
    from kdlib.experiments.profiles import resolve_config

    method, protocol, estimator = VARIANTS[variant]
    over: dict[str, Any] = dict(authors_protocol(method, dataset)) if protocol == "authors" else {}
    if estimator is not None:
        over["estimator"] = estimator
    over.update(epochs=1, lr=0.1, lr_step_epochs=None, eval_every=1, device=device_name)
    if batch_size:
        over["batch_size"] = batch_size
    return resolve_config(dataset, method, "paper", seed=seed, **over)


def bench_dataset(dataset: str, device_name: str, seeds: int, dry: bool, log: Log,
                  flush: Callable[[dict[str, Any]], None] = lambda partial: None) -> dict[str, Any]:
    """Step times of every variant, one by one and stacked, on ``dataset``'s shapes (module docstring);
    ``flush(partial)`` after each measurement, so that a run stopped at its time box keeps what it measured."""
    from kdlib.data import CIFAR_MEAN, CIFAR_STD, FMNIST_MEAN, FMNIST_STD
    from kdlib.data.augment import FlipCrop
    from kdlib.methods import fixed_tuner, get_method
    from kdlib.models import make_student
    from kdlib.train import Problem, Split, make_tuner, train_student, train_students_stacked

    device = torch.device(device_name)
    clock = Clock(device)
    sz = _sizes(dataset, dry)
    shape = (1, 28, 28) if dataset == "fashion_mnist" else (3, 32, 32)
    g = torch.Generator().manual_seed(0)

    def draw(n: int, teacher: bool) -> Split:
        x = torch.randn(n, *shape, generator=g).to(device)
        y = torch.randint(0, 10, (n,), generator=g).to(device)
        return Split(x, y, (3 * torch.randn(n, 10, generator=g)).to(device) if teacher else None)

    def config(variant: str, seed: int):
        return variant_config(dataset, variant, seed, device_name, sz["batch_size"])

    cfg0 = config("fixed", 0)
    bs = int(cfg0.batch_size)
    val, test = draw(sz["n_val"], False), draw(sz["n_test"], False)
    trains = {n: draw(n * bs, True) for n in (sz["n1"], sz["n2"])}

    mean, std = (FMNIST_MEAN, FMNIST_STD) if dataset == "fashion_mnist" else (CIFAR_MEAN, CIFAR_STD)
    augment = FlipCrop.for_normalization(mean, std)  # full CIFAR-10's tuned variants train on augmented batches

    def problem(n: int) -> Problem:
        return Problem(train=trains[n], val=val, test=test, make_student=lambda: make_student(dataset),
                       augment=augment)

    def one_call(variant: str, engine: str) -> Callable[[int], Any]:
        method = VARIANTS[variant][0]
        m = get_method(method)
        if engine == "one_by_one":
            cfg = config(variant, 0)
            init = m.initial(cfg)
            if variant == "fixed":
                return lambda n: train_student(cfg, problem(n), fixed_tuner(init))
            return lambda n: train_student(cfg, problem(n), lambda o, s: make_tuner(s, o, init, m.schedule))
        cfgs = [config(variant, s) for s in range(seeds)]
        values = torch.stack([m.initial(c).detach().float().cpu() for c in cfgs])
        schedule = "fixed" if variant == "fixed" else m.schedule
        return lambda n: train_students_stacked(cfgs, problem(n), values, schedule=schedule)

    out: dict[str, Any] = dict(setup=dict(
        dataset=dataset, device=device_name, student=type(make_student(dataset)).__name__, batch_size=bs,
        input_shape=list(shape), seeds_stacked=seeds, n1=sz["n1"], n2=sz["n2"], repeats=sz["repeats"],
        n_val=sz["n_val"], n_test=sz["n_test"], data="random tensors of the dataset's shapes",
        lr="0.1 (random data; the cost of a step does not depend on it)"), variants={})
    n1, n2 = sz["n1"], sz["n2"]
    for variant in VARIANTS:
        out["variants"][variant] = {}
        for engine in ("one_by_one", "stacked"):
            t0 = time.monotonic()
            try:
                run = one_call(variant, engine)
                if not dry:
                    run(n1)  # warm-up: cuDNN's choices, allocations, vmap's first trace
                t1s, t2s, w1s, w2s = [], [], [], []
                peak = None
                for _ in range(sz["repeats"]):
                    e1, w1 = clock.time(lambda: run(n1))
                    if clock.cuda:
                        torch.cuda.reset_peak_memory_stats()
                    e2, w2 = clock.time(lambda: run(n2))
                    if clock.cuda:
                        peak = torch.cuda.max_memory_allocated() / 2**20
                    t1s.append(e1), t2s.append(e2), w1s.append(w1), w2s.append(w2)
                step = (min(t2s) - min(t1s)) / (n2 - n1)
                step_wall = (min(w2s) - min(w1s)) / (n2 - n1)
                res: dict[str, Any] = dict(step_ms=round(1e3 * step, 4), step_ms_wall=round(1e3 * step_wall, 4),
                                           eval_s=round(max(min(t1s) - n1 * step, 0.0), 5),
                                           run_s=dict(n1=[round(t, 5) for t in t1s], n2=[round(t, 5) for t in t2s]),
                                           peak_memory_mib=None if peak is None else round(peak, 1),
                                           noisy=bool(step <= 0 or step_wall <= 0))  # a difference lost in noise
                try:  # the profiler's reading is extra: its failure keeps the step time
                    b1, b2 = clock.busy(lambda: run(n1)), clock.busy(lambda: run(n2))
                    if b1 is not None and b2 is not None:
                        busy = (b2 - b1) / (n2 - n1)
                        res.update(busy_ms_per_step=round(1e3 * busy, 4),
                                   busy_fraction=round(busy / step, 4) if step > 0 else None)
                except Exception as exc:  # noqa: BLE001
                    res["busy_error"] = f"{type(exc).__name__}: {exc}"[:300]
                try:
                    s1, s2 = clock.syncs(lambda: run(n1)), clock.syncs(lambda: run(n2))
                    if s1 is not None and s2 is not None:
                        res["syncs_per_step"] = round((s2 - s1) / (n2 - n1), 3)
                except Exception as exc:  # noqa: BLE001
                    res["syncs_error"] = f"{type(exc).__name__}: {exc}"[:300]
                res["seconds"] = round(time.monotonic() - t0, 2)
                log(f"  {dataset} {variant:17s} {engine:10s} step {res['step_ms']:9.3f} ms"
                    + (f", busy {res['busy_fraction']}" if res.get("busy_fraction") is not None else "")
                    + (f", syncs/step {res['syncs_per_step']}" if "syncs_per_step" in res else ""))
            except Exception as exc:  # noqa: BLE001 - a measurement reports its error, the others still run
                if engine == "stacked" and isinstance(exc, ValueError) and "stacked" in str(exc):
                    res = dict(unsupported=str(exc)[:400])  # the stacked engine says what it does not implement
                    log(f"  {dataset} {variant:17s} {engine:10s} unsupported: {str(exc)[:100]}")
                    out["variants"][variant][engine] = res
                    flush(out)
                    continue
                res = dict(error=f"{type(exc).__name__}: {exc}"[:600], traceback=traceback.format_exc()[-2000:])
                log(f"  {dataset} {variant:17s} {engine:10s} ERROR {type(exc).__name__}: {str(exc)[:200]}")
            out["variants"][variant][engine] = res
            flush(out)
    return out


def column_protocol(dataset: str) -> dict[str, dict[str, Any]]:
    """Per method of Table 2 under the authors' protocol at the paper profile: steps, evaluations and trainings of
    one run, and whether ``--set engine=stacked`` runs it stacked today."""
    from kdlib.experiments.protocol import authors_protocol
    from kdlib.experiments.profiles import PAPER_IMAGES, profile_seeds, resolve_config
    from kdlib.methods import get_method
    from kdlib.names import METHOD_NAMES
    from kdlib.train import evaluates_after

    from kdlib.experiments.runner import choose_backend

    out = {}
    for m in METHOD_NAMES:
        cfg = resolve_config(dataset, m, "paper", 0, **authors_protocol(m, dataset), engine="stacked")
        n_full = PAPER_IMAGES[dataset]
        n = n_full - n_full // 10 if get_method(m).uses_val_split else n_full
        epochs = int(cfg.epochs)
        out[m] = dict(epochs=epochs, batch_size=int(cfg.batch_size), n_train=n,
                      steps=epochs * math.ceil(n / int(cfg.batch_size)),
                      evals=sum(evaluates_after(e, epochs, cfg.log_every, cfg.eval_every) for e in range(epochs)),
                      trainings=int(cfg.hyperopt_evals) if m == "hyperopt" else 1,
                      runs=profile_seeds("paper", dataset), estimator=cfg.estimator, variant=METHOD_VARIANT[m],
                      stacked_today=choose_backend(cfg, runs=profile_seeds("paper", dataset)).backend == "stacked")
    return out


# ------------------------------------------------------------------------------------------- 4. projection
def _timing(variants: dict[str, Any], variant: str, engine: str) -> tuple[float, float] | None:
    r = variants.get(variant, {}).get(engine, {})
    return (r["step_ms"] / 1e3, r["eval_s"]) if "step_ms" in r else None


def project(step_times: dict[str, Any], seeds: int) -> dict[str, Any]:
    """The projected time of each column and of Table 2 (module docstring's formula)."""
    per_column: dict[str, Any] = {}
    totals = {"one_by_one": 0.0, "today": 0.0, "all_stacked": 0.0}
    missing: list[str] = []
    for dataset, res in step_times.items():
        if "variants" not in res:
            missing.append(dataset)
            continue
        variants = res["variants"]
        col: dict[str, Any] = {"per_method": {}, "notes": []}
        sums = {k: 0.0 for k in totals}
        for m, p in (res.get("column_protocol") or column_protocol(dataset)).items():
            v = p["variant"]
            one = _timing(variants, v, "one_by_one")
            stacked = _timing(variants, v, "stacked")
            standin = None
            if stacked is None and v in STACKED_STANDIN:
                standin = _timing(variants, STACKED_STANDIN[v], "stacked")
            if one is None:
                missing.append(f"{dataset}/{m}")
                continue
            groups = math.ceil(p["runs"] / seeds)

            def cost(t: tuple[float, float], count: int) -> float:
                return count * p["trainings"] * (p["steps"] * t[0] + p["evals"] * t[1])

            t_one = cost(one, p["runs"])
            stacked_today = p["stacked_today"] if p["stacked_today"] is not None else (
                stacked is not None and m != "hyperopt")
            t_today = cost(stacked, groups) if (stacked_today and stacked is not None) else t_one
            best = stacked if stacked is not None else standin
            t_all = cost(best, groups) if best is not None else t_one
            if stacked is None and standin is not None:
                col["notes"].append(f"{m}: the stacked {v} step is not implemented; all_stacked uses the stacked "
                                    f"{STACKED_STANDIN[v]} step in its place")
            col["per_method"][m] = dict(variant=v, steps=p["steps"], evals=p["evals"], trainings=p["trainings"],
                                        runs=p["runs"], one_by_one_s=round(t_one, 1), today_s=round(t_today, 1),
                                        all_stacked_s=round(t_all, 1), stacked_today=bool(stacked_today))
            sums["one_by_one"] += t_one
            sums["today"] += t_today
            sums["all_stacked"] += t_all
        col.update({f"{k}_min": round(v / 60, 2) for k, v in sums.items()})
        per_column[dataset] = col
        for k in totals:
            totals[k] += sums[k]
    busy = [r["variants"][v]["stacked"].get("busy_fraction") for r in step_times.values() if "variants" in r
            for v in r["variants"] if isinstance(r["variants"][v].get("stacked"), dict)]
    busy = [b for b in busy if b is not None]
    table2 = {k: round(v / 60, 2) for k, v in totals.items()}
    return dict(formula=("steps(m) = epochs(m) * ceil(n(m) / batch_size); run = steps * step + evals * eval; "
                         "column = sum_m count(m) * trainings(m) * run, count = runs (one by one) or ceil(runs / S) "
                         "(stacked, S seeds per model); Table 2 = the three image columns (synthetic: CPU, seconds)"),
                seeds_stacked=seeds, per_column=per_column, table2_min=table2,
                target=dict(table2_all_stacked_le_30_min=(table2["all_stacked"] <= 30) if not missing else None,
                            stacked_busy_fraction_min=min(busy) if busy else None,
                            stacked_busy_ge_80=(min(busy) >= 0.8) if busy else None),
                incomplete=missing)


# --------------------------------------------------------------------------------------------- 5. graphs
def bench_graphs(dataset: str, device_name: str, seeds: int, dry: bool, log: Log,
                 flush: Callable[[dict[str, Any]], None] = lambda partial: None) -> dict[str, Any]:
    """Stage 5 on ``dataset``'s shapes (module docstring): per variant of :data:`GRAPH_VARIANTS`, the eager and the
    graphed stacked backend from the same seeds through the same steps, their largest differences, then the step
    time of each; ``flush(partial)`` after each variant."""
    from kdlib.methods import get_method
    from kdlib.models import make_student
    from kdlib.train import Problem, Split
    from kdlib.train import stacked, stacked_graph

    device = torch.device(device_name)
    clock = Clock(device)
    bs = 8 if dry else int(variant_config(dataset, "fixed", 0, device_name).batch_size)
    short = max(1, bs // 2)  # a last batch of another shape: graphs of its own
    rounds, n_time = (2, 4) if dry else (4, 20)
    shape = (1, 28, 28) if dataset == "fashion_mnist" else (3, 32, 32)
    g = torch.Generator().manual_seed(0)
    n = 2 * bs + short
    x = torch.randn(n, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    t = (3 * torch.randn(n, 10, generator=g)).to(device)
    xv = torch.randn(bs, *shape, generator=g).to(device)
    yv = torch.randint(0, 10, (bs,), generator=g).to(device)
    problem = Problem(train=Split(x, y, t), val=Split(xv, yv), test=Split(xv, yv),
                      make_student=lambda: make_student(dataset))
    full_a, full_b = ([(x[i:i + bs], y[i:i + bs], t[i:i + bs])] * seeds for i in (0, bs))
    last = [(x[2 * bs:], y[2 * bs:], t[2 * bs:])] * seeds

    def val() -> tuple[torch.Tensor, torch.Tensor]:
        return xv, yv

    out: dict[str, Any] = dict(setup=dict(
        dataset=dataset, device=device_name, seeds_stacked=seeds, batch_size=bs, last_batch=short,
        equality_steps=3 * rounds, timed_steps=n_time, capturer="CudaGraphs" if clock.cuda else "StandIn (CPU)",
        warmup=stacked_graph.WARMUP, data="random tensors of the dataset's shapes"), variants={})
    for variant in GRAPH_VARIANTS:
        t0 = time.monotonic()
        try:
            method = VARIANTS[variant][0]
            m = get_method(method)
            cfgs = [variant_config(dataset, variant, s, device_name, bs) for s in range(seeds)]
            values = torch.stack([m.initial(c).detach().float().cpu() for c in cfgs])
            schedule = "fixed" if variant == "fixed" else m.schedule
            eager = stacked.build(cfgs, problem, values, schedule)
            graphed = stacked_graph.build(cfgs, problem, values, schedule,
                                          capturer=None if clock.cuda else stacked_graph.StandIn())
            for backend in (eager, graphed):  # the same steps: full, full, last, ... (each key warmed, captured)
                backend.set_lr(float(cfgs[0].lr))
                backend.new_epoch()
                for _ in range(rounds):
                    for b in (full_a, full_b, last):
                        backend.step(b, val)
            clock.sync()
            diff = max(float((eager.params[k] - graphed.params[k]).detach().abs().max()) for k in eager.params)
            bdiff = max((float((eager.buffers[k].double() - graphed.buffers[k].double()).abs().max())
                         for k in eager.buffers), default=0.0)
            vdiff = float((eager.values - graphed.values).abs().max())
            res: dict[str, Any] = dict(max_abs_diff_params=diff, max_abs_diff_buffers=bdiff, max_abs_diff_values=vdiff,
                                       bit_identical=diff == bdiff == vdiff == 0.0,
                                       capturer_after_equality=graphed.capturer.counts())
            for name, backend in (("eager", eager), ("graphed", graphed)):
                evs, walls = [], []
                for _ in range(2):
                    ev, wall = clock.time(lambda: [backend.step(b, val) for b in (full_a, full_b) * (n_time // 2)])
                    evs.append(ev), walls.append(wall)
                res[f"{name}_step_ms"] = round(1e3 * min(evs) / n_time, 4)
                res[f"{name}_step_ms_wall"] = round(1e3 * min(walls) / n_time, 4)
            res["graphed_speedup"] = round(res["eager_step_ms"] / res["graphed_step_ms"], 3) \
                if res["graphed_step_ms"] > 0 else None
            res["capturer"] = graphed.capturer.counts()
            res["seconds"] = round(time.monotonic() - t0, 2)
            log(f"  {dataset} {variant:17s} eager {res['eager_step_ms']:9.3f} ms, graphed "
                f"{res['graphed_step_ms']:9.3f} ms (x{res['graphed_speedup']}), max |diff| {diff:.2e}")
        except Exception as exc:  # noqa: BLE001 - a measurement reports its error, the others still run
            if isinstance(exc, ValueError) and ("cannot train" in str(exc) or "stacked tuned backend" in str(exc)):
                res = dict(unsupported=str(exc)[:400])  # a variant a backend refuses: its reason
                log(f"  {dataset} {variant:17s} unsupported: {str(exc)[:100]}")
            else:
                res = dict(error=f"{type(exc).__name__}: {exc}"[:600], traceback=traceback.format_exc()[-2000:])
                log(f"  {dataset} {variant:17s} ERROR {type(exc).__name__}: {str(exc)[:200]}")
        out["variants"][variant] = res
        flush(out)
    return out


# ---------------------------------------------------------------------------------------------- 6. tuner
def bench_tuner(device_name: str, dry: bool) -> dict[str, Any]:
    """Stage 6: :func:`benchmarks.tuner.bench_tuner_step` on ``device_name`` (CIFAR-10 student, batch 128 on random
    tensors; the dry run: batch 8, 3 rounds) and issue 22's after-backward ratios."""
    from benchmarks.fixtures import fake_teacher, image_data
    from benchmarks.tuner import bench_tuner_step
    from kdlib.models import make_student

    device = torch.device(device_name)
    bs = 8 if dry else 128
    x, y, source = image_data("cifar10_reduced", 2 * bs, device, allow_real=False)
    students = {"cifar10": dict(make=lambda: make_student("cifar10_reduced").to(device),
                                train=(x[:bs], y[:bs], fake_teacher(y[:bs])), val=(x[bs:], y[bs:]), t_val=1.0,
                                source=source + "; fabricated teacher logits")}
    out = bench_tuner_step(students, Timer(device), quick=dry)
    sgd = out["sgd"]
    ratios = {est: sgd[f"tuner_{est}_after_backward_over_plain"] for est in ("unrolled", "finite_difference")}
    out["issue_22"] = dict(after_backward_over_plain=ratios, target="<= 2.6 (both estimators)",
                           meets_target=all(r <= 2.6 for r in ratios.values()), device=device_name, batch_size=bs)
    return out


# --------------------------------------------------------------------------------------------- 7. column
def column_invocations() -> list[tuple[str, ...]]:
    """:data:`COLUMN_ORDER` split so that the methods of one CLI invocation share the authors' protocol flags (the
    random baseline has its own ``random_law``)."""
    from kdlib.experiments.protocol import authors_protocol

    out: list[tuple[str, ...]] = []
    for group in COLUMN_ORDER:
        by_flags: dict[str, list[str]] = {}
        for m in group:
            by_flags.setdefault(json.dumps(authors_protocol(m, "cifar10_reduced"), sort_keys=True), []).append(m)
        out += [tuple(ms) for ms in by_flags.values()]
    return out


def column_command(methods: tuple[str, ...], out_dir: Path, device: str, workers: int, dry: bool,
                   tf32: bool = False) -> list[str]:
    """The ``kdlib run`` of the reduced CIFAR-10 column's ``methods`` under the authors' protocol on ``device``,
    with the run's TF32 setting as the runs' config field (set only when on: the keys of float32 runs)."""
    from kdlib.experiments.protocol import authors_protocol

    flags = {json.dumps(authors_protocol(m, "cifar10_reduced"), sort_keys=True) for m in methods}
    if len(flags) != 1:
        raise ValueError(f"{methods}: the authors' protocol differs between these methods; run them apart")
    sets = {**authors_protocol(methods[0], "cifar10_reduced"), "engine": "stacked"}
    if dry:
        sets.update(epochs=1, n_train=40, n_test=20, hyperopt_evals=2)
    if tf32:
        sets["tf32"] = True
    cmd = [sys.executable, "-m", "kdlib", "run", "--dataset", "cifar10_reduced",
           "--methods", ",".join(methods), "--profile", "smoke" if dry else "paper", "--seeds", "2" if dry else "10",
           "--device", device, "--workers", str(workers), "--no-progress", "--out", str(out_dir)]
    return cmd + [f"--set={k}={v}" for k, v in sets.items()]


def column_data_missing() -> str | None:
    """Why the reduced CIFAR-10 column cannot run here (no data or no authors' logits), or None."""
    from kdlib.paths import data_root
    from kdlib.teachers.authors import authors_logits_path

    root = data_root(None)
    need = [root / "cifar10" / "train.npz", root / "cifar10" / "test.npz", authors_logits_path("authors_resnet")]
    absent = [str(p) for p in need if not p.is_file()]
    return f"not found: {', '.join(absent)} (stage them: tools/gpu_stage.py)" if absent else None


def branches(out_dir: Path) -> dict[str, Any]:
    """Final branch of each tuned GPU run against the CPU archive's run of the same method and seed."""
    from kdlib.analysis.archive import branch_of
    from kdlib.experiments.protocol import archive_dir

    def final(rec: dict[str, Any]) -> tuple[str, float | None]:
        if rec["summary"].get("status") != "ok" or not rec["history"]:
            return "diverged", None
        return branch_of(1.0 - float(rec["history"][-1]["lambda1"])), rec["summary"].get("final_accuracy")

    cpu_dir = archive_dir("cifar10_reduced", "authors", REPO / "archive")
    rows, same = [], {}
    for path in sorted((out_dir / "runs").glob("*.json")):
        rec = json.loads(path.read_text())
        m, s = rec["config"]["method"], rec["config"]["seed"]
        if m not in ("gradient", "proposed"):
            continue
        ref = sorted(cpu_dir.glob(f"cifar10_reduced__{m}__seed{s}__*.json"))
        gb, ga = final(rec)
        row: dict[str, Any] = dict(method=m, seed=s, gpu_branch=gb, gpu_accuracy=ga)
        if ref:
            cb, ca = final(json.loads(ref[0].read_text()))
            row.update(cpu_branch=cb, cpu_accuracy=ca, same_branch=gb == cb)
            same.setdefault(m, [0, 0])
            same[m][0] += gb == cb
            same[m][1] += 1
        rows.append(row)
    return dict(runs=rows, same_branch={m: f"{a}/{b}" for m, (a, b) in same.items()},
                target="the gradient-based runs end on the CPU archive's branch in >= 8/10")


def run_column(args: argparse.Namespace, log: Log, deadline: float) -> dict[str, Any]:
    """Stage 5 in a temporary folder (removed after; the records leave in the tarball): :func:`_run_column`."""
    work = Path(tempfile.mkdtemp(prefix="kdlib-column-"))
    try:
        return _run_column(args, log, deadline, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_column(args: argparse.Namespace, log: Log, deadline: float, work: Path) -> dict[str, Any]:
    """Stage 5. A dry run runs the same commands at the smoke profile on a few images when the data are there,
    and only plans them (configs checked, nothing computed) when they are not (CI)."""
    res: dict[str, Any] = dict(status="not run", invocations=[])
    why = column_data_missing()
    out_dir = work / "cifar10_reduced" / "authors-cuda"
    if why and not args.dry_run:
        res.update(status="skipped", reason=why)
        return res
    if why:  # a dry run without the data: plan and check the configs, compute nothing
        from kdlib.experiments.runner import plan

        for methods in column_invocations():
            cmd = column_command(methods, out_dir, args.device, 1, True, args.tf32 == "on")
            n = len(plan("cifar10_reduced", list(methods), 2, "smoke", args.device,
                         {k: v for a in cmd if a.startswith("--set=") for k, v in [_parse_set(a[6:])]}))
            res["invocations"].append(dict(methods=list(methods), command=" ".join(cmd[1:]), planned_runs=n))
        res.update(status="planned", reason=why)
        return res
    workers = min(args.column_workers, 2) if args.dry_run else args.column_workers
    for methods in column_invocations():
        left = deadline - time.monotonic()
        if left < 30:
            res["invocations"].append(dict(methods=list(methods), skipped=f"{left:.0f} s left"))
            continue
        before = len(list((out_dir / "runs").glob("*.json")))
        cmd = column_command(methods, out_dir, args.device, workers, args.dry_run, args.tf32 == "on")
        log(f"column: {','.join(methods)} ({left:.0f} s left)")
        rc, secs = run_child(cmd, log, left - 15, env=child_env(args))
        made = len(list((out_dir / "runs").glob("*.json"))) - before
        inv = dict(methods=list(methods), command=" ".join(cmd[1:]), rc=rc, seconds=round(secs, 1), records=made)
        if rc not in (0, None) and made == 0 and workers > 1 and deadline - time.monotonic() > 60:
            log("column: no record came back with workers; once more with --workers 1")
            cmd = column_command(methods, out_dir, args.device, 1, args.dry_run, args.tf32 == "on")
            rc, secs = run_child(cmd, log, deadline - time.monotonic() - 15, env=child_env(args))
            inv.update(retry_workers_1=dict(rc=rc, seconds=round(secs, 1),
                                            records=len(list((out_dir / "runs").glob("*.json"))) - before))
        res["invocations"].append(inv)
    records = sorted((out_dir / "runs").glob("*.json"))
    res.update(status=("ran" if records else "no records") + (" (dry run: smoke profile)" if args.dry_run else ""),
               records=len(records), workers=workers)
    if records:
        tar = args.out / "authors-cuda.tar.gz"
        with tarfile.open(tar, "w:gz") as tf:
            for p in records:
                tf.add(p, arcname=f"cifar10_reduced/authors-cuda/runs/{p.name}")
        res["tarball"] = tar.name
        res["tarball_bytes"] = tar.stat().st_size
        try:
            res["branches"] = branches(out_dir)
        except Exception as exc:  # noqa: BLE001
            res["branches"] = dict(error=f"{type(exc).__name__}: {exc}")
    return res


def _parse_set(text: str) -> tuple[str, Any]:
    import ast

    k, v = text.split("=", 1)
    try:
        return k, ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return k, v


# ---------------------------------------------------------------------------------------------- the run
def stage_child(args: argparse.Namespace) -> int:
    """``--stage bench|graphs --dataset D[,D...]`` (step times / stage 5 per dataset) or ``--stage tuner``: JSON into
    ``--stage-out``, rewritten after each measurement, under the run's TF32 setting (:func:`kdlib.precision.tf32`)."""
    from kdlib import precision

    log = Log(None)
    out: dict[str, Any] = {}
    with precision.tf32(args.tf32 == "on", args.device):
        if args.stage == "tuner":
            t0 = time.monotonic()
            try:
                out = dict(bench_tuner(args.device, args.dry_run), complete=True)
            except Exception as exc:  # noqa: BLE001 - written down for the parent
                out = dict(error=f"{type(exc).__name__}: {exc}"[:800], traceback=traceback.format_exc()[-3000:])
            out["seconds"] = round(time.monotonic() - t0, 1)
            write_json(Path(args.stage_out), out)
            return 0
        bench = bench_dataset if args.stage == "bench" else bench_graphs
        for ds in args.dataset.split(","):
            t0 = time.monotonic()

            def flush(partial: dict[str, Any], ds: str = ds) -> None:
                write_json(Path(args.stage_out), {**out, ds: dict(partial, complete=False)})

            try:
                out[ds] = dict(bench(ds, args.device, args.seeds, args.dry_run, log, flush), complete=True)
            except Exception as exc:  # noqa: BLE001 - written down for the parent
                out[ds] = dict(error=f"{type(exc).__name__}: {exc}"[:800], traceback=traceback.format_exc()[-3000:])
            out[ds]["seconds"] = round(time.monotonic() - t0, 1)
            write_json(Path(args.stage_out), out)  # what is done survives a kill at the time box
    return 0


# the time boxes (module docstring): (cap, seconds kept for the stages after it[, floor below which it is skipped])
TESTS_BOX = (180.0, 280.0)
GRAPHS_BOX = (35.0, 40.0 + 90.0 + 60.0, 10.0)  # kept: the tuner's cap, 3 x 30 s of step times, the column's 60 s
TUNER_BOX = (40.0, 90.0 + 60.0, 10.0)
STEP_TIMES_BOX = (150.0, 60.0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu-check-out")
    ap.add_argument("--budget-s", type=float, default=460.0, help="the whole run's time budget (seconds)")
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny sizes, a few steps, the column at the smoke profile on a few images if its data are "
                         "there, else only planned (implied by --device cpu)")
    ap.add_argument("--seeds", type=int, default=10, help="runs per stacked model (the paper: 10 seeds)")
    ap.add_argument("--column-workers", type=int, default=10, help="processes of the column run (one GPU)")
    ap.add_argument("--no-column", action="store_true", help="skip stage 7")
    ap.add_argument("--no-tests", action="store_true", help="skip stage 2")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--tf32", default="off", choices=["off", "on"],
                    help="the run's TF32 setting (kdlib.precision): off (default), float32 products in float32 as on "
                         "the CPU; on: TF32 convolutions and matrix products (CUDA only)")
    ap.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--stage-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device == "cpu":
        args.dry_run = True
    if args.tf32 == "on" and args.device != "cuda":
        ap.error("--tf32 on rounds CUDA float32 products to TF32; use it with --device cuda")
    if args.stage is not None:
        return stage_child(args)
    if args.dry_run:
        args.seeds = min(args.seeds, 2)
    args.out = Path(args.out).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    deadline = t_start + args.budget_s
    log = Log(args.out / "gpu_check.log")
    results: dict[str, Any] = dict(schema=SCHEMA, tool="tools/gpu_check.py", argv=argv, device=args.device,
                                   dry_run=args.dry_run, budget_s=args.budget_s, tf32=args.tf32, started=utc_now(),
                                   stages={}, errors=[])
    path = args.out / "results-cuda.json"

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        log(f"stage {name}: start ({deadline - t0:.0f} s of the budget left)")
        try:
            value = fn()
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - one failure must not cost the other stages
            value = None
            status = "error"
            results["errors"].append(dict(stage=name, error=f"{type(exc).__name__}: {exc}"[:1000],
                                          traceback=traceback.format_exc()[-3000:]))
            log(f"stage {name}: ERROR {type(exc).__name__}: {exc}")
        results["stages"][name] = dict(status=status, seconds=round(time.monotonic() - t0, 1))
        if value is not None:
            results[name] = value
        results["elapsed_s"] = round(time.monotonic() - t_start, 1)
        write_json(path, results)
        log(f"stage {name}: {status} in {time.monotonic() - t0:.1f} s")
        return value

    if args.device == "cuda" and not torch.cuda.is_available():
        results["errors"].append(dict(stage="start", error="--device cuda but torch sees no CUDA device"))
    stage("environment", lambda: environment(args.device, args.out, args.tf32))
    if not args.no_tests:
        cap, reserve = TESTS_BOX
        stage("tests", lambda: run_tests(args, log, min(cap, max(30.0, deadline - time.monotonic() - reserve))))
    names = [d for d in args.datasets.split(",") if d]

    def child(kind: str, chunk: list[str], box: float) -> tuple[dict[str, Any], int | None, float]:
        """One ``--stage kind`` child process on ``chunk``, killed at ``box`` seconds: (its JSON, exit, seconds)."""
        stage_out = args.out / f".{kind}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", kind, "--dataset", ",".join(chunk),
               "--device", args.device, "--seeds", str(args.seeds), "--stage-out", str(stage_out),
               "--tf32", args.tf32, *(["--dry-run"] if args.dry_run else [])]
        rc, secs = run_child(cmd, log, box, env=child_env(args))
        got = json.loads(stage_out.read_text()) if stage_out.is_file() else {}
        stage_out.unlink(missing_ok=True)
        return got, rc, secs

    def per_dataset(kind: str, cap: float, reserve: float, floor: float = 0.0) -> dict[str, Any]:
        """One child process per dataset on the GPU (a hang or crash costs one dataset); all in one in a dry run.
        Each gets at most ``cap`` seconds and leaves ``reserve`` to the stages after; below ``floor`` it is skipped
        (``floor`` 0: the step times' old rule, at least 20 s)."""
        out: dict[str, Any] = {}
        chunks = [names] if args.dry_run else [[d] for d in names]
        for i, chunk in enumerate(chunks):
            left = deadline - time.monotonic()
            share = (left - reserve) / (len(chunks) - i)
            box = 240.0 if args.dry_run else (min(cap, max(20.0, share)) if floor == 0 else min(cap, share))
            if box < floor:
                for ds in chunk:
                    out[ds] = dict(skipped=f"{left:.0f} s of the budget left ({reserve:.0f} s kept for the stages "
                                           f"after this one)")
                continue
            log(f"{kind}: {', '.join(chunk)} (time box {box:.0f} s)")
            got, rc, secs = child(kind, chunk, box)
            for ds in chunk:
                out[ds] = got.get(ds) or dict(error=f"no result (exit {rc}, "
                                                    f"{'killed at the time box' if rc is None else 'crashed'})",
                                              seconds=round(secs, 1))
        return out

    stage("graphs", lambda: per_dataset("graphs", *GRAPHS_BOX))

    def tuner() -> dict[str, Any]:
        cap, reserve, floor = TUNER_BOX
        left = deadline - time.monotonic()
        box = 240.0 if args.dry_run else min(cap, left - reserve)
        if box < floor:
            return dict(skipped=f"{left:.0f} s of the budget left ({reserve:.0f} s kept for the stages after it)")
        log(f"tuner: bench_tuner_step on {args.device} (time box {box:.0f} s)")
        got, rc, secs = child("tuner", names[:1], box)
        return got or dict(error=f"no result (exit {rc}, {'killed at the time box' if rc is None else 'crashed'})",
                           seconds=round(secs, 1))

    stage("tuner", tuner)
    st = stage("step_times", lambda: per_dataset("bench", *STEP_TIMES_BOX))
    if st is not None:
        stage("projection", lambda: project(st, args.seeds))
    if not args.no_column:
        stage("column", lambda: run_column(args, log, deadline - 10))
    results["finished"] = utc_now()
    results["elapsed_s"] = round(time.monotonic() - t_start, 1)
    results["files"] = sorted(p.name for p in args.out.iterdir() if p.is_file())
    write_json(path, results)
    log(f"done in {results['elapsed_s']} s: {path}")
    proj = results.get("projection", {})
    if proj:
        log(f"Table 2 projected (min): {proj.get('table2_min')}; target {proj.get('target')}")
    graphs = {ds: {v: r.get("graphed_speedup") for v, r in res.get("variants", {}).items()}
              for ds, res in (results.get("graphs") or {}).items()}
    if graphs:
        log(f"graphed stacked step speedup (eager / graphed): {graphs}")
    issue22 = (results.get("tuner") or {}).get("issue_22")
    if issue22:
        log(f"issue 22 after-backward over plain: {issue22['after_backward_over_plain']} (target <= 2.6)")
    return 0 if not results["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
