"""Data-parallel ranks (``torch.distributed``): the mean over ranks of a few tensors, in one all-reduce.

The estimators take an optional ``val_mean`` (the validation gradient averaged over ranks, one model-sized
all-reduce) and :func:`kdlib.hypergrad.hypergradient` a ``rank_mean`` (the two-number hypergradient averaged
over ranks); :class:`kdlib.Tuner` builds it with :func:`rank_mean_of` when ``torch.distributed`` is initialised.
Every rank receives the same sums, so every rank computes bit-identical means.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

RankMean = Callable[[Sequence[Tensor]], list[Tensor]]


def initialised() -> bool:
    """Whether ``torch.distributed`` is available and initialised in this process."""
    return dist.is_available() and dist.is_initialized()


def rank_mean(tensors: Sequence[Tensor], group: Any = None) -> list[Tensor]:
    """The mean over the ranks of ``group`` of each tensor: one flat ``all_reduce`` (SUM) per dtype and device,
    divided by the world size. Nothing is written in place."""
    out: list[Optional[Tensor]] = [None] * len(tensors)
    world = dist.get_world_size(group)
    keys: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        keys.setdefault((t.dtype, t.device), []).append(i)
    for idx in keys.values():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in idx])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        flat = flat / world
        offset = 0
        for i in idx:
            n = tensors[i].numel()
            out[i] = flat[offset:offset + n].view_as(tensors[i])
            offset += n
    return [t for t in out if t is not None]


def rank_mean_of(distributed: Optional[bool] = None, group: Any = None) -> Optional[RankMean]:
    """The :func:`rank_mean` of ``group`` (default: the world), or None for a single process.

    ``distributed=None``: on iff ``torch.distributed`` is initialised with more than one rank; ``True``: required
    (``ValueError`` if not initialised); ``False``: off (this rank tunes alone)."""
    if distributed is False:
        return None
    if not initialised():
        if distributed:
            raise ValueError("distributed=True but torch.distributed is not initialised: call "
                             "torch.distributed.init_process_group(...) first (torchrun does it for you), or leave "
                             "distributed=None")
        return None
    if distributed is None and dist.get_world_size(group) == 1:
        return None
    return functools.partial(rank_mean, group=group)


__all__ = ["rank_mean", "rank_mean_of", "initialised", "RankMean"]
