"""Pixels in the requested shape: image files read as flat uint8 rows, IDX images resized.

Every image (png, jpg/jpeg, bmp, gif, webp, tif/tiff, pgm/ppm/pbm) is read with Pillow, turned
upright by its EXIF orientation, converted to grey (or RGB for `channels=3`; alpha is
dropped, 16-bit grey is scaled to 8 bits, an animation gives its first frame), stretched to
`image_size` (H, W) with bilinear resampling, and flattened, channel-first for RGB.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from noisebench.errors import DataError
from noisebench.memory import check_fits

from .dataset import Dataset
from .registry import _one_line

CHANNELS = (1, 3)


def _read_image(path: Path, image_size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file as a flat uint8 vector of channels·H·W values (see the module doc)."""
    height, width = image_size
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as opened:
            side = max(height, width)
            opened.draft(mode, (side, side))  # JPEG only: decode at a reduced scale
            image = ImageOps.exif_transpose(opened)
            if image.mode == "I" or image.mode.startswith("I;16"):  # 16-bit grey
                scaled = np.asarray(image, dtype=np.float64) / 257
                image = Image.fromarray(scaled.round().clip(0, 255).astype(np.uint8))
            image = image.convert(mode)
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({_one_line(exc)})") from None
    return pixels.transpose(2, 0, 1).reshape(-1) if channels == 3 else pixels.reshape(-1)


def _read_images(paths: Sequence[Path], image_size: tuple[int, int], channels: int) -> np.ndarray:
    """[len(paths), channels·H·W] uint8; decoded on a few threads (Pillow frees the GIL)."""
    out = np.empty((len(paths), channels * image_size[0] * image_size[1]), dtype=np.uint8)
    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
    try:
        for row, pixels in enumerate(
            pool.map(lambda path: _read_image(path, image_size, channels), paths)
        ):
            out[row] = pixels
    finally:
        pool.shutdown(cancel_futures=True)  # a bad file stops the rest from being decoded
    return out


def _check_pixels_fit(count: int, image_size: tuple[int, int], channels: int, source: str) -> None:
    """Refuse, before allocating, `count` images at `image_size` that would not fit in memory."""
    needed = count * channels * image_size[0] * image_size[1]
    what = f"{count:,} images of {channels}×{image_size[0]}×{image_size[1]} from {source}"
    check_fits(needed, what)


def _image_options(image_size: Sequence[int], channels: int) -> tuple[int, int]:
    """`image_size` as (H, W) ints, after checking it and `channels`."""
    size = tuple(image_size) if isinstance(image_size, Sequence) else ()
    if len(size) != 2 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in size
    ):
        raise DataError(f"image size must be two positive integers (H, W), got {image_size!r}")
    if channels not in CHANNELS:
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    return int(size[0]), int(size[1])


def _reshape_idx(ds: Dataset, image_size: tuple[int, int], channels: int) -> Dataset:
    """A 28x28 grey dataset at another size (bilinear, as for image folders) or as RGB."""
    if (image_size, channels) == (ds.image_shape, ds.channels):
        return ds
    _check_pixels_fit(len(ds.train_x) + len(ds.test_x), image_size, channels, ds.source)
    height, width = image_size

    def convert(x: torch.Tensor) -> torch.Tensor:
        images = x.numpy().reshape(len(x), *ds.image_shape)
        out = np.empty((len(x), channels, height, width), dtype=np.uint8)
        for row, pixels in enumerate(images):
            image = Image.fromarray(pixels)
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            out[row] = np.asarray(image, dtype=np.uint8)  # broadcast over channels
        return torch.from_numpy(out.reshape(len(x), -1))

    return replace(
        ds,
        train_x=convert(ds.train_x),
        test_x=convert(ds.test_x),
        image_shape=image_size,
        channels=channels,
    )
