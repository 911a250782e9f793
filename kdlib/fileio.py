"""File helpers shared by the data, teacher, store and analysis layers: atomic writes, the SHA-256 of a file,
and a verified fetch (download to memory, check the SHA-256, write atomically).

It sits at the bottom of kdlib's import graph: the standard library only, nothing of the paper. (Named
``fileio``, not ``io``, so that it never shadows the standard library's :mod:`io`.)

An atomic write goes to a unique hidden temporary file beside the target (``.<name>.XXXX.tmp``), is flushed
to disk and moved in place with ``os.replace``: a reader sees the old file or the whole new one, never a
half-written or mixed file, and concurrent writers each replace the whole file. The file gets the mode a
plain ``open`` would give it.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (0644 under the usual umask 022)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a unique temporary file beside ``path`` for writing (``mode`` ``"wb"`` or ``"w"``); on a clean exit
    it is flushed, synced and moved onto ``path``; on any error it is removed and ``path`` is left as it was.
    The parent folder is created if needed."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb") as fh:
        fh.write(payload)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically, in text mode (see :func:`atomic_open`)."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


_SHA256: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> hex digest


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB chunks; memoised per resolved path, size and modification time,
    so a large file is hashed once per process until it changes."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA256[key] = h.hexdigest()
    return _SHA256[key]


# what a download raises when there is no network, the host is blocked or it times out
NETWORK_ERRORS = (urllib.error.URLError, OSError, TimeoutError)


def download(url: str, timeout: float) -> bytes:
    """The body of ``url``, read into memory (no network, a blocked host or a timeout raise one of
    :data:`NETWORK_ERRORS`)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - callers pass fixed https URLs
        return resp.read()


class ChecksumMismatch(ValueError):
    """A downloaded file whose SHA-256 is not the pinned one (nothing was written)."""

    def __init__(self, url: str, expected: str, got: str) -> None:
        super().__init__(f"SHA-256 mismatch for {url}: expected {expected}, got {got}; file not written")
        self.url, self.expected, self.got = url, expected, got


def fetch_verified(url: str, sha256: str, dest: str | os.PathLike, timeout: float = 60.0) -> Path:
    """Download ``url`` to memory, check that its SHA-256 is ``sha256`` (else :class:`ChecksumMismatch`, and
    ``dest`` is not touched), write it to ``dest`` atomically and return ``dest``."""
    payload = download(url, timeout)
    got = hashlib.sha256(payload).hexdigest()
    if got != sha256:
        raise ChecksumMismatch(url, sha256, got)
    dest = Path(dest)
    atomic_write_bytes(dest, payload)
    return dest
