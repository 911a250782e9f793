#!/usr/bin/env python
"""Execute the book's notebooks with papermill at one profile, then ``jupyter-book build book/`` (``make book``).

    python tools/build_book.py --profile quick --device cpu [--seeds N] [--only NAME ...] [--no-build]
                               [--warnings-as-errors]

This is book/README.md's papermill route for every page at once: each ``notebooks/NN_name.md`` (Jupytext MyST
markdown) is converted to ``.ipynb`` and executed by papermill (kernel ``python3``, parameters ``profile``,
``device`` and ``seeds`` when given) into the executed copy ``book/NN_name.ipynb``, with its wall time printed.
Then the ordinary ``jupyter-book build book/`` renders the book, where an executed copy takes precedence over
its source (``book/_ext/kdbook_pages.py``); a page with no copy (with ``--only``) is executed by Jupyter Book
at the same profile. ``--warnings-as-errors`` adds ``-W -n --keep-going``. A notebook that raises fails (exit
1); the notebooks themselves handle a missing dataset by saying so and skipping the rest of the page.

Run it with the virtual environment's python: the kernel is started from the same interpreter.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
BOOK = REPO / "book"
GENERATED = BOOK / "_generated"
KERNEL = "python3"


def ensure_kernel() -> None:
    """Make sure a ``python3`` kernelspec exists that runs this interpreter (installs one into sys.prefix)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
        exe = spec.argv[0]
        if exe in ("python", "python3") or Path(exe).resolve() == Path(sys.executable).resolve():
            return
        print(f"[build_book] kernel {KERNEL!r} runs {exe}, not {sys.executable}; installing one into "
              f"{sys.prefix}", flush=True)
    except NoSuchKernel:
        print(f"[build_book] no {KERNEL!r} kernel; installing one into {sys.prefix}", flush=True)
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL,
                    "--display-name", "Python 3 (kdlib)"], check=True, stdout=subprocess.DEVNULL)


def notebook_sources(only: list[str] | None) -> list[Path]:
    srcs = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.md"))
    if only:
        picked = []
        for name in only:
            match = [p for p in srcs if p.stem == name or p.stem.startswith(name + "_") or p.stem.startswith(name)]
            if not match:
                raise SystemExit(f"--only {name}: no notebook matches; have {', '.join(p.stem for p in srcs)}")
            picked.extend(m for m in match if m not in picked)
        srcs = picked
    return srcs


def to_ipynb(src: Path, dest: Path) -> Path:
    import jupytext

    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3 (kdlib)", "language": "python"}
    nb.metadata.pop("jupytext", None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, dest, fmt="ipynb")
    return dest


def execute(src: Path, profile: str, device: str, seeds: int | None, timeout: int | None) -> tuple[bool, float, str]:
    import papermill as pm

    raw = to_ipynb(src, GENERATED / "src" / f"{src.stem}.ipynb")
    out = executed_copy(src)
    params: dict[str, object] = {"profile": profile, "device": device}
    if seeds is not None:
        params["seeds"] = seeds
    t0 = time.perf_counter()
    err = ""
    try:
        pm.execute_notebook(str(raw), str(out), parameters=params, kernel_name=KERNEL, cwd=str(REPO),
                            progress_bar=False, log_output=False, execution_timeout=timeout)
        ok = True
    except Exception as exc:  # papermill's PapermillExecutionError, a dead kernel, a timeout, ...
        ok = False
        err = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    return ok, time.perf_counter() - t0, err


def executed_copy(src: Path) -> Path:
    """Where the executed copy of ``notebooks/NN_name.md`` goes: ``book/NN_name.ipynb``, beside the page's link."""
    return BOOK / f"{src.stem}.ipynb"


def build(warnings_as_errors: bool) -> int:
    """``jupyter-book build book/`` (the HTML goes to ``book/_build/html``)."""
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "jupyter_book.cli.main"]
    cmd += ["build", "book/"]
    if warnings_as_errors:
        cmd += ["-W", "-n", "--keep-going"]
    print("[build_book] " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=str(REPO)).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=os.environ.get("KDLIB_PROFILE", "quick"),
                    choices=("smoke", "quick", "paper"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, default=None, help="override the profile's number of seeds")
    ap.add_argument("--only", action="append", default=None, metavar="NAME",
                    help="execute only this notebook (stem or prefix, e.g. 02_lemma1 or 02); repeatable")
    ap.add_argument("--no-build", action="store_true", help="execute only; skip jupyter-book build")
    ap.add_argument("--warnings-as-errors", action="store_true", help="jupyter-book build -W -n --keep-going")
    ap.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    args = ap.parse_args(argv)

    os.environ["KDLIB_PROFILE"] = args.profile
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend puts the figures into the notebook
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    if args.profile == "smoke":  # tiny models: one thread each is faster and fair on a shared 2-core machine
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO))
    ensure_kernel()
    srcs = notebook_sources(args.only)
    print(f"[build_book] profile={args.profile} device={args.device} notebooks={len(srcs)}", flush=True)
    timings: dict[str, dict[str, object]] = {}
    failed = []
    t_all = time.perf_counter()
    for src in srcs:
        print(f"[build_book] {src.stem}: executing", flush=True)
        ok, secs, err = execute(src, args.profile, args.device, args.seeds, args.timeout)
        timings[src.stem] = {"seconds": round(secs, 2), "ok": ok}
        print(f"[build_book] {src.stem}: {'ok' if ok else 'FAILED'} in {secs:.1f} s" + (f"  ({err})" if err else ""),
              flush=True)
        if not ok:
            failed.append(src.stem)
    total = time.perf_counter() - t_all
    GENERATED.mkdir(parents=True, exist_ok=True)
    (GENERATED / f"timings_{args.profile}.json").write_text(json.dumps(
        {"profile": args.profile, "device": args.device, "total_seconds": round(total, 2), "notebooks": timings},
        indent=1))
    print("[build_book] wall time per notebook:")
    for stem, t in timings.items():
        print(f"  {stem:28s} {t['seconds']:8.1f} s  {'ok' if t['ok'] else 'FAILED'}")
    print(f"  {'total':28s} {total:8.1f} s")
    if failed:
        print(f"[build_book] FAILED: {', '.join(failed)} (the executed notebooks in book/ show the error)",
              file=sys.stderr)
        return 1
    if args.no_build:
        return 0
    rc = build(args.warnings_as_errors)
    if rc != 0:
        print(f"[build_book] jupyter-book build failed (exit {rc})", file=sys.stderr)
        return rc
    print(f"[build_book] HTML: {BOOK / '_build' / 'html' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
