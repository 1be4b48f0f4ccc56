"""Timing one pack's steps, for the benchmark (bench/)."""

import math
import time
from dataclasses import dataclass

import torch

from .. import seeding
from ..data import Dataset
from ..study import RunSpec
from .pack import Shard, build, evaluate_pack
from .threads import SingleThreadedOps, Workers, shard_count


@dataclass(frozen=True)
class PackTiming:
    """What one step of a pack costs (seconds), from `time_pack`."""

    runs: int
    batch: int
    shards: int
    step_s: float  # one training step of the whole pack (best of `repeats`)
    noise_s: float  # of which pixel noise (average over the shards, which run in parallel)
    eval_s: float  # one evaluation of the pack on the whole test set
    steps_per_epoch: int
    cpu_step_s: float = math.nan  # CPU time of the busiest shard thread per step (diagnostic)

    @property
    def samples_per_s(self) -> float:
        """Aggregate run-samples trained per second."""
        return self.runs * self.batch / self.step_s


def time_pack(
    runs: list[RunSpec],
    data: Dataset,
    steps: int = 200,
    warmup: int = 20,
    repeats: int = 3,
    device: torch.device | str = "cpu",
) -> PackTiming:
    """Time `steps` training steps of `runs` as one pack after `warmup` steps, `repeats`
    times (keeping the fastest), and one evaluation; for the benchmark (bench/)."""
    device = torch.device(device)
    shards = shard_count(len(runs), device)
    with torch.no_grad(), SingleThreadedOps(device):
        pack = build(runs, data, device, shards)
    batch, n_train = pack.spec.batch_size, len(data.train_y)
    orders = [seeding.generator(r.seed, "order") for r in pack.runs]
    order = torch.stack([torch.randperm(n_train, generator=g) for g in orders]).to(device)
    loss_sum = torch.zeros(len(runs), device=device, dtype=torch.float64)
    correct = torch.zeros_like(loss_sum)
    per_epoch = n_train // batch  # full batches only
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)

    with torch.no_grad(), SingleThreadedOps(device), Workers(shards) as workers:

        def run(count: int) -> float:
            """`count` steps of every shard; the busiest shard thread's CPU seconds."""

            def shard_steps(shard: Shard) -> float:
                rows = slice(shard.start, shard.stop)
                cpu = time.thread_time()
                for k in range(count):
                    start = (k % per_epoch) * batch
                    idx = order[rows, start : start + batch]
                    shard.trainer.step(idx, loss_sum[rows], correct[rows])
                return time.thread_time() - cpu

            return max(workers.map(shard_steps, pack.shards))

        run(warmup)
        best, best_noise, best_cpu = math.inf, math.inf, math.inf
        for _ in range(repeats):
            for shard in pack.shards:
                shard.trainer.inputs.noise_s, shard.trainer.inputs.timing = 0.0, True
            began = time.perf_counter()
            cpu = run(steps) / steps
            elapsed = (time.perf_counter() - began) / steps
            best_cpu = min(best_cpu, cpu)
            if elapsed < best:
                noise = sum(s.trainer.inputs.noise_s for s in pack.shards) / len(pack.shards)
                best, best_noise = elapsed, noise / steps
        evaluate_pack(pack, workers, test_x, test_y)
        began = time.perf_counter()
        evaluate_pack(pack, workers, test_x, test_y)
        eval_s = time.perf_counter() - began
    return PackTiming(
        len(runs), batch, shards, best, best_noise, eval_s, math.ceil(n_train / batch), best_cpu
    )
