"""Datasets of the paper (Sec. 4): the synthetic XOR-like problem (Sec. 4.1), Fashion-MNIST and CIFAR-10
(full and reduced, Sec. 4.2), held as tensors in memory and cut into batches by indexing.

One concept per module; every public name is importable from ``kdlib.data``:

* :mod:`~kdlib.data.bundle`: :class:`ArraySplit`, :class:`DataBundle` and the 9:1 split of D
  (:func:`split_train_val`). Every split keeps ``index``, the row of each example in its source array, by
  which the teacher's logits are looked up (:mod:`kdlib.teachers`);
* :mod:`~kdlib.data.synthetic_xor`: the synthetic draw of Sec. 4.1, exactly the authors' numbers;
* :mod:`~kdlib.data.readers`: the on-disk formats (IDX, CIFAR-10 pickle batches, kdlib's npz cache);
* :mod:`~kdlib.data.sources`: where an image dataset is found under a data root (the order of the search,
  the torchvision download, the error that names every fix);
* :mod:`~kdlib.data.images`: the normalized image bundles of Sec. 4.2;
* :mod:`~kdlib.data.load`: :func:`load_dataset`, the entry point by name;
* :mod:`~kdlib.data.export`: the compact npz cache written from any copy found (``kdlib export``).
"""
from __future__ import annotations

from kdlib.data.bundle import ArraySplit, DataBundle, split_train_val
from kdlib.data.export import export_main, export_npz
from kdlib.data.images import CIFAR_MEAN, CIFAR_REDUCED_SIZE, CIFAR_STD, FMNIST_MEAN, FMNIST_STD
from kdlib.data.load import load_dataset
from kdlib.data.readers import CORRUPT_FILE_ERRORS, damaged_file_error, read_idx, read_npz, write_npz
from kdlib.data.sources import clear_memo, load_labels, load_raw, missing_data_message
from kdlib.data.synthetic_xor import (AUTHORS_SEED, SYN_HOLDOUT, SYN_NOISE_STD, SYN_SPARE, SYN_STUDENT,
                                      SYN_TEACHER, SYN_TEST, SYN_TOTAL, synthetic, synthetic_arrays)
from kdlib.errors import DataFileError

__all__ = [
    "AUTHORS_SEED", "CIFAR_MEAN", "CIFAR_REDUCED_SIZE", "CIFAR_STD", "CORRUPT_FILE_ERRORS", "FMNIST_MEAN",
    "FMNIST_STD", "SYN_HOLDOUT", "SYN_NOISE_STD", "SYN_SPARE", "SYN_STUDENT", "SYN_TEACHER", "SYN_TEST",
    "SYN_TOTAL", "ArraySplit", "DataBundle", "DataFileError", "clear_memo", "damaged_file_error", "export_main",
    "export_npz", "load_dataset", "load_labels", "load_raw", "missing_data_message", "read_idx", "read_npz",
    "split_train_val", "synthetic", "synthetic_arrays", "write_npz",
]
