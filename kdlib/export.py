"""``python -m kdlib.export --dataset NAME [--root R] [--out DIR] [--download] [--no-compress]``: write a
dataset into kdlib's compact npz cache (``<out>/<name>/{train,test}.npz``). The same entry is
:func:`kdlib.data.export_main`, for the ``kdlib export`` sub-command."""
from __future__ import annotations

import sys

from kdlib.data.export import export_main, export_npz
from kdlib.data.readers import read_npz

__all__ = ["export_main", "export_npz", "read_npz"]

if __name__ == "__main__":
    sys.exit(export_main(sys.argv[1:]))
