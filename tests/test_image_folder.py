"""Image folders as datasets: per-class and train/valid/test layouts, written here with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisebench import data, runner
from noisebench.errors import DataError, DataUnavailable, NoisebenchError
from noisebench.report import write_report
from noisebench.store import Store
from noisebench.study import parse_study

SOLID_RGB = (200, 100, 50)  # grey (ITU-R 601 luma): 0.299·200 + 0.587·100 + 0.114·50 = 124.2
SOLID_GREY = 124


def write_image(path: Path, size: tuple[int, int], mode: str = "L", seed: int = 0) -> Path:
    """A random image of `size` (W, H) in `mode`; the format follows the file extension."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def write_class(folder: Path, count: int, seed: int) -> None:
    """`count` images of different sizes, alternating grey/RGB and png/jpg."""
    for i in range(count):
        mode = "RGB" if i % 2 else "L"
        ext = ("png", "jpg", "bmp")[i % 3]
        write_image(folder / f"{i:02d}.{ext}", (20 + 7 * i, 15 + 5 * i), mode, seed * 100 + i)


def one_line(exc: pytest.ExceptionInfo[BaseException], *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.fixture
def pets(tmp_path: Path) -> Path:
    """One subfolder per class: cat 6, dog 6, emu 10 (2 in a nested folder, one solid colour),
    plus files that must be skipped."""
    root = tmp_path / "pets"
    for seed, (name, count) in enumerate((("emu", 8), ("cat", 6), ("dog", 6))):
        write_class(root / name, count, seed)
    write_image(root / "emu" / "more" / "a.webp", (40, 40), "RGB", 7)
    Image.new("RGB", (33, 21), SOLID_RGB).save(root / "emu" / "more" / "solid.gif")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".hidden.png").write_bytes(b"junk")  # hidden: skipped, never decoded
    (root / ".cache").mkdir()
    (root / ".cache" / "x.png").write_bytes(b"junk")
    return root


@pytest.fixture
def parts(tmp_path: Path) -> Path:
    """train/ (a 5, b 4), valid/ (a 2, b 2), test/ (a 3, b 3)."""
    root = tmp_path / "parts"
    for part, counts in (("train", (5, 4)), ("valid", (2, 2)), ("test", (3, 3))):
        for seed, (name, count) in enumerate(zip("ab", counts, strict=True)):
            write_class(root / part / name, count, seed + 10 * len(part))
    return root


def rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(row.numpy()) for row in x}


def grey_pixels(path: Path, size: tuple[int, int]) -> np.ndarray:
    """What an image file should become, computed here: full decode, grey by Pillow's luma,
    bilinear resize to (H, W), flattened (int16, to take differences)."""
    with Image.open(path) as image:
        grey = image.convert("L").resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(grey, dtype=np.int16).reshape(-1)


def match_files(x: torch.Tensor, paths: list[Path], size: tuple[int, int]) -> list[int]:
    """The row of `x` each file became: identical pixels for lossless files; for JPEGs (which
    the loader may decode at a reduced scale) the closest row, within 20 grey levels on average
    (two different random images differ by about 85).
    Every row is matched once."""
    table = x.numpy().astype(np.int16)
    matched = []
    for path in paths:
        distance = np.abs(table - grey_pixels(path, size)).mean(axis=1)
        row = int(distance.argmin())
        limit = 20.0 if path.suffix == ".jpg" else 0.0
        assert distance[row] <= limit, f"{path}: no row within {limit} (best {distance[row]})"
        matched.append(row)
    assert sorted(matched) == list(range(len(table)))
    return matched


# --- the per-class layout --------------------------------------------------------------------


def test_class_folder_shapes_split_and_names(pets):
    ds = data.load_dataset("folder", data_dir=pets)
    assert ds.name == "folder:pets" and ds.source == str(pets.resolve())
    assert ds.class_names == ("cat", "dog", "emu")
    assert (ds.image_shape, ds.channels, ds.num_features, ds.num_classes) == ((28, 28), 1, 784, 3)
    assert ds.train_x.shape == (18, 784) and ds.test_x.shape == (4, 784)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.valid_x is None and ds.valid_y is None
    # stratified 80/20 per class, rounded half up: 6 -> 5 + 1, 10 -> 8 + 2
    assert torch.bincount(ds.train_y).tolist() == [5, 5, 8]
    assert torch.bincount(ds.test_y).tolist() == [1, 1, 2]
    assert ds.train_y.tolist() != sorted(ds.train_y.tolist())  # shuffled, not by class
    # every image exactly once, in train or test, with its own class label
    all_x, all_y = torch.cat([ds.train_x, ds.test_x]), torch.cat([ds.train_y, ds.test_y])
    paths, labels = [], []
    for label, name in enumerate(ds.class_names):
        images = [p for p in (pets / name).rglob("[!.]*.*") if p.suffix != ".txt"]
        paths += images
        labels += [label] * len(images)
    assert len(paths) == 22
    matched = match_files(all_x, paths, (28, 28))
    assert all_y[matched].tolist() == labels
    assert not rows(ds.train_x) & rows(ds.test_x)
    assert bytes([SOLID_GREY] * 784) in rows(all_x)  # RGB -> grey by luma, resized
    assert int(ds.train_x.max()) > 200 and int(ds.train_x.min()) < 50


def test_class_folder_is_deterministic(pets):
    first = data.load_dataset("folder", data_dir=pets)
    again = data.load_image_folder(pets)
    assert again.fingerprint() == first.fingerprint()
    assert torch.equal(first.train_y, again.train_y) and torch.equal(first.test_x, again.test_x)
    assert data.is_image_folder(pets) and data.locate("folder", data_dir=pets) == pets
    assert not data.is_image_folder(pets / "cat") and data.locate("folder") is None


def test_rgb_channels_and_size(pets):
    ds = data.load_dataset("folder", data_dir=pets, image_size=(16, 12), channels=3)
    assert (ds.image_shape, ds.channels, ds.num_features) == ((16, 12), 3, 576)
    assert ds.train_x.shape == (18, 576) and ds.test_x.shape == (4, 576)
    images = torch.cat([ds.train_x, ds.test_x]).view(-1, 3, 16, 12)  # channel-first
    solid = torch.tensor(SOLID_RGB, dtype=torch.uint8).view(3, 1, 1).expand(3, 16, 12)
    assert any(torch.equal(image, solid) for image in images)
    grey = [im for im in images if torch.equal(im[0], im[1]) and torch.equal(im[1], im[2])]
    assert len(grey) >= 9  # grey files come out as three equal channels
    assert torch.bincount(ds.train_y).tolist() == [5, 5, 8]  # same split at any size


def test_stratified_fraction_split():
    labels = np.repeat(np.arange(4), [2, 5, 10, 11])
    train, test = data.stratified_fraction_split(labels)
    assert np.bincount(labels[test]).tolist() == [1, 1, 2, 2]
    assert sorted(np.concatenate([train, test])) == list(range(28))
    again = data.stratified_fraction_split(labels)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(test, data.stratified_fraction_split(labels, seed=1)[1])


# --- the train/valid/test layout -------------------------------------------------------------


def test_partitioned_folder(parts):
    ds = data.load_dataset("folder", data_dir=parts, image_size=(10, 10))
    assert ds.name == "folder:parts" and ds.class_names == ("a", "b")
    assert ds.train_x.shape == (9, 100) and ds.test_x.shape == (6, 100)
    assert ds.valid_x is not None and ds.valid_x.shape == (4, 100)
    assert torch.bincount(ds.train_y).tolist() == [5, 4]
    assert torch.bincount(ds.valid_y).tolist() == [2, 2]
    assert torch.bincount(ds.test_y).tolist() == [3, 3]
    match_files(ds.train_x[ds.train_y == 0], sorted((parts / "train" / "a").iterdir()), (10, 10))
    assert data.load_dataset("folder", data_dir=parts, image_size=(10, 10)).fingerprint() == (
        ds.fingerprint()
    )
    # valid/ counts in the fingerprint; without it (or as val/) the four main tensors are equal
    (parts / "valid").rename(parts / "val")
    as_val = data.load_image_folder(parts, (10, 10))
    assert torch.equal(as_val.valid_x, ds.valid_x) and as_val.fingerprint() == ds.fingerprint()
    (parts / "val").rename(parts / "elsewhere")  # other folders next to the partitions: ignored
    bare = data.load_image_folder(parts, (10, 10))
    assert bare.valid_x is None and bare.fingerprint() != ds.fingerprint()
    assert torch.equal(bare.train_x, ds.train_x) and torch.equal(bare.test_y, ds.test_y)


# --- errors ----------------------------------------------------------------------------------


def _empty(root: Path) -> str:
    root.mkdir()
    return "no images found"


def _only_text(root: Path) -> str:
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.txt").write_text("x")
    return "no images found"


def _loose(root: Path) -> str:
    write_image(root / "a.png", (8, 8))
    write_image(root / "b.png", (8, 8))
    return "2 images lie directly in it (e.g. a.png) but none in class subfolders"


def _stray(root: Path) -> str:
    write_class(root / "cat", 2, 0)
    write_class(root / "dog", 2, 1)
    write_image(root / "stray.jpg", (8, 8))
    return "stray.jpg: image outside any class subfolder"


def _empty_class(root: Path) -> str:
    write_class(root / "cat", 3, 0)
    (root / "dog").mkdir()
    (root / "dog" / "readme.md").write_text("x")
    return f"{root / 'dog'}: class folder holds no images"


def _one_class(root: Path) -> str:
    write_class(root / "cat", 3, 0)
    return "found 1 class (cat); a classifier needs at least 2"


def _one_image(root: Path) -> str:
    write_class(root / "cat", 3, 0)
    write_class(root / "dog", 1, 1)
    return f"{root / 'dog'}: class has 1 image"


def _corrupt(root: Path) -> str:
    write_class(root / "cat", 3, 0)
    write_class(root / "dog", 3, 1)
    (root / "dog" / "01.jpg").write_bytes(b"not an image at all")
    return f"{root / 'dog' / '01.jpg'}: not a readable image (cannot identify image file"


def _truncated(root: Path) -> str:
    write_class(root / "cat", 3, 0)
    write_class(root / "dog", 3, 1)
    photo = write_image(root / "dog" / "big.jpg", (300, 200), "RGB", 5)
    photo.write_bytes(photo.read_bytes()[:2000])
    return f"{photo}: not a readable image"


def _test_only_class(root: Path) -> str:
    for part in ("train", "test"):
        write_class(root / part / "a", 2, 0)
        write_class(root / part / "b", 2, 1)
    write_class(root / "test" / "bird", 2, 2)
    return "class bird is in test/ but not in train/"


def _missing_from_test(root: Path) -> str:
    for part in ("train", "test"):
        write_class(root / part / "a", 2, 0)
        write_class(root / part / "b", 2, 1)
    write_class(root / "train" / "c", 2, 2)
    write_class(root / "train" / "d", 2, 3)
    return "class sets differ between train/ and test/: c, d are missing from test/"


def _valid_mismatch(root: Path) -> str:
    for part in ("train", "test", "valid"):
        write_class(root / part / "a", 2, 0)
    for part in ("train", "test"):
        write_class(root / part / "b", 2, 1)
    return "class sets differ between train/ and valid/: b is missing from valid/"


def _no_test(root: Path) -> str:
    write_class(root / "train" / "a", 2, 0)
    write_class(root / "train" / "b", 2, 1)
    return "has train/ but no test/"


def _two_valids(root: Path) -> str:
    for part in ("train", "test", "valid", "val"):
        write_class(root / part / "a", 2, 0)
        write_class(root / part / "b", 2, 1)
    return "has both valid/ and val/"


def _empty_test_class(root: Path) -> str:
    for part in ("train", "test"):
        write_class(root / part / "a", 2, 0)
        write_class(root / part / "b", 2, 1)
    for path in (root / "test" / "b").iterdir():
        path.unlink()
    return f"{root / 'test' / 'b'}: class folder holds no images"


@pytest.mark.parametrize(
    "breaker",
    [
        _empty,
        _only_text,
        _loose,
        _stray,
        _empty_class,
        _one_class,
        _one_image,
        _corrupt,
        _truncated,
        _test_only_class,
        _missing_from_test,
        _valid_mismatch,
        _no_test,
        _two_valids,
        _empty_test_class,
    ],
)
def test_bad_image_folders(tmp_path, breaker):
    root = tmp_path / "bad"
    expected = breaker(root)
    with pytest.raises(DataError) as exc:
        data.load_dataset("folder", data_dir=root)
    one_line(exc, expected)


def test_bad_arguments(tmp_path, pets, tiny_idx_dir):
    with pytest.raises(DataError) as exc:
        data.load_dataset("folder")
    one_line(exc, "dataset 'folder' needs a data directory")
    with pytest.raises(DataUnavailable) as exc:
        data.load_dataset("folder", data_dir=tmp_path / "nowhere")
    one_line(exc, "image folder", "nowhere", "not found")
    for size in [(28,), (0, 28), (28.5, 28), "28x28", (True, 28)]:
        with pytest.raises(DataError) as exc:
            data.load_dataset("folder", data_dir=pets, image_size=size)
        one_line(exc, "image size must be two positive integers (H, W)")
    with pytest.raises(DataError) as exc:
        data.load_dataset("mnist", data_dir=tiny_idx_dir, channels=2)
    one_line(exc, "channels must be 1 (grey) or 3 (RGB), got 2")
    with pytest.raises(DataError) as exc:
        data.load_dataset("folder", data_dir=tiny_idx_dir)  # IDX files are not images
    one_line(exc, "no images found")


def test_registered_name_never_loads_an_image_folder(pets):
    with pytest.raises(DataError) as exc:
        data.load_dataset("mnist", data_dir=pets)
    assert not isinstance(exc.value, DataUnavailable)  # so the runner never falls back
    one_line(exc, "is an image folder, not the IDX files of dataset 'mnist'", "--dataset folder")
    with pytest.raises(DataError) as exc:
        data.load_dataset("cifar10", data_dir=pets)
    one_line(exc, "unknown dataset 'cifar10'", "'folder' for an image folder")


def test_idx_data_follows_image_size_and_channels(tiny_idx_dir):
    plain = data.load_dataset("mnist", data_dir=tiny_idx_dir)
    same = data.load_dataset("mnist", data_dir=tiny_idx_dir, image_size=[28, 28], channels=1)
    assert same.fingerprint() == plain.fingerprint() and same.channels == 1
    rgb = data.load_dataset("mnist", data_dir=tiny_idx_dir, image_size=(14, 7), channels=3)
    assert rgb.train_x.shape == (50, 3 * 14 * 7) and rgb.test_x.shape == (20, 294)
    assert (rgb.image_shape, rgb.channels, rgb.num_features) == ((14, 7), 3, 294)
    images = rgb.train_x.view(50, 3, 14, 7)
    assert torch.equal(images[:, 0], images[:, 2]) and torch.equal(rgb.train_y, plain.train_y)


# --- end to end ------------------------------------------------------------------------------

STUDY = {
    "name": "f",
    "seeds": [0],
    "levels": [0.0, 0.5],
    "train": {"epochs": 2, "batch_size": 8},
    "setups": [{"name": "l", "noise": "labels.uniform"}],
}


def test_study_on_an_image_folder(pets, tmp_path):
    out = runner.run_study(
        parse_study(STUDY), tmp_path / "out", dataset="folder", data_dir=pets, device="cpu"
    )
    with Store(out) as store:
        runs, meta, epochs = store.runs(), store.meta(), store.epochs()
    assert len(runs) == 2 and {r["status"] for r in runs} == {"done"} and len(epochs) == 4
    assert meta["dataset"] == "folder:pets" and meta["dataset_source"] == str(pets.resolve())
    assert (meta["train_size"], meta["test_size"]) == (18, 4)
    assert meta["class_names"] == ["cat", "dog", "emu"]


def test_study_on_rgb_images_sizes_the_mlp_input_and_reports(parts, tmp_path):
    study = parse_study(
        {
            **STUDY,
            "data": {"image_size": [12, 10], "channels": 3},
            "setups": [{"name": "p", "noise": "pixels.replace"}],
        }
    )
    out = runner.run_study(study, tmp_path / "out", data_dir=parts, device="cpu")
    with Store(out) as store:
        assert [r["status"] for r in store.runs()] == ["done", "done"]
        meta = store.meta()
        examples = store.array("study", "examples/p")
    assert meta["image_shape"] == [12, 10] and meta["channels"] == 3
    assert meta["dataset"] == "folder:parts"  # an image folder needs no --dataset
    assert examples.shape[-1] == 3 * 12 * 10
    paths = write_report(out)
    assert "MLP 360" in paths["md"].read_text()
    assert (out / "figures" / "examples.png").exists()


def test_images_that_would_not_fit_in_memory_are_refused_before_decoding(pets, monkeypatch):
    from noisebench import memory

    decoded = []
    monkeypatch.setattr(memory, "available_bytes", lambda: 10 * 2**20)  # 10 MiB free
    monkeypatch.setattr(data.images, "_read_image", lambda *a: decoded.append(a))
    with pytest.raises(NoisebenchError) as exc:
        data.load_dataset("folder", data_dir=pets, image_size=(1024, 1024), channels=3)
    one_line(exc, "22 images of 3×1024×1024", "needs at least 66 MiB", "only 10 MiB is available")
    assert decoded == []
