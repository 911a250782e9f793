"""Stage what the one GPU run of ``tools/gpu_check.py`` needs into the git-excluded folder ``.gpu/`` of a checkout.

    python tools/gpu_stage.py                 # in the session's checkout (the tree that travels), e.g. /work/main
    python tools/gpu_stage.py --check         # only measure what would travel and print the call

The device machine has its own python 3.12 and torch, no network, and lacks kdlib's ``hyperopt`` and ``higher``;
only the checkout travels (tracked files, untracked files git does not ignore, and the ``carry`` paths), at most
64 MiB in all, and ``../shared/data`` does not. So this fills, in the checkout:

* ``.gpu/whl/``: wheels of ``hyperopt`` and ``higher`` at the versions this environment runs, for CPython 3.12
  manylinux x86-64 (``pip download --no-deps --only-binary=:all:``, the device README's recipe), plus any
  requirement of theirs that the device image lacks (each wheel's ``Requires-Dist`` is checked against the image's
  package list, ``/work/.library/device/KINDS.md`` when present, else :data:`DEVICE_PACKAGES`);
* ``.gpu/data/``, a kdlib data root holding only what the run reads: ``cifar10/train.npz`` (the first 12,800
  training images, all that reduced CIFAR-10 uses, LZMA-zipped: about 30 MB), ``cifar10/test.npz`` (the 10,000
  test images, about 23 MB) and ``authors/teacher_logits/logits_resnet.npy`` (the authors' teacher logits, 2 MB,
  checked by SHA-256), from ``--data`` (default ``$KDLIB_DATA``, else ``../shared/data``) in any format kdlib reads;
  the copy is read back through kdlib and compared with the source;
* ``.gpu/COMMIT``: the checkout's commit (the tree travels without ``.git``; records name it);

checks that git ignores ``.gpu/`` (``.gitignore`` lists it; else ``/.gpu/`` is added to the repository's
``info/exclude``: nothing staged is committed), and measures what travels: the
tracked and untracked-not-ignored files plus ``.gpu/``, against the 64 MiB limit (exit 1 if over).

**The device call** (one ``run`` of the device tool; it prints the same with the sizes measured)::

    command:   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
               --target /tmp/site .gpu/whl/*.whl || exit 3; export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
               KDLIB_DATA=$PWD/.gpu/data KDLIB_CACHE=/tmp/kdlib-cache; python3 tools/gpu_check.py --device cuda
               --out "$OUT" --budget-s 460
    carry:     [".gpu"]
    timeout_s: 540

(the command is one line; :data:`DEVICE_COMMAND` holds it exactly). ``--budget-s 460`` ends the check inside
8 minutes; ``timeout_s`` 540 leaves a minute for the install and the copy back, and the session's 15 minutes of
device time (machine start included) room for one rerun. Everything comes back from ``$OUT``
(``results-cuda.json``, ``gpu_check.log``, ``pytest-cuda.xml``, ``nvidia-smi.txt``, ``authors-cuda.tar.gz``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kdlib.data import CIFAR_REDUCED_SIZE  # noqa: E402
from kdlib.data.sources import clear_memo, load_raw  # noqa: E402
from kdlib.teachers.authors import AUTHORS_LOGITS, authors_logits_path, verify_authors_file  # noqa: E402

STAGE_DIR = ".gpu"
LIMIT_BYTES = 64 * 2**20
WHEELS = ("hyperopt", "higher")  # kdlib's imports the device image lacks (KINDS.md's package list)
TEACHER = "authors_resnet"  # reduced CIFAR-10's teacher under the paper's protocol (teacher="auto")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
DEVICE_COMMAND = ("python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "
                  "/tmp/site .gpu/whl/*.whl || exit 3; export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 "
                  "KDLIB_DATA=$PWD/.gpu/data KDLIB_CACHE=/tmp/kdlib-cache; python3 tools/gpu_check.py --device cuda "
                  "--out \"$OUT\" --budget-s 460")
DEVICE_CARRY = [STAGE_DIR]
DEVICE_TIMEOUT_S = 540
KINDS_MD = Path("/work/.library/device/KINDS.md")
# the device image's packages that matter here, as KINDS.md listed them (2026-11-17), if that file is absent
DEVICE_PACKAGES = frozenset({"cloudpickle", "networkx", "numpy", "scipy", "six", "tqdm", "torch", "pandas",
                             "matplotlib", "pytest", "packaging", "typing-extensions", "filelock", "fsspec",
                             "jinja2", "sympy", "pyyaml", "pillow", "torchvision", "seaborn"})


# never brought as a wheel, whatever a requirement says: the device's own torch stack is the one to run on
NEVER_BRING = frozenset({"torch", "torchvision", "triton"})
WHEELS_MAX_BYTES = 8 * 2**20  # the wheels' share of the 64 MiB that travel


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def device_packages(kinds_md: Path = KINDS_MD) -> frozenset[str]:
    """The device image's package names: KINDS.md's "Packages:" list when readable, else :data:`DEVICE_PACKAGES`."""
    try:
        text = kinds_md.read_text()
    except OSError:
        return DEVICE_PACKAGES
    m = re.search(r"Packages:\s*(.+?)\.\s*$", text, re.M)
    return frozenset(norm(n) for n in m.group(1).split(",")) if m else DEVICE_PACKAGES


# ------------------------------------------------------------------------------------------------ wheels
def requires(wheel: Path) -> list[str]:
    """The unconditional requirement names of a wheel (``Requires-Dist`` without an ``extra`` marker, markers
    evaluated for CPython 3.12 on Linux x86-64)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode("utf-8", "replace").splitlines()
    out = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        spec = line.split(":", 1)[1].strip()
        req, _, marker = spec.partition(";")
        if "extra" in marker:
            continue
        if marker.strip():
            try:
                from packaging.markers import Marker

                if not Marker(marker.strip()).evaluate({"python_version": "3.12", "python_full_version": "3.12.3",
                                                        "sys_platform": "linux", "platform_system": "Linux",
                                                        "platform_machine": "x86_64",
                                                        "implementation_name": "cpython"}):
                    continue
            except Exception:  # noqa: BLE001 - keep the requirement when its marker cannot be read
                pass
        out.append(norm(re.split(r"[\s<>=!~\[(]", req.strip(), maxsplit=1)[0]))
    return out


def download(spec: str, dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(dest), spec]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def stage_wheels(dest: Path, names: tuple[str, ...] = WHEELS, on_device: frozenset[str] | None = None
                 ) -> dict[str, Any]:
    """Wheels of ``names`` at this environment's versions, and of each requirement the device lacks, into
    ``dest`` (emptied first: one version of each)."""
    on_device = device_packages() if on_device is None else on_device
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    todo = [f"{n}=={metadata.version(n)}" for n in names]
    done: set[str] = set()
    report: dict[str, Any] = {}
    while todo:
        spec = todo.pop(0)
        name = norm(spec.split("=")[0])
        if name in done:
            continue
        download(spec, dest)
        done.add(name)
        wheel = next(p for p in dest.glob("*.whl") if norm(p.name.split("-")[0]) == name)
        reqs = requires(wheel)
        missing = [r for r in reqs if r not in on_device and r not in done and r not in NEVER_BRING
                   and not r.startswith(("nvidia-", "cuda-"))]
        report[wheel.name] = dict(requires=reqs, on_device=[r for r in reqs if r in on_device], brought=missing)
        for r in missing:  # the version this environment runs, where it has one
            try:
                todo.append(f"{r}=={metadata.version(r)}")
            except metadata.PackageNotFoundError:
                todo.append(r)
    total = folder_bytes(dest)
    if total > WHEELS_MAX_BYTES:
        raise RuntimeError(f"{dest}: the wheels take {total / 2**20:.1f} MiB, over {WHEELS_MAX_BYTES // 2**20} MiB: "
                           f"{sorted(p.name for p in dest.glob('*.whl'))}")
    return report


# -------------------------------------------------------------------------------------------------- data
def write_npz_lzma(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """kdlib's npz cache (``images`` uint8, ``labels`` int64) in an LZMA zip, which ``numpy.load`` reads (about
    20 % smaller than np.savez_compressed's deflate on CIFAR-10)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as z:
        for key, arr in (("images", np.ascontiguousarray(images, dtype=np.uint8)),
                         ("labels", np.asarray(labels, dtype=np.int64))):
            with z.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)
    os.replace(tmp, path)


def default_source() -> Path | None:
    env = os.environ.get("KDLIB_DATA")
    if env:
        return Path(env)
    shared = REPO.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def stage_data(source: Path, dest: Path) -> dict[str, Any]:
    """Reduced CIFAR-10 (the first 12,800 training images, the test set) and the authors' teacher logits from the
    data root ``source`` into the data root ``dest``, read back through kdlib and checked against the source."""
    arrays, src = load_raw("cifar10_reduced", source)
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    n = min(len(ytr), CIFAR_REDUCED_SIZE)
    folder = dest / "cifar10"
    write_npz_lzma(folder / "train.npz", xtr[:n], ytr[:n])
    if (source / "cifar10" / "test.npz").is_file():  # already kdlib's format: the very bytes
        shutil.copyfile(source / "cifar10" / "test.npz", folder / "test.npz")
    else:
        write_npz_lzma(folder / "test.npz", xte, yte)
    logits_src = authors_logits_path(TEACHER, source)
    verify_authors_file(TEACHER, logits_src)
    logits_dst = authors_logits_path(TEACHER, dest)
    logits_dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(logits_src, logits_dst)
    verify_authors_file(TEACHER, logits_dst)
    clear_memo()
    back, back_src = load_raw("cifar10_reduced", dest)
    ok = (np.array_equal(back["train"][0], xtr[:n]) and np.array_equal(back["train"][1], ytr[:n])
          and np.array_equal(back["test"][0], xte) and np.array_equal(back["test"][1], yte))
    if not ok:
        raise RuntimeError(f"{dest}: the staged data do not read back as the source's ({src})")
    return dict(source=src, read_back=back_src, train_images=int(n), test_images=int(len(yte)),
                teacher=AUTHORS_LOGITS[TEACHER].file,
                files={str(p.relative_to(dest)): p.stat().st_size for p in sorted(dest.rglob("*")) if p.is_file()})


# ------------------------------------------------------------------------------------------------- sizes
def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def ignored(repo: Path, name: str = STAGE_DIR) -> bool:
    """Whether git ignores ``name`` in ``repo`` (``.gitignore`` lists ``/.gpu/``)."""
    return subprocess.run(["git", "check-ignore", "-q", f"{name}/x"], cwd=repo).returncode == 0


def exclude(repo: Path, pattern: str = f"/{STAGE_DIR}/") -> Path:
    """Add ``pattern`` to the repository's ``info/exclude`` (a worktree's too: git's common one)."""
    path = Path(git(repo, "rev-parse", "--git-path", "info/exclude").strip())
    path = path if path.is_absolute() else repo / path
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = path.read_text().splitlines() if path.is_file() else []
    if pattern not in lines:
        path.write_text("\n".join([*lines, pattern]) + "\n")
    return path


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) if path.exists() \
        else 0


def travel_bytes(repo: Path, carry: list[str]) -> dict[str, Any]:
    """What a device call sends: tracked files, untracked files git does not ignore, and the carried folders."""
    def sizes(names: list[str]) -> int:
        return sum((repo / n).stat().st_size for n in names if n and (repo / n).is_file()
                   and not (repo / n).is_symlink())

    tracked = sizes(git(repo, "ls-files", "-z").split("\0"))
    untracked_names = [n for n in git(repo, "ls-files", "-z", "-o", "--exclude-standard").split("\0") if n]
    untracked = sizes(untracked_names)
    carried = {c: folder_bytes(repo / c) for c in carry}
    total = tracked + untracked + sum(carried.values())
    return dict(tracked_bytes=tracked, untracked_not_ignored_bytes=untracked, untracked_files=untracked_names[:20],
                carried_bytes=carried, total_bytes=total, total_mib=round(total / 2**20, 2),
                limit_mib=LIMIT_BYTES // 2**20, fits=total <= LIMIT_BYTES)


def commit_of(repo: Path) -> str:
    head = git(repo, "rev-parse", "HEAD").strip()
    dirty = git(repo, "status", "--porcelain", "--untracked-files=no").strip()
    return head + ("+dirty" if dirty else "")


def device_call() -> dict[str, Any]:
    return dict(command=DEVICE_COMMAND, command_chars=len(DEVICE_COMMAND), carry=DEVICE_CARRY,
                timeout_s=DEVICE_TIMEOUT_S)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default=str(REPO), help="the checkout that travels (default: this one)")
    ap.add_argument("--data", default=None, help="source data root (default: $KDLIB_DATA, else ../shared/data)")
    ap.add_argument("--no-wheels", action="store_true")
    ap.add_argument("--no-data", action="store_true")
    ap.add_argument("--check", action="store_true", help="stage nothing: measure and print the call")
    args = ap.parse_args(argv)
    repo = Path(args.repo).resolve()
    stage = repo / STAGE_DIR
    report: dict[str, Any] = dict(repo=str(repo), stage=str(stage))
    if not args.check:
        report["ignored_by"] = ".gitignore" if ignored(repo) else f"{exclude(repo)} (added)"
        stage.mkdir(exist_ok=True)
        if not args.no_wheels:
            report["wheels"] = stage_wheels(stage / "whl")
        if not args.no_data:
            source = Path(args.data) if args.data else default_source()
            if source is None:
                print("gpu_stage: no source data root: pass --data DIR or set KDLIB_DATA", file=sys.stderr)
                return 2
            report["data"] = stage_data(source.resolve(), stage / "data")
        (stage / "COMMIT").write_text(commit_of(repo) + "\n")
        report["commit"] = (stage / "COMMIT").read_text().strip()
    report["travel"] = travel_bytes(repo, DEVICE_CARRY)
    report["device_call"] = device_call()
    print(json.dumps(report, indent=1))
    call = report["device_call"]
    print(f"\nThe device call (run tool): command={json.dumps(call['command'])} ({call['command_chars']} chars), "
          f"carry={json.dumps(call['carry'])}, timeout_s={call['timeout_s']}")
    if not report["travel"]["fits"]:
        print(f"gpu_stage: {report['travel']['total_mib']} MiB would travel, over the 64 MiB limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
