"""Train packs one after another in this process."""

import time
from collections.abc import Iterator

import torch

from ..data import Dataset
from ..engine import train_pack
from . import PackJob, PackOutcome, PackProgress


class LocalBackend:
    def train(
        self, jobs: list[PackJob], data: Dataset, device: torch.device, progress: PackProgress
    ) -> Iterator[PackOutcome]:
        for job in jobs:
            started = time.time()

            def report(step: int, of: int, index: int = job.index) -> None:
                progress(index, step, of)

            results = train_pack(
                job.runs,
                data,
                device,
                checkpoint=job.checkpoint,
                progress=report,
                analysis=job.analysis,
            )
            yield PackOutcome(job=job, results=results, started_at=started)
