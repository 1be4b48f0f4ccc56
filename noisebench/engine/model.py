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
            self.weights.append(w.contiguous().to(device).requires_grad_())
            self.biases.append(b.to(device).requires_grad_())
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
        """Logits [R, B, C] for inputs [R, B, F], or [B, F] shared by every run."""
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
        runs = self.weights[0].shape[0]
        h = x.float().expand(runs, *x.shape)
        last = len(self.weights) - 1
        for i in range(last):
            alpha = BYTE if i == 0 else 1.0
            h = torch.baddbmm(self.biases[i], h, self.weights[i], alpha=alpha)
            if self.batchnorm:
                norm.infer_(h, *self.norm_tensors(i))
            h = ACT_INPLACE[self.activation](h)
        if classes_first:
            return torch.baddbmm(self.biases[last].mT, self.weights[last].mT, h.mT)
        return torch.baddbmm(self.biases[last], h, self.weights[last])


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
