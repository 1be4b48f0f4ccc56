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


def size_text(nbytes: float) -> str:
    """1.5 GiB, 300 MiB."""
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:,.1f} GiB"
    return f"{nbytes / 2**20:,.0f} MiB"


def check_fits(needed: int, what: str, available: int | None = None, where: str = "memory") -> None:
    """NoisebenchError if `needed` bytes exceed `available` (default: available_bytes())."""
    have = available_bytes() if available is None else available
    if needed > have:
        raise NoisebenchError(
            f"{what} needs at least {size_text(needed)} of {where}, but only "
            f"{size_text(have)} is available"
        )
