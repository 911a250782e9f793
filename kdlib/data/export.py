"""Export an image dataset into kdlib's compact npz cache (``<out>/<name>/{train,test}.npz``), and the
``kdlib export`` command."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from kdlib.data.readers import read_npz, write_npz
from kdlib.data.sources import _CACHE_NAME, load_raw
from kdlib.names import IMAGE_DATASETS
from kdlib.paths import data_root, is_writable, writable_data_dir


def export_npz(name: str, root: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
               download: bool = False, compress: bool = True) -> list[Path]:
    """Write ``<out>/<cache name>/{train,test}.npz`` from whatever copy :func:`load_raw` finds under ``root``.

    ``out`` defaults to the data root if writable, else ``writable_data_dir()``. Returns the written paths.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; choose one of: {', '.join(IMAGE_DATASETS)}")
    arrays, _ = load_raw(name, root, download)
    r = data_root(root)
    base = Path(out) if out is not None else (r if is_writable(r) else writable_data_dir())
    folder = base / _CACHE_NAME[name]
    paths = []
    for split in ("train", "test"):
        images, labels = arrays[split]
        paths.append(write_npz(folder / f"{split}.npz", images, labels, compress=compress))
    return paths


def export_main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: ``export --dataset NAME [--root R] [--out DIR] [--download] [--no-compress]``."""
    p = argparse.ArgumentParser(prog="kdlib export",
                                description="Write a dataset into kdlib's compact npz cache "
                                            "(<out>/<name>/{train,test}.npz).")
    p.add_argument("--dataset", required=True, choices=["fashion_mnist", "cifar10"])
    p.add_argument("--root", default=None, help="data root to read (default: $KDLIB_DATA or ~/.cache/kdlib/data)")
    p.add_argument("--out", default=None, help="output base folder (default: the root if writable)")
    p.add_argument("--download", action="store_true", help="download with torchvision if not found")
    p.add_argument("--no-compress", action="store_true", help="write uncompressed npz (faster to load)")
    a = p.parse_args(list(argv) if argv is not None else None)
    paths = export_npz(a.dataset, root=a.root, out=a.out, download=a.download, compress=not a.no_compress)
    for path in paths:
        images, labels = read_npz(path)
        print(f"wrote {path}: images {images.shape} {images.dtype}, labels {labels.shape}")
    return 0
