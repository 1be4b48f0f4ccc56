"""The pack trainer: many runs of one architecture trained as one stacked MLP.

Parameters carry a leading run dimension [R, ...]; each step is a handful of batched matmuls
and one optimizer update for all runs. Every run draws its initialisation, data order, label
noise and pixel noise from its own generators, so its numbers do not depend on its pack.

What a step costs, and why it is written this way (bench/PERFORMANCE.md has the profiles):
- The backward pass and the optimizer are written out by hand (no autograd): the weight
  gradient of each layer is accumulated straight into the SGD momentum buffer by one
  `baddbmm_` (beta = momentum), then the weights take one `add_`. That is the least memory
  traffic over the [R, 784, 128] first layer, which dominates everything but the matmuls.
- Images stay uint8 until the batch is gathered; the 1/255 scaling is folded into the first
  layer's matmuls (`alpha`), so pixels are never rescaled.
- Pixel noise costs one 16-bit draw and one table lookup per pixel (see noise/pixels.py);
  runs are ordered so that noisy runs are contiguous slices.
- Logits are computed transposed, [R, C, b]: softmax over a short middle axis is ~20x faster
  on CPU than over a short last axis. Scratch tensors are reused across steps.
- Evaluation runs the whole pack at once: the shared test images are a stride-0 batch
  (never copied per run), and shards evaluate in parallel.
- On a CPU with T threads the pack is cut into min(R, T) shards of whole runs, each trained by
  its own Python thread with single-threaded ops (torch releases the GIL inside ops). No op
  then waits at an OpenMP barrier for a thread that another process has taken off its core:
  on a shared 2-core machine this is ~3x faster than 2-thread ops under load, and as fast
  when idle. Single-threaded ops also make a run's numbers bit-identical whatever its pack
  (alone, or in a pack of any size or shard count), and checkpoints resume across them.
"""

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import seeding
from .data import Dataset
from .noise import LabelNoise, LabelNoiseResult, PixelNoise, make_noise
from .noise.pixels import PixelReplace
from .study import ModelSpec, RunSpec, TrainSpec

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}
_ACT_INPLACE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.Tensor.relu_,
    "sigmoid": torch.Tensor.sigmoid_,
    "tanh": torch.Tensor.tanh_,
}
# Gradient through the activation, in place in g, from its output a: relu' = [a > 0],
# sigmoid' = a(1 - a), tanh' = 1 - a^2.
_ACT_BACKWARD: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relu": lambda g, a: torch.ops.aten.threshold_backward.grad_input(g, a, 0, grad_input=g),
    "sigmoid": lambda g, a: torch.ops.aten.sigmoid_backward.grad_input(g, a, grad_input=g),
    "tanh": lambda g, a: torch.ops.aten.tanh_backward.grad_input(g, a, grad_input=g),
}
BYTE = 1.0 / 255.0  # inputs are raw bytes; this scale is folded into the first layer
CHECKPOINT_FORMAT = 3


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(*shape, generator=gen) * 2 - 1) * bound


class StackedMLP:
    """R independent MLPs whose layers are stacked: weights [R, in, out], biases [R, 1, out]."""

    def __init__(self, spec: ModelSpec, seeds: list[int], sizes: tuple[int, int], device):
        sizes_all = [sizes[0], *spec.hidden, sizes[1]]
        gens = [seeding.generator(s, "init") for s in seeds]
        self.activation = spec.activation
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

    def rows(self, start: int, stop: int) -> "StackedMLP":
        """Runs [start, stop) as a StackedMLP whose tensors are views of this one's."""
        view = object.__new__(StackedMLP)
        view.activation, view.act = self.activation, self.act
        view.weights = [w[start:stop] for w in self.weights]
        view.biases = [b[start:stop] for b in self.biases]
        return view

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [R, B, C] for inputs [R, B, F], or [B, F] shared by every run."""
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w) if x.dim() == 3 else torch.matmul(x, w) + b
            if i < last:
                x = self.act(x)
        return x

    @torch.no_grad()
    def logits_of_bytes(self, x: torch.Tensor, classes_first: bool = False) -> torch.Tensor:
        """Logits [R, B, C] (or [R, C, B] with `classes_first`) for uint8 images [B, F]
        shared by every run, scaled by 1/255. The images are not copied per run (a stride-0
        batch), and every run's numbers are those it gets alone."""
        runs = self.weights[0].shape[0]
        h = x.float().expand(runs, *x.shape)
        last = len(self.weights) - 1
        for i in range(last):
            alpha = BYTE if i == 0 else 1.0
            h = torch.baddbmm(self.biases[i], h, self.weights[i], alpha=alpha)
            h = _ACT_INPLACE[self.activation](h)
        if classes_first:
            return torch.baddbmm(self.biases[last].mT, self.weights[last].mT, h.mT)
        return torch.baddbmm(self.biases[last], h, self.weights[last])


class _Optimizer:
    """SGD with momentum (torch.optim.SGD's update) or Adam (torch.optim.Adam's), per element.

    Both act elementwise, so stacking runs changes no run's update. For SGD the weight gradient
    never exists on its own: `weight_grad_` adds it into the momentum buffer inside the matmul.
    """

    def __init__(
        self,
        weights: list[torch.Tensor],
        biases: list[torch.Tensor],
        spec: TrainSpec,
        state: dict[str, list[torch.Tensor]] | None = None,
    ):
        self.spec = spec
        self.weights, self.biases = weights, biases
        self.params = [*weights, *biases]
        self.adam = spec.optimizer == "adam"
        self.step_count = 0
        names = ("exp_avg", "exp_avg_sq", "grads") if self.adam else ("momentum",)
        self.state = state or {name: [torch.zeros_like(p) for p in self.params] for name in names}

    def rows(self, start: int, stop: int, model: StackedMLP) -> "_Optimizer":
        """The optimizer of runs [start, stop), on `model` (their rows), sharing this state."""
        view = _Optimizer(
            model.weights,
            model.biases,
            self.spec,
            {name: [t[start:stop] for t in ts] for name, ts in self.state.items()},
        )
        view.step_count = self.step_count
        return view

    def begin_step(self) -> None:
        self.step_count += 1

    def weight_grad_(self, layer: int, a: torch.Tensor, g: torch.Tensor, alpha: float = 1.0):
        """Take in the gradient aᵀg·alpha of weights[layer] and its bias gradient Σ_b g
        (g: [R, b, out]); `finish_step` applies them."""
        nb = len(self.weights)
        if self.adam:
            grads = self.state["grads"]
            torch.bmm(a.mT, g, out=grads[layer])
            if alpha != 1.0:
                grads[layer].mul_(alpha)
            torch.sum(g, 1, keepdim=True, out=grads[nb + layer])
            return
        m = self.spec.momentum
        momentum = self.state["momentum"]
        momentum[layer].baddbmm_(a.mT, g, beta=m, alpha=alpha)
        momentum[nb + layer].mul_(m).add_(g.sum(1, keepdim=True))

    def finish_step(self) -> None:
        """Apply every parameter's update (all gradients of the step are in)."""
        spec = self.spec
        if self.adam:
            for i, p in enumerate(self.params):
                self._adam(i, p)
            return
        momentum = self.state["momentum"]
        if spec.weight_decay:
            torch._foreach_add_(momentum, self.params, alpha=spec.weight_decay)
        torch._foreach_add_(self.params, momentum, alpha=-spec.lr)

    def _adam(self, i: int, p: torch.Tensor) -> None:
        spec = self.spec
        beta1, beta2, eps = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults
        g = self.state["grads"][i]
        if spec.weight_decay:
            g = g.add(p, alpha=spec.weight_decay)
        m, v = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        correction1 = 1 - beta1**self.step_count
        correction2 = 1 - beta2**self.step_count
        denom = (v.sqrt() / math.sqrt(correction2)).add_(eps)
        p.addcdiv_(m, denom, value=-spec.lr / correction1)

    def state_dict(self) -> dict[str, Any]:
        kept = {k: v for k, v in self.state.items() if k != "grads"}  # grads are scratch
        return {"step": self.step_count, **kept}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])
        for name, tensors in self.state.items():
            if name in state:
                for mine, saved in zip(tensors, state[name], strict=True):
                    mine.copy_(saved)


@dataclass
class PixelGroup:
    """Runs of a shard that share one pixel-noise model: its rows [start, stop)."""

    noise: PixelNoise
    start: int
    stop: int
    levels: torch.Tensor
    gens: list[torch.Generator]
    prepared: Any = None  # PixelReplace's lookup tables, when the noise is a PixelReplace
    fixed_x: torch.Tensor | None = None  # `fixed` noise: each run's noised copy, [R·N, F]


@dataclass
class RunResult:
    run_id: str
    status: str  # "done" or "diverged"
    epochs: list[dict[str, float]] = field(default_factory=list)
    label_noise: LabelNoiseResult | None = None


@torch.no_grad()
def evaluate(model: StackedMLP, x: torch.Tensor, y: torch.Tensor, chunk: int = 1000):
    """Mean cross-entropy, accuracy and confidence (mean max-softmax) of every run on (x, y).

    `x` holds uint8 images [n, F] (scaled by 1/255 here), `y` their labels [n]."""
    runs = model.weights[0].shape[0]
    loss = torch.zeros(runs, device=x.device, dtype=torch.float64)
    correct = torch.zeros(runs, device=x.device, dtype=torch.float64)
    confidence = torch.zeros(runs, device=x.device, dtype=torch.float64)
    for start in range(0, len(x), chunk):
        yb = y[start : start + chunk].view(1, 1, -1)
        # [R, C, B]: reductions over the short class axis are fast in the middle
        logits = model.logits_of_bytes(x[start : start + chunk], classes_first=True)
        logp = torch.log_softmax(logits, dim=1)
        loss -= logp.gather(1, yb.expand(runs, 1, -1)).sum((1, 2))
        top = logp.max(dim=1, keepdim=True)
        correct += (top.indices == yb).sum((1, 2))
        confidence += top.values.exp_().sum((1, 2))
    n = len(x)
    return loss / n, correct / n, confidence / n


def _label_noise(run: RunSpec, data: Dataset) -> LabelNoiseResult | None:
    if run.noise is None or run.level == 0:
        return None
    noise = make_noise(run.noise, dict(run.params))
    if not isinstance(noise, LabelNoise):
        return None
    noise.prepare(data.train_x, data.train_y, run.seed)
    gen = seeding.generator(run.seed, "labels")
    return noise.corrupt(data.train_y, data.num_classes, run.level, gen)


def _pixel_key(run: RunSpec) -> tuple | None:
    if run.noise and run.level > 0:
        if make_noise(run.noise, dict(run.params)).target == "pixels":
            return (run.noise, run.params)
    return None


def _pack_order(runs: list[RunSpec], shards: int) -> tuple[list[int], list[int]]:
    """Internal order of the pack and its shard boundaries.

    Runs are sorted by pixel-noise model (runs without pixel noise first) and dealt to the
    shards in turn, so shards get similar work; inside a shard each model's runs stay
    together, a contiguous slice of the batch. Shard k is rows [bounds[k], bounds[k + 1])."""
    keys: list[tuple | None] = [None]
    for run in runs:
        key = _pixel_key(run)
        if key not in keys:
            keys.append(key)
    by_model = sorted(range(len(runs)), key=lambda i: keys.index(_pixel_key(runs[i])))
    dealt = [by_model[k::shards] for k in range(shards)]
    bounds = [0]
    for part in dealt:
        bounds.append(bounds[-1] + len(part))
    return [i for part in dealt for i in part], bounds


def _pixel_groups(
    runs: list[RunSpec],
    gens: Sequence[torch.Generator | None],
    train_x: torch.Tensor,
    fitted: dict[tuple, PixelNoise],
) -> list[PixelGroup]:
    """Groups of a shard's `runs` (in pack order) that share a pixel-noise model; `fitted`
    caches each model, fitted once per pack."""
    out: list[PixelGroup] = []
    i = 0
    while i < len(runs):
        key = _pixel_key(runs[i])
        j = i
        while j < len(runs) and _pixel_key(runs[j]) == key:
            j += 1
        if key is not None:
            if key not in fitted:
                name, params = key
                noise = make_noise(name, dict(params))
                assert isinstance(noise, PixelNoise)
                noise.fit(train_x)
                fitted[key] = noise
            noise = fitted[key]
            levels = [runs[k].level for k in range(i, j)]
            group_gens = [g for g in gens[i:j] if g is not None]
            prepared, fixed_x = None, None
            if noise.fixed:  # noised once, before training: the generators are used up here
                fixed_x = torch.cat(
                    [noise.fix(train_x, lv, g) for lv, g in zip(levels, group_gens, strict=True)]
                )
            elif isinstance(noise, PixelReplace):
                unit = None if noise.byte_values else 255.0  # uint8 or float table
                prepared = noise.prepare(levels, train_x.shape[1], unit, train_x.device)
            out.append(
                PixelGroup(
                    noise=noise,
                    start=i,
                    stop=j,
                    levels=torch.tensor(levels, device=train_x.device),
                    gens=group_gens,
                    prepared=prepared,
                    fixed_x=fixed_x,
                )
            )
        i = j
    return out


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class _Trainer:
    """The per-step work of one shard: batch, noise, forward, backward, update."""

    def __init__(self, model, optimizer, train_x, labels, pixel_groups, spec: TrainSpec):
        self.model, self.opt = model, optimizer
        self.train_x, self.labels = train_x, labels
        self.groups = pixel_groups
        self.spec = spec
        self.act = _ACT_INPLACE[model.activation]
        self.act_backward = _ACT_BACKWARD[model.activation]
        self._buffers: dict[str, torch.Tensor] = {}
        self.noise_s = 0.0  # time spent on pixel noise, when timing is on
        self.timing = False

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A scratch tensor reused across steps: filling a multi-megabyte buffer again is
        measurably cheaper than allocating a fresh one at every step."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = torch.empty(shape, dtype=dtype, device=self.train_x.device)
            self._buffers[name] = buf
        return buf

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The float batch [R, b, F] in bytes for indices [R, b], pixel noise applied."""
        runs, b = idx.shape
        raw = self._buffer("raw", (runs * b, self.train_x.shape[1]), torch.uint8)
        raw = torch.index_select(self.train_x, 0, idx.reshape(-1), out=raw).view(runs, b, -1)
        began = time.perf_counter() if self.timing else 0.0
        late = []  # groups whose noise needs float pixels
        for grp in self.groups:
            rows = raw[grp.start : grp.stop]
            if grp.fixed_x is not None:  # run r's rows come from its own noised copy
                n_train = len(self.train_x)
                shift = torch.arange(0, len(rows) * n_train, n_train, device=idx.device)
                own = idx[grp.start : grp.stop] + shift.view(-1, 1)
                rows.copy_(grp.fixed_x.index_select(0, own.reshape(-1)).view(rows.shape))
            elif grp.prepared is not None and grp.prepared.table.dtype == torch.uint8:
                grp.noise.replace_(rows, grp.prepared, grp.gens)  # type: ignore[attr-defined]
            else:
                late.append(grp)
        if self.timing:
            self.noise_s += time.perf_counter() - began
        x = self._buffer("x", raw.shape, torch.float32)
        x.copy_(raw)
        began = time.perf_counter() if self.timing else 0.0
        for grp in late:
            rows = x[grp.start : grp.stop]
            if grp.prepared is not None:  # a PixelReplace with float values, in bytes
                grp.noise.replace_(rows, grp.prepared, grp.gens)  # type: ignore[attr-defined]
            else:  # any other pixel noise works on images in [0, 1]
                rows.copy_(grp.noise.apply(rows.div(255), grp.levels, grp.gens)).mul_(255)
        if self.timing:
            self.noise_s += time.perf_counter() - began
        return x

    def step(self, idx: torch.Tensor, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        """One SGD/Adam step of every run on its batch idx[r] ([R, b] training indices)."""
        model, opt = self.model, self.opt
        weights, biases = model.weights, model.biases
        x = self.batch(idx)
        runs, b = idx.shape
        y = self.labels.gather(1, idx).view(runs, 1, b)
        last = len(weights) - 1
        acts = [x]
        h = x
        for i in range(last):
            out = self._buffer(f"a{i}", (runs, b, weights[i].shape[2]), x.dtype)
            alpha = BYTE if i == 0 else 1.0
            h = self.act(torch.baddbmm(biases[i], h, weights[i], alpha=alpha, out=out))
            acts.append(h)
        # The logits come out transposed, [R, C, b]: reductions over a short class axis are
        # much faster in the middle than last (log_softmax: ~20x on CPU). (hidden >= 1)
        out = self._buffer("logits", (runs, weights[last].shape[2], b), x.dtype)
        logits = torch.baddbmm(biases[last].mT, weights[last].mT, h.mT, out=out)
        logp = torch.log_softmax(logits, dim=1)
        loss_sum.sub_(logp.gather(1, y).sum((1, 2)))
        correct.add_((logits.max(1).indices.view(runs, 1, b) == y).sum((1, 2)))
        # d(mean cross-entropy)/d(logits) = (softmax - onehot) / b, per run
        g = logp.exp_()
        g.scatter_add_(1, y, torch.full(y.shape, -1.0, device=g.device)).mul_(1.0 / b)
        g = g.mT  # [R, b, C]
        opt.begin_step()
        for i in range(last, -1, -1):
            opt.weight_grad_(i, acts[i], g, BYTE if i == 0 else 1.0)
            if i > 0:
                out = self._buffer(f"g{i}", acts[i].shape, x.dtype)
                g = self.act_backward(torch.bmm(g, weights[i].mT, out=out), acts[i])
        opt.finish_step()


@dataclass
class _Shard:
    start: int
    stop: int
    model: StackedMLP  # views of the pack's rows [start, stop)
    trainer: _Trainer


@dataclass
class _Pack:
    """A pack ready to train: runs in pack order, its model, optimizer and shards."""

    spec: TrainSpec
    runs: list[RunSpec]  # in pack order
    order_in_pack: list[int]  # runs[i] is the caller's runs_in[order_in_pack[i]]
    label_noise: list[LabelNoiseResult | None]
    pixel_gens: list[torch.Generator | None]  # per run, None without pixel noise
    model: StackedMLP
    optimizer: _Optimizer
    shards: list[_Shard]

    def sync_optimizer(self) -> None:
        """Shards count their own steps; the pack's optimizer takes theirs (all equal)."""
        self.optimizer.step_count = self.shards[0].trainer.opt.step_count

    def reset_shards(self) -> None:
        """After the pack's optimizer state is loaded: every shard takes its step count."""
        for shard in self.shards:
            shard.trainer.opt.step_count = self.optimizer.step_count


def _shards_wanted() -> int | None:
    """$NOISEBENCH_SHARDS, if set to a positive number."""
    wanted = os.environ.get("NOISEBENCH_SHARDS", "").strip()
    return int(wanted) if wanted.isdigit() and int(wanted) > 0 else None


def shard_count(runs: int, device: torch.device) -> int:
    """How many shards (threads) train a pack of `runs` runs: one per torch thread on CPU,
    or $NOISEBENCH_SHARDS (1 trains the pack as one, with torch's multi-threaded ops)."""
    if device.type != "cpu":
        return 1
    return max(1, min(runs, _shards_wanted() or torch.get_num_threads()))


def _build(runs_in: list[RunSpec], data: Dataset, device: torch.device, shards: int) -> _Pack:
    spec = runs_in[0].train
    order_in_pack, bounds = _pack_order(runs_in, shards)
    runs = [runs_in[i] for i in order_in_pack]
    train_x = data.train_x.to(device)
    label_noise = [_label_noise(run, data) for run in runs]
    labels = torch.stack([ln.labels if ln else data.train_y for ln in label_noise]).to(device)
    pixel_gens = [
        seeding.generator(r.seed, "pixels", device) if _pixel_key(r) else None for r in runs
    ]
    model = StackedMLP(
        runs[0].model, [r.seed for r in runs], (data.num_features, data.num_classes), device
    )
    optimizer = _Optimizer(model.weights, model.biases, spec)
    parts, fitted = [], {}
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        rows = model.rows(start, stop)
        groups = _pixel_groups(runs[start:stop], pixel_gens[start:stop], train_x, fitted)
        opt = optimizer.rows(start, stop, rows)
        trainer = _Trainer(rows, opt, train_x, labels[start:stop], groups, spec)
        parts.append(_Shard(start, stop, rows, trainer))
    return _Pack(spec, runs, order_in_pack, label_noise, pixel_gens, model, optimizer, parts)


class _Workers:
    """Runs one call per shard at once: shard 0 in the calling thread, the others in a pool.

    The pool's threads are started, and given the calling thread's torch thread count, before
    anything runs: setting it later, while another shard computes, was seen to perturb that
    shard's numbers, and a thread that never sets it lets MKL use OpenMP's default count.
    Each call runs without autograd. If one fails (or the progress callback raises in shard
    0), `stop` is set so the others return early, and the error is raised once all are done.
    """

    def __init__(self, count: int):
        self.stop = threading.Event()
        self.pool = None
        if count > 1:
            threads = torch.get_num_threads()
            ready = threading.Barrier(count - 1)
            self.pool = ThreadPoolExecutor(
                count - 1, initializer=torch.set_num_threads, initargs=(threads,)
            )
            for future in [self.pool.submit(ready.wait) for _ in range(count - 1)]:
                future.result()  # every thread exists and is set up

    def __enter__(self) -> "_Workers":
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


class _Threads:
    """While a pack trains on CPU, every op runs single-threaded (the shards are the
    parallelism): a run's numbers are then bit for bit the same in any pack, even alone.
    Only NOISEBENCH_SHARDS=1 keeps torch's multi-threaded ops (one shard, one pack)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.before = torch.get_num_threads()

    def __enter__(self) -> "_Threads":
        if self.device.type == "cpu" and _shards_wanted() != 1:
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if torch.get_num_threads() != self.before:
            torch.set_num_threads(self.before)


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
        pack = _build(runs, data, device, shards)
        with _Threads(device), _Workers(shards) as workers:
            return _train_pack(pack, runs, data, device, checkpoint, progress, workers)


def _evaluate_pack(pack: _Pack, workers: _Workers, test_x, test_y) -> torch.Tensor:
    """[3, R]: test loss, accuracy and confidence of every run, shards in parallel."""
    parts = workers.map(lambda s: torch.stack(evaluate(s.model, test_x, test_y)), pack.shards)
    return torch.cat(parts, dim=1)


def _train_pack(
    pack: _Pack,
    runs_in: list[RunSpec],
    data: Dataset,
    device: torch.device,
    checkpoint: Path | None,
    progress: Callable[[int, int], None] | None,
    workers: _Workers,
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
            shard: _Shard,
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
        test_loss, test_acc, test_conf = _evaluate_pack(pack, workers, test_x, test_y)
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
    with torch.no_grad():
        pack = _build(runs, data, device, shards)
    batch, n_train = pack.spec.batch_size, len(data.train_y)
    orders = [seeding.generator(r.seed, "order") for r in pack.runs]
    order = torch.stack([torch.randperm(n_train, generator=g) for g in orders]).to(device)
    loss_sum = torch.zeros(len(runs), device=device, dtype=torch.float64)
    correct = torch.zeros_like(loss_sum)
    per_epoch = n_train // batch  # full batches only
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)

    with torch.no_grad(), _Threads(device), _Workers(shards) as workers:

        def run(count: int) -> float:
            """`count` steps of every shard; the busiest shard thread's CPU seconds."""

            def shard_steps(shard: _Shard) -> float:
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
                shard.trainer.noise_s, shard.trainer.timing = 0.0, True
            began = time.perf_counter()
            cpu = run(steps) / steps
            elapsed = (time.perf_counter() - began) / steps
            best_cpu = min(best_cpu, cpu)
            if elapsed < best:
                noise = sum(s.trainer.noise_s for s in pack.shards) / len(pack.shards)
                best, best_noise = elapsed, noise / steps
        _evaluate_pack(pack, workers, test_x, test_y)
        began = time.perf_counter()
        _evaluate_pack(pack, workers, test_x, test_y)
        eval_s = time.perf_counter() - began
    return PackTiming(
        len(runs), batch, shards, best, best_noise, eval_s, math.ceil(n_train / batch), best_cpu
    )
