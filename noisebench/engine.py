"""The pack trainer: many runs of one architecture trained as one stacked MLP.

Parameters carry a leading run dimension [R, ...]; each step is a handful of batched matmuls
and one optimizer step for all runs. Every run draws its initialisation, data order, label
noise and pixel noise from its own generators, so its numbers do not depend on its pack.
"""

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import seeding
from .data import Dataset
from .noise import LabelNoise, LabelNoiseResult, PixelNoise, make_noise
from .study import ModelSpec, RunSpec, TrainSpec

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(*shape, generator=gen) * 2 - 1) * bound


class StackedMLP:
    """R independent MLPs whose layers are stacked: weights [R, in, out], biases [R, 1, out]."""

    def __init__(self, spec: ModelSpec, seeds: list[int], sizes: tuple[int, int], device):
        sizes_all = [sizes[0], *spec.hidden, sizes[1]]
        gens = [seeding.generator(s, "init") for s in seeds]
        self.act = ACTIVATIONS[spec.activation]
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        for fan_in, fan_out in zip(sizes_all[:-1], sizes_all[1:], strict=True):
            bound = 1.0 / math.sqrt(fan_in)  # torch.nn.Linear's default initialisation
            w = torch.stack([_uniform((fan_out, fan_in), bound, g).T for g in gens])
            b = torch.stack([_uniform((1, fan_out), bound, g) for g in gens])
            self.weights.append(w.contiguous().to(device).requires_grad_())
            self.biases.append(b.to(device).requires_grad_())

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [R, B, C] for inputs [R, B, F], or [B, F] shared by every run."""
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w) if x.dim() == 3 else torch.matmul(x, w) + b
            if i < last:
                x = self.act(x)
        return x


def make_optimizer(params: list[torch.Tensor], spec: TrainSpec) -> torch.optim.Optimizer:
    # Both optimizers act elementwise, so stacking runs changes no run's update.
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
    )


@dataclass
class PixelGroup:
    """Runs of a pack that share one pixel-noise model (same type and parameters)."""

    noise: PixelNoise
    rows: torch.Tensor
    levels: torch.Tensor
    gens: list[torch.Generator]


@dataclass
class RunResult:
    run_id: str
    status: str  # "done" or "diverged"
    epochs: list[dict[str, float]] = field(default_factory=list)
    label_noise: LabelNoiseResult | None = None


@torch.no_grad()
def evaluate(model: StackedMLP, x: torch.Tensor, y: torch.Tensor, chunk: int = 2500):
    """Mean cross-entropy, accuracy and confidence (mean max-softmax) of every run on (x, y)."""
    runs = model.weights[0].shape[0]
    loss = torch.zeros(runs, device=x.device, dtype=torch.float64)
    correct = torch.zeros(runs, device=x.device, dtype=torch.float64)
    confidence = torch.zeros(runs, device=x.device, dtype=torch.float64)
    for start in range(0, len(x), chunk):
        xb = x[start : start + chunk].float().div_(255)
        yb = y[start : start + chunk]
        logp = torch.log_softmax(model(xb), dim=-1)
        loss -= logp.gather(-1, yb.view(1, -1, 1).expand(runs, -1, 1)).squeeze(-1).sum(1)
        top = logp.max(dim=-1)
        correct += (top.indices == yb).sum(1)
        confidence += top.values.exp().sum(1)
    n = len(x)
    return loss / n, correct / n, confidence / n


def _label_noise(run: RunSpec, data: Dataset) -> LabelNoiseResult | None:
    if run.noise is None or run.level == 0:
        return None
    noise = make_noise(run.noise, dict(run.params))
    if not isinstance(noise, LabelNoise):
        return None
    gen = seeding.generator(run.seed, "labels")
    return noise.corrupt(data.train_y, data.num_classes, run.level, gen)


def _pixel_groups(runs: list[RunSpec], train_x: torch.Tensor) -> list[PixelGroup]:
    groups: dict[tuple, list[int]] = {}
    for i, run in enumerate(runs):
        if run.noise and run.level > 0 and make_noise(run.noise).target == "pixels":
            groups.setdefault((run.noise, run.params), []).append(i)
    out = []
    for (name, params), rows in groups.items():
        noise = make_noise(name, dict(params))
        assert isinstance(noise, PixelNoise)
        noise.fit(train_x)
        out.append(
            PixelGroup(
                noise=noise,
                rows=torch.tensor(rows, device=train_x.device),
                levels=torch.tensor([runs[i].level for i in rows], device=train_x.device),
                gens=[seeding.generator(runs[i].seed, "pixels", train_x.device) for i in rows],
            )
        )
    return out


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


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
    spec = runs[0].train
    n_runs, n_train = len(runs), len(data.train_y)
    train_x, test_x = data.train_x.to(device), data.test_x.to(device)
    test_y = data.test_y.to(device)

    label_noise = [_label_noise(run, data) for run in runs]
    labels = torch.stack([ln.labels if ln else data.train_y for ln in label_noise]).to(
        device
    )  # [R, N]
    pixel_groups = _pixel_groups(runs, train_x)
    model = StackedMLP(
        runs[0].model, [r.seed for r in runs], (data.num_features, data.num_classes), device
    )
    optimizer = make_optimizer(model.parameters(), spec)
    order_gens = [seeding.generator(r.seed, "order") for r in runs]
    results = [RunResult(run_id=r.run_id, status="done") for r in runs]
    start_epoch = 0

    run_ids = [r.run_id for r in runs]
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state["run_ids"] == run_ids:
            with torch.no_grad():
                for p, saved in zip(model.parameters(), state["params"], strict=True):
                    p.copy_(saved)
            optimizer.load_state_dict(state["optimizer"])
            for g, s in zip(order_gens, state["order_gens"], strict=True):
                g.set_state(s)
            for grp, states in zip(pixel_groups, state["pixel_gens"], strict=True):
                for g, s in zip(grp.gens, states, strict=True):
                    g.set_state(s.cpu() if device.type == "cpu" else s)
            for res, epochs, status in zip(results, state["epochs"], state["status"], strict=True):
                res.epochs, res.status = epochs, status
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
        for step in range(steps):
            idx = order[:, step * batch : (step + 1) * batch]  # [R, b]
            x = train_x[idx].float().div_(255)  # [R, b, F]
            y = labels.gather(1, idx)
            for grp in pixel_groups:
                x[grp.rows] = grp.noise.apply(x[grp.rows], grp.levels, grp.gens)
            logits = model(x)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
            loss = loss.view(n_runs, -1).mean(1)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # runs share no parameters, so each gets its own gradient
            optimizer.step()
            with torch.no_grad():
                loss_sum += loss.detach() * idx.shape[1]
                correct += (logits.argmax(-1) == y).sum(1)
            if progress is not None and step % 50 == 0:
                progress(epoch * steps + step, total_steps)
        test_loss, test_acc, test_conf = evaluate(model, test_x, test_y)
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
                    "run_ids": run_ids,
                    "epoch": epoch + 1,
                    "params": [p.detach() for p in model.parameters()],
                    "optimizer": optimizer.state_dict(),
                    "order_gens": [g.get_state() for g in order_gens],
                    "pixel_gens": [[g.get_state() for g in grp.gens] for grp in pixel_groups],
                    "epochs": [res.epochs for res in results],
                    "status": [res.status for res in results],
                },
                checkpoint,
            )
    if progress is not None:
        progress(total_steps, total_steps)
    for res, ln in zip(results, label_noise, strict=True):
        res.label_noise = ln
    return results
