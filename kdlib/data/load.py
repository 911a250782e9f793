"""The one entry point that loads a dataset of the paper (Sec. 4) by name."""
from __future__ import annotations

import os

from kdlib.data.bundle import DataBundle
from kdlib.data.images import _image_bundle
from kdlib.data.synthetic_xor import AUTHORS_SEED, synthetic
from kdlib.names import DATASETS, IMAGE_DATASETS


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False, seed: int = 0,
                 n_train: int | None = None, n_test: int | None = None, variant: str = "paper",
                 holdout: bool = False, split_seed: int | None = None) -> DataBundle:
    """Load one of ``synthetic``, ``fashion_mnist``, ``cifar10_reduced``, ``cifar10`` (Sec. 4).

    * ``seed`` (synthetic only) is an OFFSET to the authors' seed: the draw uses ``42 + seed``, so the default
      ``seed=0`` is exactly the authors' seed-42 data used for every run of Table 2. Pass the same ``seed`` for
      all runs to keep the paper's protocol (one dataset, many model seeds). ``variant``/``holdout``: see
      :func:`synthetic`. ``n_train``/``n_test``/``split_seed`` are ignored for the synthetic data.
    * Images: ``train_full`` is D (the first ``n_train`` official training images, before the split; for
      ``cifar10_reduced`` at most the first 12,800), split 9:1 into ``train``/``val`` by
      :func:`split_train_val`; ``test`` is the first ``n_test`` official test images. Sizes:
      ``fashion_mnist`` 60,000 -> 54,000/6,000; ``cifar10_reduced`` 12,800 -> 11,520/1,280;
      ``cifar10`` 50,000 -> 45,000/5,000. ``holdout`` is ignored (the image datasets already tune on val).
    """
    if name == "synthetic":
        return synthetic(seed=AUTHORS_SEED + int(seed), variant=variant, holdout=holdout)
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return _image_bundle(name, root, download, n_train, n_test, split_seed)
