"""Input noise beyond pixel replacement: additive Gaussian, salt-and-pepper, shuffled pixel
positions, and whole images replaced by pure noise.

Like every PixelNoise, apply() draws fresh noise at every step; with `fixed` the engine trains
on fix()'s copy of the training set, noised once. Level 0 leaves the input unchanged.
"""

from typing import Annotated, Literal

import torch
from pydantic import Field, PrivateAttr

from .. import seeding
from .base import PixelNoise

Positive = Annotated[float, Field(gt=0.0, le=10.0)]  # in pixel units, [0, 1] being black to white
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _rand(gen: torch.Generator, x: torch.Tensor, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=gen, device=x.device, dtype=x.dtype)


def _levels(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    return levels.to(device=x.device, dtype=x.dtype).view(-1, 1, 1)


class PixelGaussian(PixelNoise):
    """Each pixel, with probability `level`, gets additive N(0, sigma²) noise, then is clipped
    to [0, 1]; level 1 perturbs every pixel.

    The default sigma 0.3 is about the standard deviation of MNIST's pixel values.
    """

    target: Literal["pixels"] = "pixels"
    sigma: Positive = 0.3

    def apply(
        self, x: torch.Tensor, levels: torch.Tensor, gens: list[torch.Generator]
    ) -> torch.Tensor:
        _, batch, features = x.shape
        mask = torch.stack([_rand(g, x, batch, features) for g in gens]) < _levels(x, levels)
        z = torch.stack(
            [
                torch.randn(batch, features, generator=g, device=x.device, dtype=x.dtype)
                for g in gens
            ]
        )
        return torch.where(mask, (x + self.sigma * z).clamp_(0, 1), x)


class PixelSaltPepper(PixelNoise):
    """Each pixel, with probability `level`, becomes 1 (salt, with probability `salt`) or 0
    (pepper, otherwise)."""

    target: Literal["pixels"] = "pixels"
    salt: Probability = 0.5

    def apply(
        self, x: torch.Tensor, levels: torch.Tensor, gens: list[torch.Generator]
    ) -> torch.Tensor:
        _, batch, features = x.shape
        u = torch.stack([_rand(g, x, batch, features) for g in gens])
        level = _levels(x, levels)
        # Given u < level, u / level is uniform on [0, 1): one draw gives mask and colour.
        salt = (u < level * self.salt).to(x.dtype)
        return torch.where(u < level, salt, x)


class PixelShuffle(PixelNoise):
    """round(level·F) pixel positions are permuted among themselves (a random cycle, so each
    of them takes another one's value); the other positions stay.

    `mode="fixed"`: one set and cycle per run, the same for every image at every step, drawn
    from a seed derived from the run generator's initial seed (Zhang et al. 2017, "shuffled
    pixels", applied to the training set only). `mode="redraw"`: a fresh set and cycle per
    image per step; with `fixed=True` they are drawn once per image (Zhang et al.'s "random
    pixels"). Sets are nested across levels in "fixed" mode.
    """

    target: Literal["pixels"] = "pixels"
    mode: Literal["fixed", "redraw"] = "fixed"

    def permutation(self, features: int, level: float, gen: torch.Generator) -> torch.Tensor:
        """The "fixed" mode's source index per position, int64 [F]: out[:, i] = x[:, perm[i]]."""
        fixed_gen = torch.Generator().manual_seed(
            seeding.derive_seed(gen.initial_seed(), "shuffle")
        )
        chosen = torch.randperm(features, generator=fixed_gen)[: round(level * features)]
        perm = torch.arange(features)
        perm[chosen] = chosen.roll(-1)
        return perm

    def apply(
        self, x: torch.Tensor, levels: torch.Tensor, gens: list[torch.Generator]
    ) -> torch.Tensor:
        _, batch, features = x.shape
        out = x.clone()
        for r, (level, g) in enumerate(zip(levels.tolist(), gens, strict=True)):
            count = round(level * features)
            if count < 2:
                continue
            if self.mode == "fixed":
                out[r] = x[r][:, self.permutation(features, level, g).to(x.device)]
                continue
            chosen = _rand(g, x, batch, features).argsort(dim=-1)[:, :count]  # [B, count]
            out[r].scatter_(1, chosen, x[r].gather(1, chosen.roll(-1, dims=1)))
        return out


class ImageRandom(PixelNoise):
    """Each image, with probability `level`, is replaced whole by Gaussian noise with the
    training set's mean and variance, clipped to [0, 1]; its label stays.

    `stats="pixel"` (default) matches each pixel position's mean and variance, so borders stay
    dark as in the data; `stats="global"` uses one mean and variance over all pixels. Clipping
    shifts the realised moments slightly. Needs fit() before apply().
    """

    target: Literal["pixels"] = "pixels"
    stats: Literal["pixel", "global"] = "pixel"
    _mean: torch.Tensor | None = PrivateAttr(default=None)
    _std: torch.Tensor | None = PrivateAttr(default=None)

    def fit(self, train_x: torch.Tensor) -> None:
        total = torch.zeros(train_x.shape[1], dtype=torch.float64, device=train_x.device)
        squares = torch.zeros_like(total)
        for chunk in train_x.split(4096):
            x = chunk.double().div_(255)
            total += x.sum(0)
            squares += x.square_().sum(0)
        n = len(train_x)
        if self.stats == "global":
            n, total, squares = n * train_x.shape[1], total.sum(), squares.sum()
        mean = total / n
        std = (squares / n - mean.square()).clamp_min(0).sqrt()
        self._mean = mean.float().expand(train_x.shape[1]).contiguous()
        self._std = std.float().expand(train_x.shape[1]).contiguous()

    def apply(
        self, x: torch.Tensor, levels: torch.Tensor, gens: list[torch.Generator]
    ) -> torch.Tensor:
        if self._mean is None or self._std is None:
            raise RuntimeError("images.random needs fit() before apply()")
        _, batch, features = x.shape
        mean = self._mean.to(device=x.device, dtype=x.dtype)
        std = self._std.to(device=x.device, dtype=x.dtype)
        replace = torch.stack([_rand(g, x, batch) for g in gens]).unsqueeze(-1)
        z = torch.stack(
            [
                torch.randn(batch, features, generator=g, device=x.device, dtype=x.dtype)
                for g in gens
            ]
        )
        return torch.where(replace < _levels(x, levels), (mean + std * z).clamp_(0, 1), x)
