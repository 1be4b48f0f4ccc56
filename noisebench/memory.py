"""Memory: what this machine has free, and one line refusing work that would not fit."""

import os
from pathlib import Path

from .errors import NoisebenchError

MEMINFO = Path("/proc/meminfo")


def available_bytes() -> int:
    """Memory free for a new allocation without swapping: Linux's MemAvailable, elsewhere all
    of the physical memory."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB"


def check_fits(needed: int, what: str, available: int | None = None, where: str = "memory") -> None:
    """NoisebenchError if `needed` bytes exceed `available` (default: available_bytes())."""
    have = available_bytes() if available is None else available
    if needed > have:
        raise NoisebenchError(
            f"{what} needs at least {gib(needed)} of {where}, but only {gib(have)} is available"
        )
