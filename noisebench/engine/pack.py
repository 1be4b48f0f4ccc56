"""Training a pack: build the stacked model and shards, run the epochs, checkpoint, resume."""

import io
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import seeding
from ..data import Dataset
from ..noise import LabelNoiseResult
from ..study import AnalysisSpec, RunSpec, TrainSpec
from .backward import LOSSES
from .inputs import pixel_groups, pixel_key
from .measure import EvalSets, epoch_metrics, eval_sets, final_metrics
from .methods import (
    ShardLosses,
    anchor_transition,
    estimate_error,
    init_seed,
    method_key,
    noisy_validation_labels,
    shard_loss,
    training_images,
    unit_key,
)
from .model import StackedMLP, evaluate
from .optimizer import Optimizer
from .stopping import Stopping
from .threads import SingleThreadedOps, Workers, shard_count
from .trainer import Trainer
from .trainset import RunTrainSet, run_train_set, split_validation

CHECKPOINT_FORMAT = 5
# A run whose mean training loss over an epoch exceeds this many times ln K (the loss of a
# uniform guess over K classes) or is not finite has diverged.
DIVERGED_LOSS_FACTOR = 100


class CheckpointWarning(UserWarning):
    """A pack checkpoint did not load: the pack trains again from its first epoch."""


@dataclass
class RunResult:
    run_id: str
    status: str  # "done" or "diverged"
    epochs: list[dict[str, float]] = field(default_factory=list)  # extra keys: more metrics
    label_noise: LabelNoiseResult | None = None
    final: dict[str, float] = field(default_factory=dict)  # metrics measured after training
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # measured after training


def _pack_order(runs: list[RunSpec], shards: int) -> tuple[list[int], list[int]]:
    """Internal order of the pack and its shard boundaries.

    Runs are sorted by pixel-noise model (runs without pixel noise first), then by training
    method, and dealt to the shards in turn, so shards get similar work; inside a shard each
    model's runs stay together, a contiguous slice of the batch, and so do each method's. A
    co-teaching pair is dealt as one (peer 0, then peer 1). Shard k is rows
    [bounds[k], bounds[k + 1])."""
    keys: list[tuple | None] = [None]
    methods: list[tuple] = []
    units: dict[tuple, list[int]] = {}
    for i, run in enumerate(runs):
        if pixel_key(run) not in keys:
            keys.append(pixel_key(run))
        if method_key(run) not in methods:
            methods.append(method_key(run))
        units.setdefault(unit_key(run), []).append(i)
    for unit in units.values():
        unit.sort(key=lambda i: dict(runs[i].method).get("peer", 0))

    def rank(unit: list[int]) -> tuple[int, int]:
        run = runs[unit[0]]
        return keys.index(pixel_key(run)), methods.index(method_key(run))

    ordered = sorted(units.values(), key=rank)
    dealt = [ordered[k::shards] for k in range(min(shards, len(ordered)))]
    bounds = [0]
    for part in dealt:
        bounds.append(bounds[-1] + sum(len(unit) for unit in part))
    return [i for part in dealt for unit in part for i in unit], bounds


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write the checkpoint under a temporary name, then rename it into place."""
    buffer = io.BytesIO()
    torch.save(state, buffer)  # serialised in memory, so a full disk is an OSError, not torch's
    tmp = path.with_suffix(".tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(buffer.getbuffer())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
    trains: list[RunTrainSet]  # each run's training set and labels
    pixel_gens: list[torch.Generator | None]  # per run, None without pixel noise
    model: StackedMLP
    optimizer: Optimizer
    shards: list[Shard]
    sets: EvalSets
    n_train: int  # examples in each run's training set

    def tensors(self) -> list[torch.Tensor]:
        """Everything of the model that training changes: parameters, then buffers."""
        return [*self.model.parameters(), *self.model.buffers()]

    def sync_optimizer(self) -> None:
        """Shards count their own steps; the pack's optimizer takes theirs (all equal)."""
        self.optimizer.step_count = self.shards[0].trainer.opt.step_count

    def reset_shards(self) -> None:
        """After the pack's optimizer state is loaded: every shard takes its step count."""
        for shard in self.shards:
            shard.trainer.opt.step_count = self.optimizer.step_count


def _stacked_sources(trains: list[RunTrainSet], n: int, device) -> torch.Tensor | None:
    if all(t.source is None for t in trains):
        return None
    every = torch.arange(n)
    return torch.stack([every if t.source is None else t.source for t in trains]).to(device)


def build(
    runs_in: list[RunSpec],
    data: Dataset,
    device: torch.device,
    shards: int,
    analysis: AnalysisSpec | None = None,
) -> Pack:
    spec = runs_in[0].train
    order_in_pack, bounds = _pack_order(runs_in, shards)
    runs = [runs_in[i] for i in order_in_pack]
    train_x = data.train_x.to(device)
    pool, valid_rows = split_validation(data, runs[0].validation)
    parents: dict[str, RunTrainSet] = {}  # fold models' parent sets, drawn once per pack
    pool = pool if runs[0].validation else None
    trains = [run_train_set(run, data, pool, parents) for run in runs]
    sizes = {len(t.labels) for t in trains}
    assert len(sizes) == 1, "a pack's runs must have training sets of one size"
    n_train = sizes.pop()
    labels = torch.stack([t.labels for t in trains]).to(device)
    source = _stacked_sources(trains, n_train, device)
    pixel_gens = [
        seeding.generator(r.seed, "pixels", device) if pixel_key(r) else None for r in runs
    ]
    model = StackedMLP(
        runs[0].model, [init_seed(r) for r in runs], (data.num_features, data.num_classes), device
    )
    steps = math.ceil(n_train / spec.batch_size)
    optimizer = Optimizer(model, spec, total_steps=steps * spec.epochs)
    loss = LOSSES[runs[0].model.loss]
    parts, fitted = [], {}
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        rows = model.rows(start, stop)
        groups = pixel_groups(runs[start:stop], pixel_gens[start:stop], train_x, fitted)
        opt = optimizer.rows(start, stop, rows)
        seeds = [r.seed for r in runs[start:stop]]
        own = None if source is None else source[start:stop]
        dtype = rows.weights[0].dtype
        own_loss = shard_loss(runs[start:stop], loss, data.num_classes, opt, steps, dtype)
        trainer = Trainer(rows, opt, own_loss, train_x, labels[start:stop], groups, seeds, own)
        parts.append(Shard(start, stop, rows, trainer))
    sets = eval_sets(data, valid_rows, n_train, analysis or AnalysisSpec(), device)
    return Pack(
        spec, runs, order_in_pack, trains, pixel_gens, model, optimizer, parts, sets, n_train
    )


def train_pack(
    runs: list[RunSpec],
    data: Dataset,
    device: torch.device | str = "cpu",
    checkpoint: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    analysis: AnalysisSpec | None = None,
) -> list[RunResult]:
    """Train `runs` (one architecture and recipe) as one stacked model; return their metrics.

    With `checkpoint`, the pack's full state (parameters, optimizer, every generator) is saved
    after each epoch and training continues from it, bit for bit, when restarted.
    `progress(steps_done, steps_total)` is called as training advances. `analysis` says what
    is measured besides the loss (default: AnalysisSpec()).
    """
    device = torch.device(device)
    analysis = analysis or AnalysisSpec()
    shards = shard_count(len(runs), device)
    with torch.no_grad(), SingleThreadedOps(device):
        pack = build(runs, data, device, shards, analysis)
        with Workers(shards) as workers:
            trainer = _PackTraining(pack, runs, data.num_classes, workers, analysis)
            return trainer.run(checkpoint, progress)


def evaluate_pack(pack: Pack, workers: Workers, test_x, test_y) -> torch.Tensor:
    """[3, R]: test loss, accuracy and confidence of every run, shards in parallel."""
    parts = workers.map(lambda s: torch.stack(evaluate(s.model, test_x, test_y)), pack.shards)
    return torch.cat(parts, dim=1)


class _PackTraining:
    """The epochs of one pack: train, measure, stop, checkpoint; then the final analyses."""

    def __init__(
        self,
        pack: Pack,
        runs_in: list[RunSpec],
        num_classes: int,
        workers: Workers,
        analysis: AnalysisSpec,
    ):
        self.pack, self.workers, self.analysis = pack, workers, analysis
        self.num_classes = num_classes
        self.run_ids = [r.run_id for r in runs_in]
        self.order_gens = [seeding.generator(r.seed, "order") for r in pack.runs]
        self.results = [RunResult(run_id=r.run_id, status="done") for r in pack.runs]
        self.stopping = Stopping(pack.runs, pack.tensors())
        self.epoch = 0  # epochs done
        self.estimates: dict[int, torch.Tensor] = {}  # run (pack order) -> estimated T, float64
        sets = pack.sets
        self.noisy_valid = {  # run (pack order) -> the noisy validation labels it stops on
            r: noisy_validation_labels(run, sets.valid_x, sets.valid_y, num_classes)
            for r, run in enumerate(pack.runs)
            if run.method_name == "early-stop" and sets.valid_x is not None
        }

    def run(
        self, checkpoint: Path | None, progress: Callable[[int, int], None] | None
    ) -> list[RunResult]:
        pack = self.pack
        if checkpoint is not None and checkpoint.exists():
            state = self._load(checkpoint)
            if state is not None:
                self._resume(state)
        steps = math.ceil(pack.n_train / pack.spec.batch_size)
        total = steps * pack.spec.epochs
        while self.epoch < pack.spec.epochs and self.stopping.any_active:
            began = time.perf_counter()
            self._train_epoch(steps, progress, total)
            train_s = time.perf_counter() - began
            self._record(train_s, began)
            self.epoch += 1
            self._estimate_transitions()
            if checkpoint is not None and self.epoch < pack.spec.epochs:
                _save_atomic(self._state(), checkpoint)
        if progress is not None:
            progress(total, total)
        self._finish()
        out: list[RunResult] = [self.results[0]] * len(pack.runs)
        for internal, original in enumerate(pack.order_in_pack):
            self.results[internal].label_noise = pack.trains[internal].label_noise
            out[original] = self.results[internal]
        return out

    def _train_epoch(self, steps: int, progress, total: int) -> None:
        pack, batch, epoch = self.pack, self.pack.spec.batch_size, self.epoch
        n = pack.n_train
        order = torch.stack([torch.randperm(n, generator=g) for g in self.order_gens])
        order = order.to(pack.sets.test_x.device)
        device = order.device
        self.loss_sum = torch.zeros(len(pack.runs), device=device, dtype=torch.float64)
        self.correct = torch.zeros(len(pack.runs), device=device, dtype=torch.float64)

        def train_shard(shard: Shard) -> None:
            rows = slice(shard.start, shard.stop)
            sums, hits = self.loss_sum[rows], self.correct[rows]
            for step in range(steps):
                if self.workers.stop.is_set():
                    return
                shard.trainer.step(order[rows, step * batch : (step + 1) * batch], sums, hits)
                if shard.start == 0 and progress is not None and step % 50 == 0:
                    progress(epoch * steps + step, total)

        self.workers.map(train_shard, pack.shards)

    def _record(self, train_s: float, began: float) -> None:
        """Measure every run after an epoch and record the runs still training."""
        pack, analysis = self.pack, self.analysis
        pack.sync_optimizer()
        test = evaluate_pack(pack, self.workers, pack.sets.test_x, pack.sets.test_y)
        parts = self.workers.map(
            lambda s: epoch_metrics(s.model, pack.sets, pack.trains[s.start : s.stop], analysis),
            pack.shards,
        )
        extra = [row for part in parts for row in part]
        for r, labels in self.noisy_valid.items():
            loss, acc, _ = evaluate(pack.model.rows(r, r + 1), pack.sets.valid_x, labels)
            extra[r] |= {"val_noisy_loss": loss.item(), "val_noisy_acc": acc.item()}
        wall = time.perf_counter() - began
        n = pack.n_train
        metrics = torch.stack([self.loss_sum / n, self.correct / n, *test]).T.tolist()
        tensors = pack.tensors()
        bound = DIVERGED_LOSS_FACTOR * math.log(self.num_classes)
        for r, (tr_loss, tr_acc, te_loss, te_acc, te_conf) in enumerate(metrics):
            result = self.results[r]
            if result.status == "diverged" or not self.stopping.active[r]:
                continue
            if not (math.isfinite(te_loss) and math.isfinite(tr_loss) and tr_loss <= bound):
                result.status = "diverged"
            row = {
                "epoch": self.epoch + 1,
                "train_loss": tr_loss,
                "train_acc": tr_acc,
                "test_loss": te_loss,
                "test_acc": te_acc,
                "test_conf": te_conf,
                "wall_s": wall,
                "train_s": train_s,
            } | extra[r]
            result.epochs.append(row)
            if result.status == "diverged":
                self.stopping.active[r] = False
            else:
                self.stopping.observe(r, self.epoch + 1, row, tensors)

    def _estimate_transitions(self) -> None:
        """Loss correction with T = "estimated": after `estimate_after` epochs of plain
        cross-entropy, T is estimated from each run's probabilities on its training set."""
        for shard in self.pack.shards:
            losses = shard.trainer.loss
            if not isinstance(losses, ShardLosses):
                continue
            for start, stop, corrected in losses.estimated():
                run = self.pack.runs[shard.start + start]
                if dict(run.method)["estimate_after"] != self.epoch:
                    continue
                estimates = []
                for r in range(shard.start + start, shard.start + stop):
                    x = training_images(self.pack.sets.train_x, self.pack.trains[r])
                    logits = self.pack.model.rows(r, r + 1).logits_of_bytes(x)
                    estimates.append(anchor_transition(torch.softmax(logits[0].double(), 1)))
                    self.estimates[r] = estimates[-1]
                dtype = shard.model.weights[0].dtype
                corrected.estimate(torch.stack(estimates).to(dtype))

    def _apply_estimates(self) -> None:
        """After a resume: the estimated T of each run that had one, back into its loss."""
        for shard in self.pack.shards:
            losses = shard.trainer.loss
            if not isinstance(losses, ShardLosses):
                continue
            for start, stop, corrected in losses.estimated():
                rows = range(shard.start + start, shard.start + stop)
                if all(r in self.estimates for r in rows):
                    dtype = shard.model.weights[0].dtype
                    corrected.estimate(torch.stack([self.estimates[r] for r in rows]).to(dtype))

    def _finish(self) -> None:
        """Each run takes its kept parameters; then the analyses after training."""
        pack, analysis = self.pack, self.analysis
        self.stopping.restore(pack.tensors())

        def measure(s: Shard) -> tuple[list[dict[str, float]], list[dict[str, np.ndarray]]]:
            seeds = [r.seed for r in pack.runs[s.start : s.stop]]
            trains = pack.trains[s.start : s.stop]
            return final_metrics(s.model, pack.sets, trains, seeds, analysis, self.num_classes)

        parts = self.workers.map(measure, pack.shards)
        finals = [row for values, arrays in parts for row in zip(values, arrays, strict=True)]
        for r, result in enumerate(self.results):
            last = result.epochs[-1]["epoch"] if result.epochs else 0
            result.final = self.stopping.final(r, last) | {"train_size": pack.n_train}
            if result.status != "diverged":
                result.final |= finals[r][0]
                result.arrays = finals[r][1]
            if r in self.estimates:
                result.final |= estimate_error(pack.runs[r], self.estimates[r])

    def _state(self) -> dict[str, Any]:
        pack = self.pack
        return {
            "format": CHECKPOINT_FORMAT,
            "run_ids": self.run_ids,
            "pack_ids": [r.run_id for r in pack.runs],
            "epoch": self.epoch,
            "tensors": [t.detach() for t in pack.tensors()],
            "optimizer": pack.optimizer.state_dict(),
            "order_gens": [g.get_state() for g in self.order_gens],
            "pixel_gens": [g.get_state() if g else None for g in pack.pixel_gens],
            "dropout_gens": [s for sh in pack.shards for s in sh.trainer.generator_states()],
            "epochs": [res.epochs for res in self.results],
            "status": [res.status for res in self.results],
            "stopping": self.stopping.state_dict(),
            **({"estimates": self._saved_estimates()} if self.estimates else {}),
        }

    def _saved_estimates(self) -> dict[str, torch.Tensor]:
        return {self.pack.runs[r].run_id: t for r, t in self.estimates.items()}

    def _load(self, checkpoint: Path) -> dict[str, Any] | None:
        """The checkpoint's state if it loads and belongs to this pack; else None, with a
        CheckpointWarning when the file is damaged (the pack then starts from scratch)."""
        device = self.pack.sets.test_x.device
        try:
            state = torch.load(checkpoint, map_location=device, weights_only=True)
            if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
                return None
            if state["run_ids"] != self.run_ids:
                return None
            shapes = [t.shape for t in self.pack.tensors()]
            if (
                set(state["pack_ids"]) != set(self.run_ids)
                or [t.shape for t in state["tensors"]] != shapes
            ):
                raise ValueError("its tensors do not fit this pack")
        except Exception as exc:  # any damage: truncated, random bytes, empty, wrong contents
            reason = " ".join(str(exc).split())[:120] or type(exc).__name__
            warnings.warn(
                f"checkpoint {checkpoint} does not load ({reason}); its pack trains again "
                "from the first epoch",
                CheckpointWarning,
                stacklevel=2,
            )
            return None
        return state

    def _resume(self, state: dict[str, Any]) -> None:
        pack = self.pack
        device = pack.sets.test_x.device
        # rows are in pack order, which depends on the shard count: map them by run
        rows = [state["pack_ids"].index(r.run_id) for r in pack.runs]
        for t, saved in zip(pack.tensors(), state["tensors"], strict=True):
            t.copy_(saved[rows])
        pack.optimizer.load_state_dict(
            {k: v if k == "step" else [t[rows] for t in v] for k, v in state["optimizer"].items()}
        )
        pack.reset_shards()
        if state["dropout_gens"]:
            for sh in pack.shards:
                sh.trainer.load_generator_states(
                    [state["dropout_gens"][rows[r]] for r in range(sh.start, sh.stop)]
                )
        for r, g in enumerate(self.order_gens):
            g.set_state(state["order_gens"][rows[r]].cpu())
        for r, g in enumerate(pack.pixel_gens):
            if g is not None:
                saved = state["pixel_gens"][rows[r]]
                g.set_state(saved.cpu() if device.type == "cpu" else saved)
        for r, res in enumerate(self.results):
            res.epochs = state["epochs"][rows[r]]
            res.status = state["status"][rows[r]]
        self.stopping.load_state_dict(state["stopping"], rows)
        self.epoch = state["epoch"]
        ids = [r.run_id for r in pack.runs]
        self.estimates = {ids.index(k): t.cpu() for k, t in state.get("estimates", {}).items()}
        self._apply_estimates()
