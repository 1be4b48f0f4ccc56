"""One shard's training step: batch, pixel noise, forward, hand-written backward, update.

Batchnorm, dropout and the MSE loss are branches off the default path, which runs the same
operations with or without them in the code."""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .. import seeding
from ..noise import PixelNoise, make_noise
from ..noise.pixels import PixelReplace
from ..study import RunSpec, TrainSpec
from . import norm
from .model import ACT_BACKWARD, ACT_INPLACE, BYTE


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


def pixel_key(run: RunSpec) -> tuple | None:
    if run.noise and run.level > 0:
        if make_noise(run.noise, dict(run.params)).target == "pixels":
            return (run.noise, run.params)
    return None


def pixel_groups(
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
        key = pixel_key(runs[i])
        j = i
        while j < len(runs) and pixel_key(runs[j]) == key:
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


class Trainer:
    """The per-step work of one shard: batch, noise, forward, backward, update."""

    def __init__(
        self,
        model,
        optimizer,
        train_x,
        labels,
        pixel_groups,
        spec: TrainSpec,
        seeds: list[int],
        source=None,
    ):
        self.model, self.opt = model, optimizer
        self.train_x, self.labels = train_x, labels
        self.seeds = seeds  # the shard's runs' seeds, in pack order
        self.source = source  # [R, N]: row of train_x of each run's example i (None: row i)
        self.groups = pixel_groups
        self.spec = spec
        self.act = ACT_INPLACE[model.activation]
        self.act_backward = ACT_BACKWARD[model.activation]
        self._buffers: dict[str, torch.Tensor] = {}
        self.noise_s = 0.0  # time spent on pixel noise, when timing is on
        self.timing = False
        self.batchnorm, self.dropout = model.batchnorm, model.dropout
        self.mse = model.loss == "mse"
        # dropout masks: one draw per run and step from the run's own generator
        self.dropout_gens = (
            [seeding.generator(s, "dropout", train_x.device) for s in seeds] if self.dropout else []
        )

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

    def generator_states(self) -> list[torch.Tensor]:
        """The dropout generators' states, one per run in pack order (none without dropout)."""
        return [g.get_state() for g in self.dropout_gens]

    def load_generator_states(self, states: list[torch.Tensor]) -> None:
        """Restore what `generator_states` returned (for the same runs, in the same order)."""
        if len(states) != len(self.dropout_gens):
            raise ValueError(f"{len(states)} generator states for {len(self.dropout_gens)} runs")
        for g, state in zip(self.dropout_gens, states, strict=True):
            g.set_state(state.cpu())

    def _dropout_masks(self, runs: int, b: int) -> list[torch.Tensor]:
        """Each hidden layer's inverted-dropout mask [R, b, H] (0 or 1/(1 - p)). Run r's masks
        are one uniform draw of b·ΣH numbers from its own generator: layer by layer, each
        [b, H] row-major, an element dropped where the draw is below p."""
        widths = [w.shape[2] for w in self.model.weights[:-1]]
        u = self._buffer("dropout_u", (runs, b * sum(widths)), torch.float32)
        for r, gen in enumerate(self.dropout_gens):
            u[r].uniform_(generator=gen)
        keep = self._buffer("dropout_keep", u.shape, torch.float32)
        torch.ge(u, self.dropout, out=keep).div_(1 - self.dropout)
        masks, start = [], 0
        for width in widths:
            masks.append(keep[:, start : start + b * width].view(runs, b, width))
            start += b * width
        return masks

    def _mse_grad(self, logits: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor):
        """MSE of sigmoid(logits) [R, C, b] against one-hot y: adds each example's mean over
        classes to loss_sum; returns d(mean over classes and batch)/d(logits) [R, C, b]."""
        _, classes, b = logits.shape
        s = torch.sigmoid(logits)
        diff = s.scatter_add(1, y, torch.full(y.shape, -1.0, device=s.device))
        loss_sum.add_(diff.square().sum((1, 2)), alpha=1.0 / classes)
        diff.mul_(2.0 / (classes * b))
        return torch.ops.aten.sigmoid_backward.grad_input(diff, s, grad_input=diff)

    def step(self, idx: torch.Tensor, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        """One SGD/Adam step of every run on its batch idx[r] ([R, b] indices into each run's
        own training set)."""
        model, opt = self.model, self.opt
        weights, biases = model.weights, model.biases
        x = self.batch(idx if self.source is None else self.source.gather(1, idx))
        runs, b = idx.shape
        y = self.labels.gather(1, idx).view(runs, 1, b)
        last = len(weights) - 1
        if self.batchnorm and len(opt.params) != len(model.parameters()):
            raise ValueError("the optimizer does not train batchnorm's scales and shifts")
        masks = self._dropout_masks(runs, b) if self.dropout else []
        acts = [x]  # each layer's input
        kept = []  # with dropout: each hidden activation's output, before dropout
        normed = []  # with batchnorm: each hidden layer's x̂ and 1/std
        h = x
        for i in range(last):
            out = self._buffer(f"a{i}", (runs, b, weights[i].shape[2]), x.dtype)
            alpha = BYTE if i == 0 else 1.0
            h = torch.baddbmm(biases[i], h, weights[i], alpha=alpha, out=out)
            if self.batchnorm:
                xhat = self._buffer(f"xhat{i}", h.shape, x.dtype)
                invstd = norm.train_(h, *model.norm_tensors(i), xhat)
                normed.append((xhat, invstd))
            h = self.act(h)
            if masks:
                kept.append(h)
                h = torch.mul(h, masks[i], out=self._buffer(f"d{i}", h.shape, x.dtype))
            acts.append(h)
        # The logits come out transposed, [R, C, b]: reductions over a short class axis are
        # much faster in the middle than last (log_softmax: ~20x on CPU). (hidden >= 1)
        out = self._buffer("logits", (runs, weights[last].shape[2], b), x.dtype)
        logits = torch.baddbmm(biases[last].mT, weights[last].mT, h.mT, out=out)
        if self.mse:
            correct.add_((logits.max(1).indices.view(runs, 1, b) == y).sum((1, 2)))
            g = self._mse_grad(logits, y, loss_sum)
        else:
            logp = torch.log_softmax(logits, dim=1)
            loss_sum.sub_(logp.gather(1, y).sum((1, 2)))
            correct.add_((logits.max(1).indices.view(runs, 1, b) == y).sum((1, 2)))
            # d(mean cross-entropy)/d(logits) = (softmax - onehot) / b, per run
            g = logp.exp_()
            g.scatter_add_(1, y, torch.full(y.shape, -1.0, device=g.device)).mul_(1.0 / b)
        g = g.mT  # [R, b, C]
        opt.begin_step()
        first_norm = 2 * len(weights)  # params: weights, biases, scales, shifts
        for i in range(last, -1, -1):
            opt.weight_grad_(i, acts[i], g, BYTE if i == 0 else 1.0)
            if i > 0:
                out = self._buffer(f"g{i}", acts[i].shape, x.dtype)
                g = torch.bmm(g, weights[i].mT, out=out)
                if masks:
                    g = self.act_backward(g.mul_(masks[i - 1]), kept[i - 1])
                else:
                    g = self.act_backward(g, acts[i])
                if self.batchnorm:
                    xhat, invstd = normed[i - 1]
                    dscale, dshift = norm.backward_(g, xhat, invstd, model.scales[i - 1])
                    opt.grad_(first_norm + i - 1, dscale)
                    opt.grad_(first_norm + last + i - 1, dshift)
        opt.finish_step()
