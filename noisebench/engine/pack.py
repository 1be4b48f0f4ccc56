"""Training a pack: build the stacked model and shards, run the epochs, checkpoint, resume."""

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import seeding
from ..data import Dataset
from ..noise import LabelNoise, LabelNoiseResult, make_noise
from ..study import RunSpec, TrainSpec
from .model import StackedMLP, evaluate
from .optimizer import Optimizer
from .threads import SingleThreadedOps, Workers, shard_count
from .trainer import Trainer, pixel_groups, pixel_key

CHECKPOINT_FORMAT = 3


@dataclass
class RunResult:
    run_id: str
    status: str  # "done" or "diverged"
    epochs: list[dict[str, float]] = field(default_factory=list)  # extra keys: more metrics
    label_noise: LabelNoiseResult | None = None
    final: dict[str, float] = field(default_factory=dict)  # metrics measured after training


def _label_noise(run: RunSpec, data: Dataset) -> LabelNoiseResult | None:
    if run.noise is None or run.level == 0:
        return None
    noise = make_noise(run.noise, dict(run.params))
    if not isinstance(noise, LabelNoise):
        return None
    noise.prepare(data.train_x, data.train_y, run.seed)
    gen = seeding.generator(run.seed, "labels")
    return noise.corrupt(data.train_y, data.num_classes, run.level, gen)


def _pack_order(runs: list[RunSpec], shards: int) -> tuple[list[int], list[int]]:
    """Internal order of the pack and its shard boundaries.

    Runs are sorted by pixel-noise model (runs without pixel noise first) and dealt to the
    shards in turn, so shards get similar work; inside a shard each model's runs stay
    together, a contiguous slice of the batch. Shard k is rows [bounds[k], bounds[k + 1])."""
    keys: list[tuple | None] = [None]
    for run in runs:
        key = pixel_key(run)
        if key not in keys:
            keys.append(key)
    by_model = sorted(range(len(runs)), key=lambda i: keys.index(pixel_key(runs[i])))
    dealt = [by_model[k::shards] for k in range(shards)]
    bounds = [0]
    for part in dealt:
        bounds.append(bounds[-1] + len(part))
    return [i for part in dealt for i in part], bounds


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


@dataclass
class Shard:
    start: int
    stop: int
    model: StackedMLP  # views of the pack's rows [start, stop)
    trainer: Trainer


@dataclass
class Pack:
    """A pack ready to train: runs in pack order, its model, optimizer and shards."""

    spec: TrainSpec
    runs: list[RunSpec]  # in pack order
    order_in_pack: list[int]  # runs[i] is the caller's runs_in[order_in_pack[i]]
    label_noise: list[LabelNoiseResult | None]
    pixel_gens: list[torch.Generator | None]  # per run, None without pixel noise
    model: StackedMLP
    optimizer: Optimizer
    shards: list[Shard]

    def sync_optimizer(self) -> None:
        """Shards count their own steps; the pack's optimizer takes theirs (all equal)."""
        self.optimizer.step_count = self.shards[0].trainer.opt.step_count

    def reset_shards(self) -> None:
        """After the pack's optimizer state is loaded: every shard takes its step count."""
        for shard in self.shards:
            shard.trainer.opt.step_count = self.optimizer.step_count


def build(runs_in: list[RunSpec], data: Dataset, device: torch.device, shards: int) -> Pack:
    spec = runs_in[0].train
    order_in_pack, bounds = _pack_order(runs_in, shards)
    runs = [runs_in[i] for i in order_in_pack]
    train_x = data.train_x.to(device)
    label_noise = [_label_noise(run, data) for run in runs]
    labels = torch.stack([ln.labels if ln else data.train_y for ln in label_noise]).to(device)
    pixel_gens = [
        seeding.generator(r.seed, "pixels", device) if pixel_key(r) else None for r in runs
    ]
    model = StackedMLP(
        runs[0].model, [r.seed for r in runs], (data.num_features, data.num_classes), device
    )
    optimizer = Optimizer(model.weights, model.biases, spec)
    parts, fitted = [], {}
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        rows = model.rows(start, stop)
        groups = pixel_groups(runs[start:stop], pixel_gens[start:stop], train_x, fitted)
        opt = optimizer.rows(start, stop, rows)
        seeds = [r.seed for r in runs[start:stop]]
        trainer = Trainer(rows, opt, train_x, labels[start:stop], groups, spec, seeds)
        parts.append(Shard(start, stop, rows, trainer))
    return Pack(spec, runs, order_in_pack, label_noise, pixel_gens, model, optimizer, parts)


def train_pack(
    runs: list[RunSpec],
    data: Dataset,
    device: torch.device | str = "cpu",
    checkpoint: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[RunResult]:
    """Train `runs` (one architecture and recipe) as one stacked model; return their metrics.

    With `checkpoint`, the pack's full state (parameters, optimizer, every generator) is saved
    after each epoch and training continues from it, bit for bit, when restarted.
    `progress(steps_done, steps_total)` is called as training advances.
    """
    device = torch.device(device)
    shards = shard_count(len(runs), device)
    with torch.no_grad():
        # label noise and `fixed` pixel noise are prepared with torch's usual threads
        pack = build(runs, data, device, shards)
        with SingleThreadedOps(device), Workers(shards) as workers:
            return _train_pack(pack, runs, data, device, checkpoint, progress, workers)


def evaluate_pack(pack: Pack, workers: Workers, test_x, test_y) -> torch.Tensor:
    """[3, R]: test loss, accuracy and confidence of every run, shards in parallel."""
    parts = workers.map(lambda s: torch.stack(evaluate(s.model, test_x, test_y)), pack.shards)
    return torch.cat(parts, dim=1)


def _train_pack(
    pack: Pack,
    runs_in: list[RunSpec],
    data: Dataset,
    device: torch.device,
    checkpoint: Path | None,
    progress: Callable[[int, int], None] | None,
    workers: Workers,
) -> list[RunResult]:
    spec, runs, order_in_pack = pack.spec, pack.runs, pack.order_in_pack
    n_runs, n_train = len(runs), len(data.train_y)
    model, optimizer = pack.model, pack.optimizer
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)
    order_gens = [seeding.generator(r.seed, "order") for r in runs]
    results = [RunResult(run_id=r.run_id, status="done") for r in runs]
    start_epoch = 0

    run_ids = [r.run_id for r in runs_in]
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state.get("format") == CHECKPOINT_FORMAT and state["run_ids"] == run_ids:
            # rows are in pack order, which depends on the shard count: map them by run
            rows = [state["pack_ids"].index(r.run_id) for r in runs]
            for p, saved in zip(model.parameters(), state["params"], strict=True):
                p.copy_(saved[rows])
            optimizer.load_state_dict(
                {
                    k: v if k == "step" else [t[rows] for t in v]
                    for k, v in state["optimizer"].items()
                }
            )
            pack.reset_shards()
            for r, g in enumerate(order_gens):
                g.set_state(state["order_gens"][rows[r]].cpu())
            for r, g in enumerate(pack.pixel_gens):
                if g is not None:
                    s = state["pixel_gens"][rows[r]]
                    g.set_state(s.cpu() if device.type == "cpu" else s)
            for r, res in enumerate(results):
                res.epochs = state["epochs"][rows[r]]
                res.status = state["status"][rows[r]]
            start_epoch = state["epoch"]

    batch = spec.batch_size
    steps = math.ceil(n_train / batch)
    total_steps = steps * spec.epochs
    for epoch in range(start_epoch, spec.epochs):
        began = time.perf_counter()
        order = torch.stack([torch.randperm(n_train, generator=g) for g in order_gens])
        order = order.to(device)
        loss_sum = torch.zeros(n_runs, device=device, dtype=torch.float64)
        correct = torch.zeros(n_runs, device=device, dtype=torch.float64)

        def train_shard(
            shard: Shard,
            epoch: int = epoch,
            order: torch.Tensor = order,
            loss_sum: torch.Tensor = loss_sum,
            correct: torch.Tensor = correct,
        ) -> None:
            rows = slice(shard.start, shard.stop)
            sums, hits = loss_sum[rows], correct[rows]
            for step in range(steps):
                if workers.stop.is_set():
                    return
                shard.trainer.step(order[rows, step * batch : (step + 1) * batch], sums, hits)
                if shard.start == 0 and progress is not None and step % 50 == 0:
                    progress(epoch * steps + step, total_steps)

        workers.map(train_shard, pack.shards)
        pack.sync_optimizer()
        test_loss, test_acc, test_conf = evaluate_pack(pack, workers, test_x, test_y)
        wall = time.perf_counter() - began
        metrics = torch.stack(
            [loss_sum / n_train, correct / n_train, test_loss, test_acc, test_conf]
        )
        for r, (tr_loss, tr_acc, te_loss, te_acc, te_conf) in enumerate(metrics.T.tolist()):
            if results[r].status == "diverged":
                continue
            if not all(math.isfinite(v) for v in (tr_loss, te_loss)):
                results[r].status = "diverged"
            results[r].epochs.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": tr_loss,
                    "train_acc": tr_acc,
                    "test_loss": te_loss,
                    "test_acc": te_acc,
                    "test_conf": te_conf,
                    "wall_s": wall,
                }
            )
        if checkpoint is not None and epoch + 1 < spec.epochs:
            _save_atomic(
                {
                    "format": CHECKPOINT_FORMAT,
                    "run_ids": run_ids,
                    "pack_ids": [r.run_id for r in runs],
                    "epoch": epoch + 1,
                    "params": [p.detach() for p in model.parameters()],
                    "optimizer": optimizer.state_dict(),
                    "order_gens": [g.get_state() for g in order_gens],
                    "pixel_gens": [g.get_state() if g else None for g in pack.pixel_gens],
                    "epochs": [res.epochs for res in results],
                    "status": [res.status for res in results],
                },
                checkpoint,
            )
    if progress is not None:
        progress(total_steps, total_steps)
    out: list[RunResult] = [results[0]] * n_runs
    for internal, original in enumerate(order_in_pack):
        results[internal].label_noise = pack.label_noise[internal]
        out[original] = results[internal]
    return out
