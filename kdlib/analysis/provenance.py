"""Where a number came from: the repository commit, and paths shown relative to a known root (a page never
shows an absolute local path)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from kdlib.paths import REPO_ROOT


def head_commit(repo: str | Path | None = None) -> str:
    """``git rev-parse --short HEAD`` of ``repo`` (default: this repository), or ``"unknown"``: the commit a page
    was built at, for its banner (a run's own commit is :func:`kdlib.experiments.store.git_commit`)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=str(repo or REPO_ROOT),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def display_path(path: str | os.PathLike | None, roots: dict[str, str | os.PathLike | None] | None = None) -> str:
    """``path`` for a reader: relative to the first of ``roots`` (label -> folder) that contains it, written
    ``<label>/rel/path``; else relative to the repository; else only its last component. No absolute path
    is ever returned."""
    if path is None:
        return "—"
    p = Path(path).expanduser()
    if not p.is_absolute():
        return str(p)
    p = p.resolve()
    for label, root in {**(roots or {}), "": REPO_ROOT}.items():
        if root is None:
            continue
        try:
            rel = p.relative_to(Path(root).expanduser().resolve())
        except ValueError:
            continue
        return f"{label}/{rel}" if label else str(rel)
    return p.name
