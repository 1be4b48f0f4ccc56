"""Where packs train: in this process (`local`) or as tasks on a Ray cluster (`ray`)."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from ..data import Dataset
from ..engine import RunResult
from ..errors import NoisebenchError
from ..study import AnalysisSpec, RunSpec

# progress(job index, steps done, steps total) as a pack advances
PackProgress = Callable[[int, int, int], None]


@dataclass(frozen=True)
class PackJob:
    """One pack to train, with the file its per-epoch checkpoint goes to."""

    index: int
    runs: list[RunSpec]
    checkpoint: Path | None
    analysis: AnalysisSpec | None = None  # what is measured besides the loss


@dataclass(frozen=True)
class PackOutcome:
    job: PackJob
    results: list[RunResult]
    started_at: float


class Backend(Protocol):
    def train(
        self, jobs: list[PackJob], data: Dataset, device: torch.device, progress: PackProgress
    ) -> Iterator[PackOutcome]:
        """Train every job, yielding each as soon as it has finished."""
        ...


def make_backend(name: str, address: str | None = None) -> Backend:
    if name == "local":
        from .local import LocalBackend

        return LocalBackend()
    if name == "ray":
        from .ray import RayBackend

        return RayBackend(address)
    raise NoisebenchError(f"unknown backend '{name}' (known: local, ray)")
