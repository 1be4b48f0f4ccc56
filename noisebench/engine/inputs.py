"""The images of a shard's training steps: each run's rows of the training images, with its
pixel noise, as a float batch in bytes (0-255; the 1/255 is folded into the first layer).
The runs of one pixel-noise model are a contiguous slice of the batch."""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..noise import PixelNoise, make_noise
from ..noise.pixels import PixelReplace
from ..study import RunSpec
from .model import stacked_empty


@dataclass
class PixelGroup:
    """Runs of a shard that share one pixel-noise model: its rows [start, stop)."""

    noise: PixelNoise
    start: int
    stop: int
    levels: torch.Tensor
    gens: list[torch.Generator]
    prepared: Any = None  # PixelReplace's lookup tables, when the noise is a PixelReplace
    fixed_x: torch.Tensor | None = None  # `fixed` noise: each run's noised copy, [R·N, F]


def pixel_key(run: RunSpec) -> tuple | None:
    if run.noise and run.level > 0:
        if make_noise(run.noise, dict(run.params)).target == "pixels":
            return (run.noise, run.params)
    return None


def pixel_groups(
    runs: list[RunSpec],
    gens: Sequence[torch.Generator | None],
    train_x: torch.Tensor,
    fitted: dict[tuple, PixelNoise],
) -> list[PixelGroup]:
    """Groups of a shard's `runs` (in pack order) that share a pixel-noise model; `fitted`
    caches each model, fitted once per pack."""
    out: list[PixelGroup] = []
    i = 0
    while i < len(runs):
        key = pixel_key(runs[i])
        j = i
        while j < len(runs) and pixel_key(runs[j]) == key:
            j += 1
        if key is not None:
            if key not in fitted:
                name, params = key
                noise = make_noise(name, dict(params))
                assert isinstance(noise, PixelNoise)
                noise.fit(train_x)
                fitted[key] = noise
            noise = fitted[key]
            levels = [runs[k].level for k in range(i, j)]
            group_gens = [g for g in gens[i:j] if g is not None]
            prepared, fixed_x = None, None
            if noise.fixed:  # noised once, before training: the generators are used up here
                fixed_x = torch.cat(
                    [noise.fix(train_x, lv, g) for lv, g in zip(levels, group_gens, strict=True)]
                )
            elif isinstance(noise, PixelReplace):
                unit = None if noise.byte_values else 255.0  # uint8 or float table
                prepared = noise.prepare(levels, train_x.shape[1], unit, train_x.device)
            out.append(
                PixelGroup(
                    noise=noise,
                    start=i,
                    stop=j,
                    levels=torch.tensor(levels, device=train_x.device),
                    gens=group_gens,
                    prepared=prepared,
                    fixed_x=fixed_x,
                )
            )
        i = j
    return out


class Scratch:
    """Scratch tensors reused across steps, by name (of `dtype` unless told): filling a
    multi-megabyte buffer again is measurably cheaper than allocating one at every step.
    Their first axis is the runs, laid out by model.stacked_empty (matmuls write into them),
    unless `flat`."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self.tensors: dict[str, torch.Tensor] = {}

    def __call__(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: torch.dtype | None = None,
        flat: bool = False,
    ) -> torch.Tensor:
        buf = self.tensors.get(name)
        if buf is None or buf.shape != shape:
            dtype = dtype or self.dtype
            if flat:
                buf = torch.empty(shape, dtype=dtype, device=self.device)
            else:
                buf = stacked_empty(shape[0], tuple(shape[1:]), dtype, self.device)
            self.tensors[name] = buf
        return buf


class Inputs:
    """The batches of a shard's runs, in `dtype`: `train_x` (uint8 [N, F]) shared by every
    run, `source` [R, N'] the row of train_x of each run's example i (None: row i), pixel
    noise per group."""

    def __init__(
        self,
        train_x: torch.Tensor,
        groups: list[PixelGroup],
        source: torch.Tensor | None,
        dtype: torch.dtype,
    ):
        self.train_x, self.groups, self.source = train_x, groups, source
        self.scratch = Scratch(train_x.device, dtype)
        self.timing = False  # with timing on, noise_s adds up the time spent on pixel noise
        self.noise_s = 0.0

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """The float batch [R, b, F] in bytes of each run's examples idx [R, b], pixel noise
        applied."""
        rows = idx if self.source is None else self.source.gather(1, idx)
        runs, b = rows.shape
        raw = self.scratch("raw", (runs * b, self.train_x.shape[1]), torch.uint8, flat=True)
        raw = torch.index_select(self.train_x, 0, rows.reshape(-1), out=raw).view(runs, b, -1)
        began = time.perf_counter() if self.timing else 0.0
        late = []  # groups whose noise needs float pixels
        for grp in self.groups:
            part = raw[grp.start : grp.stop]
            if grp.fixed_x is not None:  # run r's rows come from its own noised copy
                n_train = len(self.train_x)
                shift = torch.arange(0, len(part) * n_train, n_train, device=rows.device)
                own = rows[grp.start : grp.stop] + shift.view(-1, 1)
                part.copy_(grp.fixed_x.index_select(0, own.reshape(-1)).view(part.shape))
            elif grp.prepared is not None and grp.prepared.table.dtype == torch.uint8:
                grp.noise.replace_(part, grp.prepared, grp.gens)  # type: ignore[attr-defined]
            else:
                late.append(grp)
        if self.timing:
            self.noise_s += time.perf_counter() - began
        x = self.scratch("x", raw.shape, flat=True)
        x.copy_(raw)
        began = time.perf_counter() if self.timing else 0.0
        for grp in late:
            part = x[grp.start : grp.stop]
            if grp.prepared is not None:  # a PixelReplace with float values, in bytes
                grp.noise.replace_(part, grp.prepared, grp.gens)  # type: ignore[attr-defined]
            else:  # any other pixel noise works on images in [0, 1]
                part.copy_(grp.noise.apply(part.div(255), grp.levels, grp.gens)).mul_(255)
        if self.timing:
            self.noise_s += time.perf_counter() - began
        return x
