"""The stacked model: R independent MLPs whose layers are stacked along a leading run axis,
and their evaluation on shared test images."""

import math
from collections.abc import Callable

import torch

from .. import seeding
from ..study import ModelSpec
from . import norm

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}
ACT_INPLACE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.Tensor.relu_,
    "sigmoid": torch.Tensor.sigmoid_,
    "tanh": torch.Tensor.tanh_,
}
BYTE = 1.0 / 255.0  # inputs are raw bytes; this scale is folded into the first layer
RUN_ALIGN = 16  # elements: a run's slab of a stacked tensor starts 64 bytes (float32) apart


def stacked_empty(runs: int, shape: tuple[int, ...], dtype, device) -> torch.Tensor:
    """An uninitialised [runs, *shape] tensor whose runs' slabs start RUN_ALIGN elements
    apart, with a gap after each: what every batched matmul of the runs writes into.

    On CPU a run's matmul result depends on more than its own numbers: MKL's gemm gives
    other bits when its output is not 16-byte aligned, and torch's bmm runs one batched gemm
    over a contiguous [R, ...] output (another kernel, for some shapes, than the single gemm a
    run gets alone). Contiguous, run r's slab starts r·size elements in, an alignment that
    depends on its place in the pack. With gaps, the output is not contiguous for R > 1, so
    torch multiplies run by run, each run one gemm into an aligned slab: the same call, bit
    for bit, as the run alone (a [1, ...] tensor is contiguous, one gemm). Off the CPU (no
    bit-identity is promised there) the tensor is plain contiguous."""
    if torch.device(device).type != "cpu":
        return torch.empty((runs, *shape), dtype=dtype, device=device)
    size = math.prod(shape)
    stride = (size // RUN_ALIGN + 1) * RUN_ALIGN
    return torch.empty(runs, stride, dtype=dtype, device=device)[:, :size].view(runs, *shape)


def stacked_like(t: torch.Tensor, fill: float | None = None) -> torch.Tensor:
    """A stacked_empty tensor of t's shape, dtype and device, holding t's values (or `fill`)."""
    out = stacked_empty(t.shape[0], tuple(t.shape[1:]), t.dtype, t.device)
    return out.copy_(t) if fill is None else out.fill_(fill)


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(*shape, generator=gen) * 2 - 1) * bound


def parameter_count(model: ModelSpec, features: int, classes: int) -> int:
    """Trainable parameters of one run's MLP: weights and biases, and with batchnorm the
    scale and shift of every hidden layer."""
    sizes = [features, *model.hidden, classes]
    linear = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return linear + (2 * sum(model.hidden) if model.batchnorm else 0)


class StackedMLP:
    """R independent MLPs whose layers are stacked: weights [R, in, out], biases [R, 1, out].

    With batchnorm, each hidden layer i also has scales[i] and shifts[i] (trained) and
    running_means[i] and running_vars[i] (buffers), all [R, 1, out]; the model's outputs
    (`__call__`, `logits_of_bytes`) are those of evaluation: running statistics, no dropout.
    Dropout and the loss are applied in training only, by the Trainer."""

    def __init__(self, spec: ModelSpec, seeds: list[int], sizes: tuple[int, int], device):
        sizes_all = [sizes[0], *spec.hidden, sizes[1]]
        gens = [seeding.generator(s, "init") for s in seeds]
        self.activation = spec.activation
        self.act = ACTIVATIONS[spec.activation]
        self.batchnorm, self.dropout = spec.batchnorm, spec.dropout
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        for fan_in, fan_out in zip(sizes_all[:-1], sizes_all[1:], strict=True):
            bound = 1.0 / math.sqrt(fan_in)  # torch.nn.Linear's default initialisation
            w = torch.stack([_uniform((fan_out, fan_in), bound, g).T for g in gens])
            b = torch.stack([_uniform((1, fan_out), bound, g) for g in gens])
            self.weights.append(stacked_like(w.to(device)).requires_grad_())
            self.biases.append(stacked_like(b.to(device)).requires_grad_())
        self.scales: list[torch.Tensor] = []
        self.shifts: list[torch.Tensor] = []
        self.running_means: list[torch.Tensor] = []
        self.running_vars: list[torch.Tensor] = []
        if spec.batchnorm:  # draws nothing: the weights are those of the model without it
            for width in spec.hidden:
                scale, shift, mean, var = norm.init(len(seeds), width, device)
                self.scales.append(scale.requires_grad_())
                self.shifts.append(shift.requires_grad_())
                self.running_means.append(mean)
                self.running_vars.append(var)

    def parameters(self) -> list[torch.Tensor]:
        """What the optimizer trains: weights, biases, then batchnorm scales and shifts."""
        return [*self.weights, *self.biases, *self.scales, *self.shifts]

    def buffers(self) -> list[torch.Tensor]:
        """State that is not trained but kept: batchnorm's running means and variances."""
        return [*self.running_means, *self.running_vars]

    def rows(self, start: int, stop: int) -> "StackedMLP":
        """Runs [start, stop) as a StackedMLP whose tensors are views of this one's."""
        view = object.__new__(StackedMLP)
        for name, value in vars(self).items():
            if isinstance(value, list):  # lists of per-run tensors
                value = [t[start:stop] for t in value]
            setattr(view, name, value)
        return view

    def norm_tensors(self, i: int) -> tuple[torch.Tensor, ...]:
        return self.scales[i], self.shifts[i], self.running_means[i], self.running_vars[i]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [R, B, C] for inputs [R, B, F], or [B, F] shared by every run.

        Autograd may run through it (FGSM), and an `out=` matmul (stacked_empty) does not
        allow that: each run is computed on its own, by the call it gets alone."""
        runs = self.weights[0].shape[0]
        if runs == 1:
            return self._forward(x)
        rows = [self.rows(r, r + 1) for r in range(runs)]
        return torch.cat(
            [m._forward(x[r : r + 1] if x.dim() == 3 else x) for r, m in enumerate(rows)]
        )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w) if x.dim() == 3 else torch.matmul(x, w) + b
            if i < last:
                if self.batchnorm:
                    x = norm.infer(x, *self.norm_tensors(i))
                x = self.act(x)
        return x

    @torch.no_grad()
    def logits_of_bytes(self, x: torch.Tensor, classes_first: bool = False) -> torch.Tensor:
        """Logits [R, B, C] (or [R, C, B] with `classes_first`) for uint8 images [B, F]
        shared by every run, scaled by 1/255. The images are not copied per run (a stride-0
        batch), and every run's numbers are those it gets alone."""
        runs, n = self.weights[0].shape[0], len(x)
        h = x.float().expand(runs, *x.shape)
        last = len(self.weights) - 1

        def out(*shape: int) -> torch.Tensor:
            return stacked_empty(runs, shape, h.dtype, h.device)

        for i in range(last):
            alpha = BYTE if i == 0 else 1.0
            w = self.weights[i]
            h = torch.baddbmm(self.biases[i], h, w, alpha=alpha, out=out(n, w.shape[2]))
            if self.batchnorm:
                norm.infer_(h, *self.norm_tensors(i))
            h = ACT_INPLACE[self.activation](h)
        w, b = self.weights[last], self.biases[last]
        if classes_first:
            return torch.baddbmm(b.mT, w.mT, h.mT, out=out(w.shape[2], n))
        return torch.baddbmm(b, h, w, out=out(n, w.shape[2]))


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
