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
3. ``step_times``, per image dataset (one process each): the student's step one by one and stacked (``--seeds``
   runs as one vmapped model), fixed and tuned, its GPU busy fraction, host synchronisations and peak memory
   (:mod:`benchmarks.step_times`, whose docstring says how each is measured).
4. ``projection``: the time of each Table 2 column and of the whole table (:mod:`benchmarks.projection`, its formula).
5. ``graphs``, per image dataset (one process each): the stacked step eager against the same step captured into
   CUDA graphs, their largest difference and the speed-up (:mod:`benchmarks.cuda_graphs`).
6. ``tuner``: :func:`benchmarks.tuner.bench_tuner_step` on the device (the Tuner's iteration against a plain step
   on the CIFAR-10 student, batch 128; on CUDA the timer synchronises around each call), with issue 22's figures
   ``tuner_*_after_backward_over_plain`` (target <= 2.6) gathered under ``issue_22``.
7. ``column``: if the budget allows, the reduced CIFAR-10 column under the authors' protocol
   (:func:`kdlib.experiments.protocol.authors_protocol`, ``--set engine=stacked``), gradient-based first, through the
   CLI on the GPU, with ``--column-workers`` processes; its records are packed into ``authors-cuda.tar.gz``
   (``cifar10_reduced/authors-cuda/runs/*.json``) and the final branch of each tuned run is compared with the CPU
   archive's run of the same seed (``archive/cifar10_reduced/authors/runs``).

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
only (each stage is a child process, and the :mod:`benchmarks` modules they call import kdlib inside their
functions too): a missing package fails that stage, with its error in the JSON, not the run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
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
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # kdlib from this checkout's source

import torch  # noqa: E402  (after the path: the device machine runs kdlib from source)

from benchmarks.cuda_graphs import bench_graphs  # noqa: E402
from benchmarks.projection import project  # noqa: E402
from benchmarks.step_times import bench_step_times  # noqa: E402
from benchmarks.timing import Timer  # noqa: E402

SCHEMA = 1
DATASETS = ("cifar10_reduced", "cifar10", "fashion_mnist")
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
        bench = bench_step_times if args.stage == "bench" else bench_graphs
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
