"""TF32: whether a CUDA run's float32 convolutions and matrix products round their inputs to TensorFloat-32.

On Ampere and later GPUs, cuDNN and cuBLAS can compute a float32 product from inputs rounded to TF32's 10-bit
mantissa: several times faster, and about 1e-3 relative error per product instead of float32's 1e-7 -- another
result, which training then carries along (at the paper's lr 1.0 a run can end on another branch). torch enables
TF32 for cuDNN's convolutions by default (``torch.backends.cudnn.allow_tf32``) and not for matrix products
(``torch.backends.cuda.matmul.allow_tf32``); both are process-global flags.

kdlib makes it one explicit setting of a run, ``tf32`` (:class:`kdlib.experiments.config.ExperimentConfig`),
default False: float32 products in float32, as on the CPU. The runner applies it around each run with
:func:`tf32` (both flags to the setting, restored after), so that nothing else in the process is changed, and each
record's ``provenance.accelerator`` names the flags the run computed under
(:func:`kdlib.experiments.store.accelerator`). ``tf32=True`` is a CUDA setting only: on another device it is an
error (:func:`check`), so that no CPU record claims it. The store keys the field only when it is True, so records
made before it keep their keys.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from kdlib.errors import ConfigError


def flags() -> dict[str, bool]:
    """The TF32 flags in effect in this process: cuDNN's convolutions and cuBLAS's matrix products."""
    return dict(tf32_cudnn=bool(torch.backends.cudnn.allow_tf32),
                tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32))


def _set(cudnn: bool, matmul: bool) -> None:
    torch.backends.cudnn.allow_tf32 = bool(cudnn)
    torch.backends.cuda.matmul.allow_tf32 = bool(matmul)


def check(enabled: bool, device: str | torch.device) -> None:
    """Raise :class:`ConfigError` for ``tf32=True`` on a device that is not CUDA (or a non-bool setting)."""
    if not isinstance(enabled, bool):
        raise ConfigError(f"config field 'tf32': expected True or False, found {enabled!r} "
                          f"({type(enabled).__name__}); fix: set tf32 to True or False (CLI: --set tf32=True)")
    if not enabled:
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = str(device)
    if kind != "cuda":
        raise ConfigError(f"config field 'tf32': True rounds CUDA float32 products to TF32, and this run is on "
                          f"{str(device)!r}; fix: set tf32=False, or run on a CUDA device (--device cuda)")


@contextlib.contextmanager
def tf32(enabled: bool, device: str | torch.device = "cuda") -> Iterator[None]:
    """Both TF32 flags set to ``enabled`` while the block runs (restored after; process-global while active);
    ``enabled=True`` needs a CUDA ``device`` (:func:`check`)."""
    check(enabled, device)
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    _set(enabled, enabled)
    try:
        yield
    finally:
        _set(*saved)


__all__ = ["check", "flags", "tf32"]
