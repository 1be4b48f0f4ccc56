"""What every noise model provides."""

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict


class Noise(BaseModel):
    """A noise model's validated parameters; subclasses add behaviour."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    target: str = ""  # "labels" or "pixels", fixed per subclass


@dataclass(frozen=True)
class LabelNoiseResult:
    """Labels after corruption, and which examples were picked with what they were before."""

    labels: torch.Tensor  # int64 [N], what the model trains on
    picked: torch.Tensor  # int64 [k], indices of the examples chosen for corruption
    original: torch.Tensor  # int64 [k], their labels before corruption


class LabelNoise(Noise):
    """Corrupts training labels once, before training."""

    def corrupt(
        self, labels: torch.Tensor, num_classes: int, level: float, gen: torch.Generator
    ) -> LabelNoiseResult:
        raise NotImplementedError


class PixelNoise(Noise):
    """Corrupts every training batch, freshly at every step."""

    def fit(self, train_x: torch.Tensor) -> None:
        """Learn what the noise needs from the training images (uint8 [N, F])."""

    def apply(
        self, x: torch.Tensor, levels: torch.Tensor, gens: list[torch.Generator]
    ) -> torch.Tensor:
        """Noisy copy of `x` (float [R, B, F] in [0, 1]); run r uses levels[r] and gens[r]."""
        raise NotImplementedError
