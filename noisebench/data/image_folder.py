"""Image folders as datasets: the name `folder` means "the image folder at `data_dir`", one of:

- one subfolder per class (`DIR/cat/*.png`, `DIR/dog/*.jpg`): split per class into
  train/test, 80/20 (`FOLDER_TEST_FRACTION`; at least one image of each class on each side),
  with the fixed seed `FOLDER_SEED`, so the same files always give the same split;
- partitions `DIR/train/`, `DIR/test/` and optionally `DIR/valid/` (or `DIR/val/`), each
  holding the same class subfolders. A valid/ partition is kept apart as `Dataset.valid_x` /
  `valid_y`, never merged into train. Other entries next to the partitions are ignored.

A folder counts as partitioned as soon as it has a `train/` or a `test/` subfolder. Class
names are the class subfolder names, sorted; images may sit at any depth inside their class
folder; hidden files and folders (".name") and files that are not images are skipped. How
each image is read and resized: see `noisebench.data.images`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from noisebench.errors import DataError, DataUnavailable

from .dataset import Dataset
from .images import _check_pixels_fit, _image_options, _read_images
from .registry import FOLDER_NAME, IMAGE_SHAPE
from .splits import FOLDER_SEED, stratified_fraction_split

IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm"
)  # fmt: skip


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _subfolders(directory: Path) -> list[Path]:
    """The visible (not ".name") subfolders of `directory`, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _loose_images(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if _is_image_name(p.name) and p.is_file())


def _walk_images(directory: Path) -> Iterator[Path]:
    """Image files at any depth under `directory`, in sorted order; hidden entries skipped."""
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if _is_image_name(name):
                yield Path(root) / name


def _partitions(root: Path) -> dict[str, Path] | None:
    """{"train", "test"[, "valid"]} -> folder for a partitioned image folder; None if per-class."""
    names = {p.name for p in _subfolders(root)}
    if not names & {"train", "test"}:
        return None
    for have, lacks in (("train", "test"), ("test", "train")):
        if lacks not in names:
            raise DataError(
                f"{root}: has {have}/ but no {lacks}/ (a partitioned image folder needs train/ "
                "and test/, each holding one subfolder per class; valid/ is optional)"
            )
    found = {"train": root / "train", "test": root / "test"}
    valid = [name for name in ("valid", "val") if name in names]
    if len(valid) == 2:
        raise DataError(f"{root}: has both valid/ and val/; keep one validation partition")
    if valid:
        found["valid"] = root / valid[0]
    return found


def is_image_folder(path: str | Path) -> bool:
    """Whether `path` is (or claims to be) an image folder: it has train/ and test/ subfolders,
    or a visible subfolder holding an image file at any depth."""
    path = Path(path)
    if not path.is_dir():
        return False
    subfolders = _subfolders(path)
    if {"train", "test"} <= {p.name for p in subfolders}:
        return True
    return any(next(_walk_images(folder), None) is not None for folder in subfolders)


def _scan_classes(directory: Path) -> dict[str, list[Path]]:
    """Class name -> its image files, for a folder holding one subfolder per class."""
    classes = {folder.name: list(_walk_images(folder)) for folder in _subfolders(directory)}
    loose = _loose_images(directory)
    if not any(classes.values()):
        if loose:
            raise DataError(
                f"{directory}: {len(loose)} images lie directly in it (e.g. {loose[0].name}) but "
                "none in class subfolders; put each class's images in a subfolder named after it"
            )
        raise DataError(
            f"{directory}: no images found (expected one subfolder of images per class, or "
            f"train/ and test/ each holding class subfolders; image types: "
            f"{', '.join(ext[1:] for ext in IMAGE_EXTENSIONS)})"
        )
    if loose:
        raise DataError(
            f"{loose[0]}: image outside any class subfolder (move it into its class's folder)"
        )
    for name, files in classes.items():
        if not files:
            raise DataError(f"{directory / name}: class folder holds no images")
    return classes


def _check_class_count(root: Path, classes: Sequence[str]) -> None:
    if len(classes) < 2:
        raise DataError(
            f"{root}: found {len(classes)} class ({', '.join(classes)}); a classifier needs "
            "at least 2 class subfolders"
        )


def _check_same_classes(root: Path, train: Sequence[str], other: Sequence[str], part: str) -> None:
    """Every partition must hold exactly the train/ classes."""
    if extra := sorted(set(other) - set(train)):
        raise DataError(
            f"{root}: class{'es' if len(extra) > 1 else ''} {', '.join(extra)} "
            f"{'are' if len(extra) > 1 else 'is'} in {part}/ but not in train/"
        )
    if missing := sorted(set(train) - set(other)):
        raise DataError(
            f"{root}: class sets differ between train/ and {part}/: "
            f"{', '.join(missing)} {'are' if len(missing) > 1 else 'is'} missing from {part}/"
        )


def _partition_arrays(
    files: dict[str, list[Path]],
    class_names: Sequence[str],
    image_size: tuple[int, int],
    channels: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one partition, in sorted file order."""
    paths = [path for name in class_names for path in files[name]]
    labels = np.repeat(
        np.arange(len(class_names), dtype=np.int64), [len(files[n]) for n in class_names]
    )
    return _read_images(paths, image_size, channels), labels


def load_image_folder(
    path: str | Path, image_size: Sequence[int] = IMAGE_SHAPE, channels: int = 1
) -> Dataset:
    """The image folder at `path` as a Dataset named `folder:<folder name>` (see module doc).

    Deterministic: the same files give the same tensors, in a fixed shuffled row order (never
    sorted by class) for every split.
    """
    size = _image_options(image_size, channels)
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise DataUnavailable(f"image folder {path} not found (or not a directory)")
    parts = _partitions(root)
    if parts is None:
        classes = _scan_classes(root)
        class_names = sorted(classes)
        _check_class_count(root, class_names)
        for name in class_names:
            if len(classes[name]) < 2:
                raise DataError(
                    f"{root / name}: class has 1 image; splitting it into train and test "
                    "needs at least 2"
                )
        count = sum(len(files) for files in classes.values())
        _check_pixels_fit(count, size, channels, str(root))
        images, labels = _partition_arrays(classes, class_names, size, channels)
        train, test = stratified_fraction_split(labels)
        split = {"train": (images[train], labels[train]), "test": (images[test], labels[test])}
    else:
        scanned = {part: _scan_classes(folder) for part, folder in parts.items()}
        class_names = sorted(scanned["train"])
        _check_class_count(parts["train"], class_names)
        for part in ("test", "valid"):
            if part in scanned:
                _check_same_classes(root, class_names, list(scanned[part]), parts[part].name)
        count = sum(len(files) for part in scanned.values() for files in part.values())
        _check_pixels_fit(count, size, channels, str(root))
        rng = np.random.default_rng(FOLDER_SEED)
        split = {}
        for part, files in scanned.items():
            images, labels = _partition_arrays(files, class_names, size, channels)
            order = rng.permutation(len(labels))
            split[part] = (images[order], labels[order])

    def tensors(part: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if part not in split:
            return None, None
        return torch.from_numpy(split[part][0]), torch.from_numpy(split[part][1])

    (train_x, train_y), (test_x, test_y) = tensors("train"), tensors("test")
    valid_x, valid_y = tensors("valid")
    assert train_x is not None and train_y is not None and test_x is not None
    assert test_y is not None
    return Dataset(
        name=f"{FOLDER_NAME}:{root.name}",
        source=str(root),
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        image_shape=size,
        class_names=tuple(class_names),
        channels=channels,
        valid_x=valid_x,
        valid_y=valid_y,
    )
