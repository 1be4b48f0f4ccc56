"""Noise models: a registry of small classes with validated parameters.

Label noises corrupt the training labels once, before training. Pixel noises (pixels.* and
images.*) corrupt each training batch at every step, or with `fixed` once per example. Neither
ever touches the test set.
"""

from typing import Any

from pydantic import ValidationError

from ..errors import StudyError
from .base import LabelNoise, LabelNoiseResult, Noise, PixelNoise
from .inputs import ImageRandom, PixelGaussian, PixelSaltPepper, PixelShuffle
from .labels import (
    LabelDilution,
    LabelFeature,
    LabelMatrix,
    LabelPairFlip,
    LabelShuffle,
    LabelUniform,
)
from .pixels import PixelReplace

NOISES: dict[str, type[Noise]] = {
    "labels.uniform": LabelUniform,
    "labels.pairflip": LabelPairFlip,
    "labels.matrix": LabelMatrix,
    "labels.feature": LabelFeature,
    "labels.shuffle": LabelShuffle,
    "labels.dilution": LabelDilution,
    "pixels.replace": PixelReplace,
    "pixels.gaussian": PixelGaussian,
    "pixels.saltpepper": PixelSaltPepper,
    "pixels.shuffle": PixelShuffle,
    "images.random": ImageRandom,
}


def make_noise(name: str, params: dict[str, Any] | None = None) -> Noise:
    """Build the noise `name` from its parameters; a bad name or parameter is a StudyError."""
    if name not in NOISES:
        raise StudyError(f"unknown noise '{name}' (known: {', '.join(sorted(NOISES))})")
    try:
        return NOISES[name](**(params or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "params"
        raise StudyError(f"noise '{name}' parameter '{field}': {err['msg']}") from None


def counts_copies(noise: str | None) -> bool:
    """True for noises whose level is a count of noisy copies (labels.dilution), not a share."""
    return noise in NOISES and NOISES[noise].max_level > 1


def level_text(noise: str | None, level: float) -> str:
    """A level as people read it: a share for most noises, a count where levels go past 1.

    >>> level_text("labels.uniform", 0.3), level_text("labels.dilution", 2.0)
    ('30 %', '2 copies')
    """
    if counts_copies(noise):
        return f"{level:g} cop{'y' if level == 1 else 'ies'}"
    return f"{level * 100:.0f} %"


__all__ = [
    "counts_copies",
    "level_text",
    "NOISES",
    "LabelNoise",
    "LabelNoiseResult",
    "Noise",
    "PixelNoise",
    "make_noise",
]
