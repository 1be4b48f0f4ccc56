"""One shard's training step: forward, loss gradient, backward, update.

Batchnorm and dropout are branches off the default path; when they are off, a step runs
exactly the operations it ran before they existed."""

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .. import seeding
from . import backward, norm
from .backward import Loss
from .inputs import Inputs, PixelGroup, Scratch
from .model import ACT_INPLACE, BYTE, StackedMLP
from .optimizer import Optimizer


@dataclass
class Layers:
    """What the forward pass keeps for the backward pass; lists run over the hidden layers
    (`inputs` over every linear layer)."""

    inputs: list[Tensor]  # each linear layer's input [R, b, in]: the batch, then hidden outputs
    activated: list[Tensor] = field(default_factory=list)  # activation outputs, before dropout
    normed: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # batchnorm: x̂, 1/std
    masks: list[Tensor] = field(default_factory=list)  # dropout masks


def _hits(logits: Tensor, labels: Tensor) -> Tensor:
    """Per run [R]: how many of the batch's examples argmax(logits) [R, C, b] gets right."""
    runs, _, b = logits.shape
    return (logits.max(1).indices.view(runs, 1, b) == labels).sum((1, 2))


class Trainer:
    """The steps of one shard: its runs' model, optimizer, loss (backward.LOSSES, or one built
    for these runs), batches (from `train_x`, `pixel_groups`, `source`: see Inputs) and their
    training labels [R, N]."""

    def __init__(
        self,
        model: StackedMLP,
        optimizer: Optimizer,
        loss: Loss,
        train_x: Tensor,
        labels: Tensor,
        pixel_groups: list[PixelGroup],
        seeds: list[int],
        source: Tensor | None = None,
    ):
        self.model, self.opt, self.loss = model, optimizer, loss
        dtype = model.weights[0].dtype  # float32 (float64 to check gradients exactly)
        self.inputs = Inputs(train_x, pixel_groups, source, dtype)
        self.labels = labels
        self.activation = ACT_INPLACE[model.activation]
        self.activation_backward = backward.ACTIVATIONS[model.activation]
        self.scratch = Scratch(train_x.device, dtype)
        # dropout masks: one draw per run and step from the run's own generator
        self.dropout_gens = (
            [seeding.generator(s, "dropout", train_x.device) for s in seeds]
            if model.dropout
            else []
        )

    def step(self, idx: Tensor, loss_sum: Tensor, correct: Tensor) -> None:
        """One optimizer step of every run on its batch idx[r] ([R, b] positions in the run's
        own training set); adds each run's summed loss and correct predictions to `loss_sum`
        and `correct` [R]."""
        labels = self.labels.gather(1, idx).unsqueeze(1)  # [R, 1, b]
        logits, layers = self.forward(self.inputs(idx))
        g = self.loss(logits, labels, loss_sum)
        correct.add_(_hits(logits, labels))
        self.opt.begin_step()
        self.backward(layers, g)
        self.opt.finish_step()

    def forward(self, x: Tensor) -> tuple[Tensor, Layers]:
        """The logits [R, C, b] of the batch x [R, b, F] (in bytes), and what the backward
        pass needs."""
        model, scratch = self.model, self.scratch
        weights, biases = model.weights, model.biases
        runs, b, _ = x.shape
        layers = Layers(inputs=[x], masks=self._dropout_masks(runs, b))
        h = x
        last = len(weights) - 1
        for i in range(last):
            z = scratch(f"a{i}", (runs, b, weights[i].shape[2]))
            torch.baddbmm(biases[i], h, weights[i], alpha=BYTE if i == 0 else 1.0, out=z)
            if model.batchnorm:
                xhat = scratch(f"xhat{i}", z.shape)
                invstd = norm.train_(z, *model.norm_tensors(i), xhat)
                layers.normed.append((xhat, invstd))
            h = self.activation(z)
            layers.activated.append(h)
            if layers.masks:
                h = torch.mul(h, layers.masks[i], out=scratch(f"d{i}", h.shape))
            layers.inputs.append(h)
        # The logits come out transposed, [R, C, b]: reductions over a short class axis are
        # much faster in the middle than last (log_softmax: ~20x on CPU).
        logits = scratch("logits", (runs, weights[last].shape[2], b))
        torch.baddbmm(biases[last].mT, weights[last].mT, h.mT, out=logits)
        return logits, layers

    def backward(self, layers: Layers, g: Tensor) -> None:
        """Every parameter's gradient, last layer first, into the optimizer, from
        g = d(mean loss)/d(logits) [R, C, b]."""
        weights, opt = self.model.weights, self.opt
        g = g.mT  # [R, b, C]
        for i in range(len(weights) - 1, -1, -1):
            opt.linear_grad_(i, layers.inputs[i], g, BYTE if i == 0 else 1.0)
            if i == 0:
                return
            hidden = i - 1  # the hidden layer whose output layer i takes in
            g = backward.linear_input(g, weights[i], self.scratch(f"g{i}", layers.inputs[i].shape))
            if layers.masks:
                g = backward.dropout_(g, layers.masks[hidden])
            g = self.activation_backward(g, layers.activated[hidden])
            if layers.normed:
                xhat, invstd = layers.normed[hidden]
                scale = self.model.scales[hidden]
                opt.norm_grad_(hidden, *backward.batchnorm_(g, xhat, invstd, scale))

    def _dropout_masks(self, runs: int, b: int) -> list[Tensor]:
        """Each hidden layer's inverted-dropout mask [R, b, H] (0 or 1/(1 - p)); none without
        dropout. Run r's masks are one uniform draw of b·ΣH numbers from its own generator:
        layer by layer, each [b, H] row-major, an element dropped where the draw is below p."""
        if not self.dropout_gens:
            return []
        p = self.model.dropout
        widths = [w.shape[2] for w in self.model.weights[:-1]]
        # float32 draws whatever the dtype: a run's masks depend on its seed only
        u = self.scratch("dropout_u", (runs, b * sum(widths)), torch.float32)
        for r, gen in enumerate(self.dropout_gens):
            u[r].uniform_(generator=gen)
        keep = self.scratch("dropout_keep", u.shape)
        torch.ge(u, p, out=keep).div_(1 - p)
        masks, start = [], 0
        for width in widths:
            masks.append(keep[:, start : start + b * width].view(runs, b, width))
            start += b * width
        return masks

    def generator_states(self) -> list[Tensor]:
        """The dropout generators' states, one per run in pack order (none without dropout)."""
        return [g.get_state() for g in self.dropout_gens]

    def load_generator_states(self, states: list[Tensor]) -> None:
        """Restore what `generator_states` returned (for the same runs, in the same order)."""
        if len(states) != len(self.dropout_gens):
            raise ValueError(f"{len(states)} generator states for {len(self.dropout_gens)} runs")
        for g, state in zip(self.dropout_gens, states, strict=True):
            g.set_state(state.cpu())
