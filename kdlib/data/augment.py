"""Training-time augmentation of image batches: the random horizontal flip and the padded random crop of the
authors' ``cifar10_loader(use_aug=True)`` (code/cifar_dataset.py), applied to normalized batches in memory.

torchvision's ``RandomHorizontalFlip()`` then ``RandomCrop(32, padding=4)`` act on the raw image, so the padding
is a black pixel; on a normalized batch that pixel is ``(0 - mean) / std`` per channel (:attr:`FlipCrop.fill`),
which makes :meth:`FlipCrop.apply` equal to the torchvision pipeline followed by the normalization (tested). The
draws come from a ``torch.Generator`` the caller owns (the loop seeds one per run), never the global stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from kdlib.errors import ConfigError


@dataclass(frozen=True)
class FlipCrop:
    """Flip each image left-right with probability 1/2, pad by ``padding`` with a black pixel, crop back.

    ``fill``: a black pixel in normalized units, one value per channel (:meth:`for_normalization`).
    """

    fill: tuple[float, ...]
    padding: int = 4

    @classmethod
    def for_normalization(cls, mean: Sequence[float], std: Sequence[float], padding: int = 4) -> "FlipCrop":
        """The augmentation of images normalized as ``(x - mean) / std`` (x in [0, 1])."""
        if len(mean) != len(std):
            raise ConfigError(f"augmentation: mean {list(mean)} and std {list(std)} differ in length")
        return cls(tuple(-float(m) / float(s) for m, s in zip(mean, std)), int(padding))

    def draw(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` flips (bool) and ``n`` crop offsets (row, column) in ``[0, 2 * padding]`` (CPU tensors)."""
        flips = torch.rand(n, generator=generator) < 0.5
        offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=generator)
        return flips, offsets

    def apply(self, x: Tensor, flips: Tensor, offsets: Tensor) -> Tensor:
        """The batch ``x`` (N, C, H, W) with image i flipped if ``flips[i]``, padded, and cropped at ``offsets[i]``."""
        if x.ndim != 4 or x.shape[1] != len(self.fill):
            raise ConfigError(f"augmentation 'flip_crop': expected images (N, {len(self.fill)}, H, W), found a "
                              f"tensor of shape {tuple(x.shape)}; fix: set augment=none for this dataset")
        n, c, h, w = x.shape
        p = self.padding
        flips, offsets = flips.to(x.device), offsets.to(x.device)
        x = torch.where(flips.view(n, 1, 1, 1), x.flip(3), x)
        padded = x.new_empty(n, c, h + 2 * p, w + 2 * p)
        padded.copy_(torch.tensor(self.fill, dtype=x.dtype, device=x.device).view(1, c, 1, 1).expand_as(padded))
        padded[:, :, p:p + h, p:p + w] = x
        rows = (offsets[:, 0:1] + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * p)
        picked = padded.gather(2, rows)
        cols = (offsets[:, 1:2] + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
        return picked.gather(3, cols)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """A freshly augmented copy of the batch ``x``, drawn from ``generator``."""
        flips, offsets = self.draw(x.shape[0], generator)
        return self.apply(x, flips, offsets)


__all__ = ["FlipCrop"]
