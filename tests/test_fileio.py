"""kdlib.fileio: atomic writes (whole file or old file, no temporary left, open()'s mode), the SHA-256 of a
file (equal to hashlib's on the bytes, recomputed when the file changes), the verified fetch."""
from __future__ import annotations

import hashlib
import io
import os
import urllib.request

import pytest

from kdlib import fileio


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_atomic_writes_replace_whole_file_with_open_mode(tmp_path):
    p = tmp_path / "sub" / "a.txt"  # the parent folder is created
    fileio.atomic_write_text(p, "first\n")
    fileio.atomic_write_text(p, "second, longer\n")
    assert p.read_text() == "second, longer\n"
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert _mode(p) == _mode(plain) == fileio.FILE_MODE
    b = tmp_path / "b.bin"
    fileio.atomic_write_bytes(b, bytes(range(256)))
    assert b.read_bytes() == bytes(range(256)) and _mode(b) == fileio.FILE_MODE
    assert sorted(os.listdir(p.parent)) == ["a.txt"]  # no temporary file left behind


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "w" / "a.txt"
    fileio.atomic_write_text(p, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with fileio.atomic_open(p, "w") as fh:
            fh.write("half of the new")
            raise RuntimeError("boom")
    assert p.read_text() == "old" and sorted(os.listdir(p.parent)) == ["a.txt"]
    with pytest.raises(ValueError, match="mode"):
        with fileio.atomic_open(p, "a"):
            pass


def test_file_sha256_matches_hashlib_and_follows_changes(tmp_path):
    p = tmp_path / "f.bin"
    payload = os.urandom((1 << 20) + 17)  # more than one 1 MiB chunk
    p.write_bytes(payload)
    assert fileio.file_sha256(p) == hashlib.sha256(payload).hexdigest()
    p.write_bytes(payload[:-1])  # another size: a new digest, not the memoised one
    assert fileio.file_sha256(p) == hashlib.sha256(payload[:-1]).hexdigest()


def test_fetch_verified_writes_only_a_matching_payload(tmp_path, monkeypatch):
    payload = b"the authors' bytes"
    seen = []

    def fake_urlopen(url, timeout=None):
        seen.append((url, timeout))
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    dest = tmp_path / "d" / "f.npy"
    bad = "0" * 64
    with pytest.raises(fileio.ChecksumMismatch, match=f"SHA-256 mismatch for https://x/f: expected {bad}, got "
                                                      f"{hashlib.sha256(payload).hexdigest()}; file not written"):
        fileio.fetch_verified("https://x/f", bad, dest, timeout=5)
    assert not dest.exists() and seen == [("https://x/f", 5)]
    assert fileio.fetch_verified("https://x/f", hashlib.sha256(payload).hexdigest(), dest) == dest
    assert dest.read_bytes() == payload and sorted(os.listdir(dest.parent)) == ["f.npy"]
