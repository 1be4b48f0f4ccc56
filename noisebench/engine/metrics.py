"""What noise does to trained models, measured on a whole pack of runs at once (measure.py
says when and on which images).

Every function takes a stacked model of R runs and returns one value per run (a leading run
axis [R, ...]). The model is used only through `model.logits_of_bytes(x_uint8)` (no grad) and
`model(x01)` (differentiable in the [0, 1] pixels), over `chunk` examples at a time so memory
stays bounded; results are on the device of the inputs. Each run's numbers are the ones it gets
evaluated alone (`random_sign_accuracy` too, when it is given one generator per run).

- calibration / reliability: is a run's confidence its accuracy?
- fgsm_accuracy / random_sign_accuracy: how fragile are its decisions (worst-case vs random)?
- class_probabilities: what cleanlab finds the corrupted training labels from.
- label_fit_split: did it learn the noisy labels or the true ones?
"""

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from .model import StackedMLP

CHUNK = 1000  # examples per chunk: R x CHUNK x F floats for the attacks

# (pixels in [0, 1] [b, F], labels [b]) -> step direction [R, b, F]
Direction = Callable[[Tensor, Tensor], Tensor]


def _runs(model: StackedMLP) -> int:
    return model.weights[0].shape[0]


def _logit_chunks(model: StackedMLP, x: Tensor, chunk: int) -> Iterator[tuple[slice, Tensor]]:
    """(examples, logits [R, C, b]) over `x` in chunks; classes sit in the middle, where
    softmax and reductions over them are fast on CPU."""
    for start in range(0, len(x), chunk):
        part = slice(start, start + chunk)
        yield part, model.logits_of_bytes(x[part], classes_first=True)


def _per_example(
    model: StackedMLP, x: Tensor, chunk: int, fn: Callable[[Tensor, slice], Tensor]
) -> Tensor:
    """fn(logits [R, C, b], examples) -> [R, b] for every chunk, joined into [R, N]."""
    return torch.cat([fn(logits, part) for part, logits in _logit_chunks(model, x, chunk)], 1)


def _share(hit: Tensor, among: Tensor | None = None) -> Tensor:
    """Share of True in `hit` [R, N] among the True of `among` (all if None) per run [R];
    NaN where `among` is empty."""
    hit = hit.double()
    if among is None:
        return hit.mean(1)
    among = among.double()
    return (hit * among).sum(1) / among.sum(1)


# --- calibration -------------------------------------------------------------------------


def _bin_sums(
    model: StackedMLP, x: Tensor, y: Tensor, bins: int, chunk: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per run and confidence bin [R, bins]: sum of confidence, number correct, count."""
    sums = torch.zeros(3, _runs(model), bins, dtype=torch.float64, device=x.device)
    for part, logits in _logit_chunks(model, x, chunk):
        top = torch.softmax(logits, dim=1).max(dim=1)  # [R, b]
        correct = top.indices == y[part].to(logits.device)
        # bin k holds confidences in (k/bins, (k+1)/bins]; the first one also holds 0
        index = (top.values * bins).ceil_().long().sub_(1).clamp_(0, bins - 1)
        values = torch.stack((top.values, correct.float(), torch.ones_like(top.values)))
        sums.scatter_add_(2, index.expand(3, -1, -1), values.double())
    return sums[0], sums[1], sums[2]


def reliability(
    model: StackedMLP, x: Tensor, y: Tensor, bins: int = 15, chunk: int = CHUNK
) -> tuple[Tensor, Tensor, Tensor]:
    """A reliability diagram per run: mean confidence, accuracy and count [R, bins] of the
    examples in each of `bins` equal-width confidence bins (NaN confidence/accuracy if empty).

    Confidence is the top softmax probability; `x` are uint8 images [N, F], `y` labels [N]."""
    confidence, correct, count = _bin_sums(model, x, y, bins, chunk)
    return confidence / count, correct / count, count


def calibration(
    model: StackedMLP, x: Tensor, y: Tensor, bins: int = 15, chunk: int = CHUNK
) -> tuple[Tensor, Tensor]:
    """Mean confidence and expected calibration error per run [R].

    ECE = sum over equal-width bins of |accuracy - mean confidence| x share of examples in
    the bin (Guo et al. 2017), i.e. sum_bins |sum correct - sum confidence| / N."""
    confidence, correct, count = _bin_sums(model, x, y, bins, chunk)
    n = count.sum(1)
    return confidence.sum(1) / n, (confidence - correct).abs().sum(1) / n


# --- robustness ----------------------------------------------------------------------------


def _perturbed_accuracy(
    model: StackedMLP, x: Tensor, y: Tensor, eps: Sequence[float], direction: Direction, chunk: int
) -> Tensor:
    """Accuracy [R, E] on clamp(x01 + eps * direction, 0, 1) for each eps."""
    correct = torch.zeros(_runs(model), len(eps), dtype=torch.float64, device=x.device)
    for start in range(0, len(x), chunk):
        part = slice(start, start + chunk)
        x01 = x[part].float() / 255
        yb = y[part].to(x01.device)
        step = direction(x01, yb)
        with torch.no_grad():
            for e, size in enumerate(eps):
                logits = model(torch.add(x01, step, alpha=size).clamp_(0, 1))
                correct[:, e] += (logits.argmax(-1) == yb).sum(1)
    return correct / len(x)


def fgsm_accuracy(
    model: StackedMLP, x: Tensor, y: Tensor, eps: Sequence[float], chunk: int = CHUNK
) -> Tensor:
    """Accuracy per run and eps [R, E] under FGSM in [0, 1] pixel space (Goodfellow et al.
    2015): x' = clamp(x01 + eps * sign(grad_x CE(model_r(x01), y)), 0, 1), each run attacked
    along its own gradient. eps = 0 gives the clean accuracy of `model(x01)`."""
    runs = _runs(model)

    def gradient_sign(x01: Tensor, yb: Tensor) -> Tensor:
        xr = x01.expand(runs, *x01.shape).clone().requires_grad_()
        with torch.enable_grad():
            logits = model(xr)  # [R, b, C]
            loss = torch.nn.functional.cross_entropy(
                logits.mT, yb.expand(runs, -1), reduction="sum"
            )
            (grad,) = torch.autograd.grad(loss, xr)
        return grad.sign_()

    return _perturbed_accuracy(model, x, y, eps, gradient_sign, chunk)


def random_sign_accuracy(
    model: StackedMLP,
    x: Tensor,
    y: Tensor,
    eps: Sequence[float],
    generator: torch.Generator | Sequence[torch.Generator],
    chunk: int = CHUNK,
) -> Tensor:
    """Accuracy per run and eps [R, E] under random noise of FGSM's L-inf size: +-eps per
    pixel, an independent sign per run, example and pixel (the same signs for every eps).

    The signs come from `generator`; with one generator per run, a run's signs (and numbers)
    do not depend on its pack or on `chunk`."""
    runs = _runs(model)
    if not isinstance(generator, torch.Generator) and len(generator) != runs:
        raise ValueError(f"{len(generator)} generators for {runs} runs")

    def random_sign(x01: Tensor, _labels: Tensor) -> Tensor:
        if isinstance(generator, torch.Generator):
            u = torch.rand(runs, *x01.shape, generator=generator, device=generator.device)
        else:
            u = torch.stack(
                [torch.rand(x01.shape, generator=g, device=g.device) for g in generator]
            )
        return (u < 0.5).to(x01.device, torch.float32).mul_(-2).add_(1)

    return _perturbed_accuracy(model, x, y, eps, random_sign, chunk)


# --- label issues --------------------------------------------------------------------------


def class_probabilities(model: StackedMLP, x: Tensor, chunk: int = CHUNK) -> Tensor:
    """Softmax probabilities [R, N, C] of every run for every example: what cleanlab finds
    the wrong labels from (label_issues.py)."""
    parts = [torch.softmax(logits, 1).mT for _, logits in _logit_chunks(model, x, chunk)]
    return torch.cat(parts, 1)


# --- memorisation --------------------------------------------------------------------------


def label_fit_split(
    model: StackedMLP,
    x: Tensor,
    given: Tensor,
    true: Tensor,
    corrupted: Tensor,
    chunk: int = CHUNK,
) -> dict[str, Tensor]:
    """How each run fits its training set [R]: `noisy_fit` (corrupted examples predicted as
    their given, wrong label: memorised), `true_fit` (corrupted examples predicted as their
    true label), `clean_fit` (accuracy on the uncorrupted ones) and `train_acc` (accuracy
    against the given labels). NaN where a group is empty.

    `given` [R, N] are each run's training labels, `true` [N] the clean ones, `corrupted`
    [R, N] marks the examples whose label the noise changed."""
    predicted = _per_example(model, x, chunk, lambda logits, _: logits.argmax(1))
    given, true, corrupted = (t.to(predicted.device) for t in (given, true, corrupted))
    fits_given = predicted == given
    return {
        "noisy_fit": _share(fits_given, corrupted),
        "true_fit": _share(predicted == true, corrupted),
        "clean_fit": _share(fits_given, ~corrupted),
        "train_acc": _share(fits_given),
    }
