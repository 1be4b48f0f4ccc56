"""IDX files: read them, find the four of a dataset in a directory, and check them on load."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from noisebench.errors import DataError

from .dataset import Dataset
from .registry import IDX_FILES, IMAGE_SHAPE, DatasetInfo, _one_line


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped if the name ends in .gz) as a uint8 array."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                data = stream.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as exc:
        problem = "not a readable gzip file" if path.suffix == ".gz" else "cannot be read"
        raise DataError(f"{path}: {problem} ({_one_line(exc)})") from None

    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or not 1 <= data[3] <= 4:
        raise DataError(
            f"{path}: not an IDX file of unsigned bytes "
            f"(magic number 0x{data[:4].hex()}, expected 0x00000801..0x00000804)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(data) - header
    if payload < expected:
        raise DataError(
            f"{path}: truncated IDX data: {payload} bytes, expected {expected} for dims {dims}"
        )
    if payload > expected:
        raise DataError(
            f"{path}: {payload - expected} unexpected bytes after the IDX data (dims {dims})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _idx_file(directory: Path, gz_name: str) -> Path | None:
    """The gzipped or uncompressed copy of one IDX file in `directory`, if present."""
    for candidate in (directory / gz_name, directory / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _missing_files(directory: Path) -> list[str]:
    """Base names, shown as `NAME(.gz)`, of the IDX files absent from `directory`."""
    return [
        f"{name.removesuffix('.gz')}(.gz)"
        for name in IDX_FILES
        if _idx_file(directory, name) is None
    ]


def _load_idx_dir(info: DatasetInfo, directory: Path) -> Dataset:
    """Load and structurally validate the four IDX files in `directory`."""
    num_classes = len(info.class_names)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "t10k"):
        image_path = _idx_file(directory, f"{split}-images-idx3-ubyte.gz")
        label_path = _idx_file(directory, f"{split}-labels-idx1-ubyte.gz")
        assert image_path is not None and label_path is not None  # located beforehand
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise DataError(
                f"{image_path}: expected images of shape (N, 28, 28), got {images.shape}"
            )
        if labels.ndim != 1:
            raise DataError(f"{label_path}: expected a 1-d label array, got shape {labels.shape}")
        if len(images) != len(labels):
            raise DataError(
                f"{directory}: {image_path.name} has {len(images)} images "
                f"but {label_path.name} has {len(labels)} labels"
            )
        if len(labels) and labels.max() >= num_classes:
            raise DataError(
                f"{label_path}: label {int(labels.max())} is out of range 0..{num_classes - 1}"
            )
        arrays[split] = (
            images.reshape(len(images), IMAGE_SHAPE[0] * IMAGE_SHAPE[1]),
            labels.astype(np.int64),
        )
    return Dataset(
        name=info.name,
        source=str(directory),
        train_x=torch.from_numpy(arrays["train"][0]),
        train_y=torch.from_numpy(arrays["train"][1]),
        test_x=torch.from_numpy(arrays["t10k"][0]),
        test_y=torch.from_numpy(arrays["t10k"][1]),
        image_shape=IMAGE_SHAPE,
        class_names=info.class_names,
    )
