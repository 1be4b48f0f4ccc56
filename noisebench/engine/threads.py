"""CPU parallelism: a pack is cut into shards of whole runs, each trained by its own thread
with single-threaded ops; every other op of a pack (building it, measuring it) is
single-threaded too."""

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch


def shards_wanted() -> int | None:
    """$NOISEBENCH_SHARDS, if set to a positive number."""
    wanted = os.environ.get("NOISEBENCH_SHARDS", "").strip()
    return int(wanted) if wanted.isdigit() and int(wanted) > 0 else None


def shard_count(runs: int, device: torch.device) -> int:
    """How many shards (threads) train a pack of `runs` runs: one per torch thread on CPU,
    or $NOISEBENCH_SHARDS (1: the whole pack in one single-threaded shard)."""
    if device.type != "cpu":
        return 1
    return max(1, min(runs, shards_wanted() or torch.get_num_threads()))


class Workers:
    """Runs one call per shard at once: shard 0 in the calling thread, the others in a pool.

    The pool's threads are started, and made single-threaded, before anything runs: setting
    the count later, while another shard computes, was seen to perturb that shard's numbers,
    and a thread that never sets it lets MKL use OpenMP's default count.
    Each call runs without autograd. If one fails (or the progress callback raises in shard
    0), `stop` is set so the others return early, and the error is raised once all are done.
    """

    def __init__(self, count: int):
        self.stop = threading.Event()
        self.pool = None
        if count > 1:
            ready = threading.Barrier(count - 1)
            self.pool = ThreadPoolExecutor(
                count - 1, initializer=torch.set_num_threads, initargs=(1,)
            )
            for future in [self.pool.submit(ready.wait) for _ in range(count - 1)]:
                future.result()  # every thread exists and is set up

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        self.stop.clear()

        def call(item: Any) -> Any:
            try:
                with torch.no_grad():
                    return fn(item)
            except BaseException:
                self.stop.set()
                raise

        futures = [self.pool.submit(call, item) for item in items[1:]] if self.pool else []
        try:
            first = call(items[0])
        finally:
            for future in futures:
                future.exception()  # wait for every shard before going on or raising
        return [first, *(future.result() for future in futures)]


class SingleThreadedOps:
    """While a pack is built, trained and measured on CPU, every op runs single-threaded (the
    shards are the parallelism), whatever the torch thread count or $NOISEBENCH_SHARDS.

    A multi-threaded kernel splits its sums by thread count (torch's sum of 4 million floats
    differs between 1 and 2 threads), so the numbers would depend on how many threads a
    process has. Single-threaded, a run's numbers are bit for bit the same in every process,
    setting and pack, even alone (tests/test_determinism.py, bench/determinism.py)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.before = torch.get_num_threads()

    def __enter__(self) -> "SingleThreadedOps":
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if torch.get_num_threads() != self.before:
            torch.set_num_threads(self.before)
