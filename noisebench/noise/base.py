"""What every noise model provides."""

from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict


class Noise(BaseModel):
    """A noise model's validated parameters (strict types, finite floats); subclasses add
    behaviour."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    target: str = ""  # "labels" or "pixels", fixed per subclass
    max_level: ClassVar[float] = 1.0  # levels must lie in [0, max_level]

    def check_level(self, level: float) -> None:
        """Raise ValueError, with a short reason, if this noise cannot run at `level`."""
        if not 0.0 <= level <= self.max_level:
            raise ValueError(f"level {level:g} is outside its range [0, {self.max_level:g}]")


@dataclass(frozen=True)
class LabelNoiseResult:
    """Labels after corruption, and which examples were picked with what they were before.

    A noise may change the training set's size: then the corrupted set has N' examples,
    example i being a copy of clean example source[i], and `labels`, `picked` refer to it.
    """

    labels: torch.Tensor  # int64 [N'], what the model trains on
    picked: torch.Tensor  # int64 [k], indices (into the N' examples) chosen for corruption
    original: torch.Tensor  # int64 [k], their source examples' labels before corruption
    source: torch.Tensor | None = None  # int64 [N'], clean example of each; None: the N in order


class LabelNoise(Noise):
    """Corrupts training labels once, before training."""

    def size_factor(self, level: float) -> int:  # noqa: ARG002 (the interface)
        """N'/N: how many times larger corrupt() makes the training set at `level`."""
        return 1

    def check_classes(self, num_classes: int) -> None:
        """Raise StudyError if the parameters do not fit a dataset of `num_classes` classes."""

    def prepare(self, train_x: torch.Tensor, train_y: torch.Tensor, seed: int) -> None:
        """See the clean training set (uint8 [N, F], int64 [N]) of run `seed` before corrupt()."""

    def corrupt(
        self, labels: torch.Tensor, num_classes: int, level: float, gen: torch.Generator
    ) -> LabelNoiseResult:
        raise NotImplementedError


class PixelNoise(Noise):
    """Corrupts every training batch, freshly at every step, or, with `fixed`, once per example.

    With `fixed` the engine trains on fix()'s pre-noised copy of the training set instead of
    calling apply() at every step, so each example carries the same noise at every epoch.
    """

    fixed: bool = False

    def fit(self, train_x: torch.Tensor) -> None:
        """Learn what the noise needs from the training images (uint8 [N, F])."""

    def apply(
        self, x: torch.Tensor, levels: torch.Tensor, gens: list[torch.Generator]
    ) -> torch.Tensor:
        """Noisy copy of `x` (float [R, B, F] in [0, 1]); run r uses levels[r] and gens[r]."""
        raise NotImplementedError

    def fix(
        self, train_x: torch.Tensor, level: float, gen: torch.Generator, chunk: int = 4096
    ) -> torch.Tensor:
        """Noisy uint8 copy of the training set (uint8 [N, F]), drawn once from `gen`.

        Call fit() first. Values are rounded to the nearest of the 256 byte levels.
        """
        out = torch.empty_like(train_x)
        levels = torch.tensor([float(level)], device=train_x.device)
        for start in range(0, len(train_x), chunk):
            x = train_x[start : start + chunk].float().div_(255).unsqueeze(0)
            noisy = self.apply(x, levels, [gen])[0]
            out[start : start + chunk] = noisy.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
        return out
