"""Pixel noise: at every step a share of each image's pixels gets random values."""

from typing import Literal

import torch
from pydantic import PrivateAttr

from .base import PixelNoise


class PixelReplace(PixelNoise):
    """Each pixel is replaced with probability `level` (or exactly round(level·F) pixels with
    `exact`) by a value drawn from the data's pixel distribution, uniform [0, 1], or {0, 1}."""

    target: Literal["pixels"] = "pixels"
    values: Literal["data", "uniform", "binary"] = "data"
    exact: bool = False
    _cdf: torch.Tensor | None = PrivateAttr(default=None)

    def fit(self, train_x: torch.Tensor) -> None:
        counts = torch.bincount(train_x.reshape(-1).long(), minlength=256).double()
        cdf = (counts.cumsum(0) / counts.sum()).float()
        cdf[-1] = 1.0 + 1e-6  # every u < 1 maps to a byte value, even after rounding
        self._cdf = cdf.to(train_x.device)

    def sample_values(self, u: torch.Tensor) -> torch.Tensor:
        """Map uniform draws in [0, 1) to pixel values in [0, 1] of the chosen distribution."""
        if self.values == "uniform":
            return u
        if self.values == "binary":
            return (u >= 0.5).to(u.dtype)
        if self._cdf is None:
            raise RuntimeError("PixelReplace(values='data') needs fit() before apply()")
        cdf = self._cdf.to(u.device)
        return torch.searchsorted(cdf, u.contiguous(), right=True).to(u.dtype) / 255.0

    def apply(
        self, x: torch.Tensor, levels: torch.Tensor, gens: list[torch.Generator]
    ) -> torch.Tensor:
        runs, batch, features = x.shape
        u = torch.stack(
            [torch.rand(batch, features, generator=g, device=x.device, dtype=x.dtype) for g in gens]
        )
        level = levels.to(device=x.device, dtype=x.dtype).view(runs, 1, 1)
        if not self.exact:
            mask = u < level
            # Given u < level, u / level is again uniform on [0, 1): one draw gives both the
            # mask and the replacement value.
            values = self.sample_values((u / level.clamp_min(1e-12)).clamp_max(1 - 1e-7))
            return torch.where(mask, values, x)
        counts = (levels * features).round().long().to(x.device).view(runs, 1, 1)
        ranks = u.argsort(dim=-1).argsort(dim=-1)
        mask = ranks < counts
        v = torch.stack(
            [torch.rand(batch, features, generator=g, device=x.device, dtype=x.dtype) for g in gens]
        )
        return torch.where(mask, self.sample_values(v), x)
