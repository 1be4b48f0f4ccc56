"""A run trained and evaluated in plain torch, one example batch at a time, independently of
the engine: what the engine must record for a run without pixel noise (imported by name:
pytest puts tests/ on sys.path).

It follows the engine's contract, not its code: torch.nn.Linear's initialisation drawn from
the run's own "init" generator (each layer's weight [out, in], then its bias), a fresh
permutation of the training set from the run's "order" generator every epoch, batches in that
order (the last one smaller), images scaled by 1/255, mean cross-entropy, torch.optim.SGD.
"""

import math

import torch
import torch.nn.functional as F

from noisebench import seeding
from noisebench.study import RunSpec


def initial_layers(seed: int, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight [out, in], bias [out]) of each layer, as the run's "init" generator gives them."""
    gen = seeding.generator(seed, "init")
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        bound = 1.0 / math.sqrt(fan_in)
        weight = (torch.rand(fan_out, fan_in, generator=gen) * 2 - 1) * bound
        bias = (torch.rand(1, fan_out, generator=gen) * 2 - 1) * bound
        layers.append((weight.requires_grad_(), bias[0].requires_grad_()))
    return layers


def logits(layers, x01: torch.Tensor) -> torch.Tensor:
    """The MLP's outputs [n, C] for images [n, F] in [0, 1]: ReLU between the layers."""
    h = x01
    for i, (weight, bias) in enumerate(layers):
        h = F.linear(h, weight, bias)
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


def on_test_set(layers, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Mean cross-entropy, accuracy and mean top softmax probability on (x, y)."""
    with torch.no_grad():
        z = logits(layers, x.float() / 255).double()
    return {
        "test_loss": F.cross_entropy(z, y).item(),
        "test_acc": (z.argmax(1) == y).double().mean().item(),
        "test_conf": z.softmax(1).max(1).values.mean().item(),
    }


def train_run(run: RunSpec, data, labels: torch.Tensor | None = None) -> list[dict[str, float]]:
    """Per epoch: train loss and accuracy (over the epoch's batches, against the labels trained
    on: `labels`, or the dataset's), and the test metrics after it. ReLU and cross-entropy
    only, SGD with momentum and weight decay, a constant learning rate."""
    model, spec = run.model, run.train
    assert model.activation == "relu" and model.loss == "cross-entropy" and not model.batchnorm
    assert not model.dropout and spec.optimizer == "sgd" and spec.schedule == "constant"
    labels = data.train_y if labels is None else labels
    sizes = [data.num_features, *model.hidden, data.num_classes]
    layers = initial_layers(run.seed, sizes)
    params = [p for layer in layers for p in layer]
    opt = torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
    )
    order_gen = seeding.generator(run.seed, "order")
    n = len(labels)
    epochs = []
    for epoch in range(spec.epochs):
        order = torch.randperm(n, generator=order_gen)
        loss_sum, correct = 0.0, 0
        for start in range(0, n, spec.batch_size):
            idx = order[start : start + spec.batch_size]
            z = logits(layers, data.train_x[idx].float() / 255)
            loss = F.cross_entropy(z, labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((z.argmax(1) == labels[idx]).sum())
        epochs.append(
            {"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n}
            | on_test_set(layers, data.test_x, data.test_y)
        )
    return epochs


def layers_of(model, r: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run r of a StackedMLP (ReLU, no batchnorm) as (weight [out, in], bias [out]) layers,
    copied, for `logits`."""
    return [
        (w[r].T.clone(), b[r, 0].clone()) for w, b in zip(model.weights, model.biases, strict=True)
    ]


def calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int) -> float:
    """ECE: Σ over `bins` equal-width confidence bins (k/bins, (k+1)/bins] of
    |accuracy − mean confidence| × the bin's share of the examples."""
    total = 0.0
    for k in range(bins):
        low, high = k / bins, (k + 1) / bins
        inside = (confidence > low) & (confidence <= high) if k else confidence <= high
        if inside.any():
            gap = correct[inside].double().mean() - confidence[inside].double().mean()
            total += abs(gap.item()) * inside.double().mean().item()
    return total
