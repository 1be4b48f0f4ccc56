"""Pixel noise: at every step a share of each image's pixels gets random values.

How the noise is drawn (cheap, and the same whichever pack a run trains in): every pixel of
every sample gets one fresh 16-bit draw u from its own run's generator (four per 64-bit word of
`Tensor.random_`). The pixel is replaced when u < T, T = round(X·65536): the replacement
probability is X quantised to 1/65536. Given u < T, u is uniform on [0, T), so the same draw
also picks the value: a table of 65,536 entries maps u to the quantile (u + 0.5)/T of the value
distribution (so values of the data distribution are quantised to multiples of 1/T in
probability, and uniform values to a grid of T points). Per pixel: a 16-bit draw, a compare, a
table lookup and a multiply-add; no float random numbers, no search, no torch.where (slow on
random masks). For "data" and "binary" every value is a whole byte, so the engine applies the
noise to the uint8 batch before it becomes float. In `exact` mode a per-sample ranking of
64-bit keys picks exactly round(X·F) pixels and a second 16-bit draw picks each value
(quantile (u + 0.5)/65536).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import PrivateAttr

from .base import PixelNoise

DRAW_RANGE = 1 << 16  # possible values of one pixel's draw


def draw_u16(
    gens: Sequence[torch.Generator],
    batch: int,
    features: int,
    device: torch.device | str,
    words: torch.Tensor | None = None,
) -> torch.Tensor:
    """One 16-bit draw per pixel for each run: int16 [R, batch, features], u = value + 32768.

    Run r consumes ceil(batch·features / 4) 64-bit words of gens[r] and nothing else, so its
    stream does not depend on the other runs drawn with it. `words` (int64 [R, that many]) is
    filled and reused when given.
    """
    n = batch * features
    if words is None:
        words = torch.empty(len(gens), -(-n // 4), dtype=torch.int64, device=device)
    for row, gen in zip(words, gens, strict=True):
        row.random_(-(2**63), None, generator=gen)  # uniform over all 2^64 bit patterns
    draws = words.view(torch.int16)
    if draws.shape[1] != n:
        draws = draws[:, :n].contiguous()
    return draws.view(len(gens), batch, features)


@dataclass(frozen=True)
class Prepared:
    """Lookup tables for a stack of runs: one 65,536-entry table per distinct level.

    For an int16 draw d (u = d + 32768) the pixel is kept where d > keep_above[r], and
    otherwise takes table[d + offset[r]]; the table holds 0 where the pixel is kept, so
    `x * keep + table[d + offset]` is the noisy pixel.
    """

    table: torch.Tensor  # [L·65536] uint8 bytes or float32 in the caller's unit
    offset: torch.Tensor  # int32 [R, 1, 1]: start of run r's table + 32768
    keep_above: torch.Tensor  # int16 [R, 1, 1]: T_r - 32769 (clamped to -32768 for T = 0)
    idle: torch.Tensor | None  # bool [R, 1, 1]: runs with T = 0 (level 0), None if there are none
    counts: torch.Tensor  # int64 [R, 1, 1]: pixels replaced per sample (exact mode)
    workspace: dict = field(default_factory=dict)  # reused buffers, by batch shape

    def buffers(self, runs: int, batch: int, features: int, device) -> dict[str, torch.Tensor]:
        """Scratch tensors for one batch shape, allocated once: reusing them is measurably
        faster than fresh multi-megabyte tensors at every step."""
        key = (runs, batch, features)
        if key not in self.workspace:
            n = batch * features
            self.workspace.clear()
            self.workspace[key] = {
                "words": torch.empty(runs, -(-n // 4), dtype=torch.int64, device=device),
                "index": torch.empty(runs, batch, features, dtype=torch.int32, device=device),
                "values": torch.empty(runs * n, dtype=self.table.dtype, device=device),
                "keep": torch.empty(runs, batch, features, dtype=torch.bool, device=device),
            }
        return self.workspace[key]


class PixelReplace(PixelNoise):
    """Each pixel is replaced with probability `level` (or exactly round(level·F) pixels with
    `exact`) by a value drawn from the data's pixel distribution, uniform [0, 1], or {0, 1}.

    The probability is quantised to 1/65536, and values are the quantiles (k + 0.5)/T of their
    distribution for k < T = round(level·65536) (see the module docstring)."""

    target: Literal["pixels"] = "pixels"
    values: Literal["data", "uniform", "binary"] = "data"
    exact: bool = False
    _cdf: torch.Tensor | None = PrivateAttr(default=None)

    def fit(self, train_x: torch.Tensor) -> None:
        counts = torch.bincount(train_x.reshape(-1).long().cpu(), minlength=256).double()
        self._cdf = counts.cumsum(0) / counts.sum()

    @property
    def byte_values(self) -> bool:
        """Whether every replacement value is a whole byte (0-255), so noise can be applied to
        uint8 images before they become floats."""
        return self.values != "uniform"

    def threshold(self, level: float) -> int:
        """T: draws u < T replace the pixel (all of them in exact mode, where ranks decide).

        T = round(level·65536), at least 1 for any level > 0 (and 0 for level 0)."""
        if self.exact:
            return DRAW_RANGE
        return 0 if level <= 0 else min(max(round(level * DRAW_RANGE), 1), DRAW_RANGE)

    def quantiles(self, q: torch.Tensor) -> torch.Tensor:
        """Values in bytes (0-255, float64) at quantiles q in (0, 1) of the value distribution."""
        if self.values == "uniform":
            return q * 255.0
        if self.values == "binary":
            return (q >= 0.5).double() * 255.0
        if self._cdf is None:
            raise RuntimeError("PixelReplace(values='data') needs fit() before apply()")
        return torch.searchsorted(self._cdf, q, right=True).clamp_max(255).double()

    def table(self, level: float, unit: float | None = 1.0) -> torch.Tensor:
        """[65536]: the value draw u gives, 0 where u >= T. `unit` is a full pixel's value
        (float32 table); None gives a uint8 table of bytes (needs `byte_values`)."""
        threshold = self.threshold(level)
        q = (torch.arange(threshold, dtype=torch.float64) + 0.5) / max(threshold, 1)
        values = self.quantiles(q)  # bytes, whole numbers for data and binary
        if unit is None:
            out = torch.zeros(DRAW_RANGE, dtype=torch.uint8)
            out[:threshold] = values.to(torch.uint8)
        else:
            out = torch.zeros(DRAW_RANGE, dtype=torch.float32)
            scaled = values.float()
            out[:threshold] = scaled if unit == 255.0 else scaled / 255.0 * unit
        return out

    def prepare(
        self,
        levels: Sequence[float],
        features: int,
        unit: float | None = 1.0,
        device: torch.device | str = "cpu",
    ) -> Prepared:
        """Tables for runs at `levels` on images of `features` pixels. Values are in `unit`
        (1.0 for images in [0, 1], 255.0 for float bytes), or uint8 bytes with unit=None."""
        distinct = sorted(set(levels)) if not self.exact else [1.0]
        starts = [(0 if self.exact else distinct.index(lv)) * DRAW_RANGE for lv in levels]
        above = [max(self.threshold(lv) - DRAW_RANGE // 2 - 1, -(2**15)) for lv in levels]
        idle = [self.threshold(lv) == 0 for lv in levels]
        counts = [round(level * features) for level in levels]

        def column(values: list[int], dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device).view(-1, 1, 1)

        return Prepared(
            table=torch.cat([self.table(level, unit) for level in distinct]).to(device),
            offset=column([s + DRAW_RANGE // 2 for s in starts], torch.int32),
            keep_above=column(above, torch.int16),
            idle=column(idle, torch.bool) if any(idle) else None,
            counts=column(counts, torch.int64),
        )

    def replace_(
        self, x: torch.Tensor, prepared: Prepared, gens: Sequence[torch.Generator]
    ) -> torch.Tensor:
        """Apply the noise to `x` in place ([R, B, F], uint8 bytes for a uint8 table, else float
        in the table's unit) and return it."""
        runs, batch, features = x.shape
        if self.exact:
            keys = torch.empty(runs, batch, features, dtype=torch.int64, device=x.device)
            for row, gen in zip(keys, gens, strict=True):
                row.random_(-(2**63), None, generator=gen)
            replace = keys.argsort(dim=-1).argsort(dim=-1) < prepared.counts
        work = prepared.buffers(runs, batch, features, x.device)
        draws = draw_u16(gens, batch, features, x.device, work["words"])
        index = work["index"].copy_(draws).add_(prepared.offset)
        values = torch.index_select(prepared.table, 0, index.view(-1), out=work["values"])
        values = values.view(runs, batch, features)
        if self.exact:
            keep = ~replace
            values.mul_(replace)
        else:
            keep = torch.gt(draws, prepared.keep_above, out=work["keep"])
            if prepared.idle is not None:  # T = 0 replaces nothing, not even u = 0
                keep |= prepared.idle
        # Select without torch.where (slow on random masks): kept pixels are x·1 + 0, replaced
        # ones x·0 + value.
        return x.mul_(keep.view(torch.uint8) if x.dtype == torch.uint8 else keep).add_(values)

    def apply(
        self, x: torch.Tensor, levels: torch.Tensor, gens: list[torch.Generator]
    ) -> torch.Tensor:
        levels_list = [float(v) for v in levels.reshape(-1).tolist()]
        prepared = self.prepare(levels_list, x.shape[-1], 1.0, x.device)
        return self.replace_(x.float().clone(), prepared, gens).to(x.dtype)
