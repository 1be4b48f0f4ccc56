"""Shared fixtures: tiny synthetic IDX datasets and a data environment isolated from the machine."""

from __future__ import annotations

import functools
import gzip
import http.server
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write `array` as an IDX file of unsigned bytes, gzipped if `path` ends in .gz."""
    array = np.asarray(array, dtype=np.uint8)
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_idx_dataset(
    directory: Path,
    n_train: int = 50,
    n_test: int = 20,
    *,
    gz: bool = True,
    seed: int = 0,
) -> Path:
    """A random MNIST-shaped dataset (28x28 images, labels 0..9) as four IDX files."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, count in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(directory / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{split}-labels-idx1-ubyte{suffix}", labels)
    return directory


@pytest.fixture
def idx_writer() -> Callable[[Path, np.ndarray], Path]:
    """`write_idx(path, array)`: write one IDX file."""
    return write_idx


@pytest.fixture
def idx_dataset_writer() -> Callable[..., Path]:
    """`write_idx_dataset(directory, n_train=50, n_test=20, *, gz=True, seed=0)`."""
    return write_idx_dataset


@pytest.fixture
def tiny_idx_dir(tmp_path: Path) -> Path:
    """A directory holding a 50-train / 20-test synthetic dataset as gzipped IDX files."""
    return write_idx_dataset(tmp_path / "tiny")


@pytest.fixture
def isolated_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No NOISEBENCH_DATA, an empty cache and system dir under tmp_path, and no network.

    Returns the root under which `cache/` and `system/` live.
    """
    from noisebench import data

    root = tmp_path / "data-env"
    monkeypatch.delenv("NOISEBENCH_DATA", raising=False)
    monkeypatch.setenv("NOISEBENCH_CACHE", str(root / "cache"))
    monkeypatch.setattr(data.loading, "SYSTEM_DATA_DIR", root / "system")

    def offline(url: str, _output_file: object, _pooch: object) -> None:
        import requests

        raise requests.exceptions.ConnectionError(f"test is offline: {url}")

    monkeypatch.setattr(data.downloads, "_downloader", lambda: offline)
    return root


@pytest.fixture(scope="session")
def sample_data():
    """The bundled real-MNIST sample (4,000 train / 1,000 test)."""
    from noisebench.data import load_dataset

    return load_dataset("mnist-sample")


@pytest.fixture(scope="session")
def small_data(sample_data):
    """A 640-train / 300-test slice of the real sample: enough to learn, fast to train."""
    from dataclasses import replace

    return replace(
        sample_data,
        train_x=sample_data.train_x[:640].clone(),
        train_y=sample_data.train_y[:640].clone(),
        test_x=sample_data.test_x[:300].clone(),
        test_y=sample_data.test_y[:300].clone(),
    )


@pytest.fixture
def local_server(tmp_path, monkeypatch) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a fresh directory: (base URL, directory)."""
    served = tmp_path / "served"
    served.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", served
    finally:
        server.shutdown()
        server.server_close()
