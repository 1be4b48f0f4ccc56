"""Datasets: find, download, validate and load MNIST-shaped IDX data, or a folder of images,
as CPU tensors.

Lookup order for a dataset NAME (see `load_dataset`): an explicit `data_dir` only; otherwise
`$NOISEBENCH_DATA/NAME`, the cache (`cache_dir()/NAME`), `/usr/share/datasets/NAME`, and at
last a download into the cache. Local copies are checked by structure (their gz bytes may
differ from the official ones); downloads are checked against the published md5 hashes.

The name `folder` (not in the registry) means "the image folder at `data_dir`": one subfolder
per class, or train/ and test/ (and optionally valid/) partitions of them; image_folder.py
describes the layouts, images.py how each image is read and resized.

Modules, each importing only those above it: registry (names, mirrors, md5s), dataset (the
loaded Dataset), splits (stratified train/test splits), idx (IDX files), sample (the bundled
mnist-sample), images (pixels in the requested shape), image_folder, downloads (pooch, the
cache), loading (lookup order, `load_dataset`).
"""

from .dataset import Dataset
from .downloads import DOWNLOAD_TIMEOUT, cache_dir, download
from .idx import read_idx
from .image_folder import IMAGE_EXTENSIONS, is_image_folder, load_image_folder
from .images import CHANNELS
from .loading import SYSTEM_DATA_DIR, describe_locations, load_dataset, locate
from .registry import (
    DATASETS,
    DIGITS,
    FOLDER_NAME,
    IDX_FILES,
    IMAGE_SHAPE,
    SAMPLE_NAME,
    DatasetInfo,
    dataset_names,
)
from .sample import SAMPLE_SOURCE, SAMPLE_TEST_PER_CLASS
from .splits import (
    FOLDER_SEED,
    FOLDER_TEST_FRACTION,
    SAMPLE_SEED,
    stratified_fraction_split,
    stratified_split,
)

__all__ = [
    "CHANNELS",
    "DATASETS",
    "DIGITS",
    "DOWNLOAD_TIMEOUT",
    "FOLDER_NAME",
    "FOLDER_SEED",
    "FOLDER_TEST_FRACTION",
    "IDX_FILES",
    "IMAGE_EXTENSIONS",
    "IMAGE_SHAPE",
    "SAMPLE_NAME",
    "SAMPLE_SEED",
    "SAMPLE_SOURCE",
    "SAMPLE_TEST_PER_CLASS",
    "SYSTEM_DATA_DIR",
    "Dataset",
    "DatasetInfo",
    "cache_dir",
    "dataset_names",
    "describe_locations",
    "download",
    "is_image_folder",
    "load_dataset",
    "load_image_folder",
    "locate",
    "read_idx",
    "stratified_fraction_split",
    "stratified_split",
]
