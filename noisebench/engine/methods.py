"""The training methods of a shard's runs (study.Method): which loss each run trains with,
built for the shard's rows.

A shard whose runs all use plain cross-entropy gets the model's loss itself (backward.LOSSES),
so a study without methods runs exactly the step it ran before methods existed. Otherwise the
shard's rows are cut into segments of one method each (pack order keeps them contiguous) and
each segment's loss fills its rows of the gradient. Every segment sees its own rows only, so a
run's numbers do not depend on its pack; a co-teaching pair is one segment of two rows.
"""

import functools
from typing import Any

import torch
from torch import Tensor

from .. import seeding
from ..errors import StudyError
from ..noise import LabelMatrix, LabelNoise, LabelPairFlip, LabelShuffle, LabelUniform, make_noise
from ..study import RunSpec
from . import backward
from .backward import Loss
from .optimizer import Optimizer
from .trainset import RunTrainSet


def method_key(run: RunSpec) -> tuple:
    """Runs with equal keys train with one loss object (co-teaching: without the peer)."""
    return tuple(kv for kv in run.method if kv[0] != "peer")


def unit_key(run: RunSpec) -> tuple:
    """What must stay together in a shard: a co-teaching pair, or the run alone."""
    if run.method_name == "coteaching":
        return (run.setup, run.level, run.seed, run.regime, method_key(run))
    return (run.run_id,)


def init_seed(run: RunSpec) -> int:
    """The seed a run's initial weights are drawn from: its own, except the second network of
    a co-teaching pair, which starts elsewhere (the two see the same batches and labels)."""
    if dict(run.method).get("peer") == 1:
        return seeding.derive_seed(run.seed, "coteaching-peer")
    return run.seed


def true_transition(run: RunSpec, num_classes: int) -> Tensor:
    """T [K, K] (T[i, j] = P(label j | true class i)) that the run's label noise implies in
    expectation: the identity for clean runs."""
    k, level = num_classes, run.level
    eye = torch.eye(k, dtype=torch.float64)
    if run.noise is None or level == 0:
        return eye
    noise = make_noise(run.noise, dict(run.params))
    if isinstance(noise, LabelUniform) and noise.exclude_true:
        moved = (torch.ones(k, k, dtype=torch.float64) - eye) / (k - 1)
    elif isinstance(noise, LabelUniform | LabelShuffle):
        # shuffle: a picked label is replaced by another picked one, ≈ the class shares (equal)
        moved = torch.full((k, k), 1.0 / k, dtype=torch.float64)
    elif isinstance(noise, LabelPairFlip):
        table = torch.arange(1, k + 1) % k if noise.mapping is None else torch.tensor(noise.mapping)
        moved = torch.zeros(k, k, dtype=torch.float64).scatter_(1, table.view(k, 1), 1.0)
    elif isinstance(noise, LabelMatrix):
        noise.check_classes(k)
        moved = torch.tensor(noise.matrix, dtype=torch.float64)
    else:
        raise ValueError(f"noise '{run.noise}' implies no transition matrix")
    return (1 - level) * eye + level * moved


def check_transition(run: RunSpec, num_classes: int) -> None:
    """ValueError (one line) if a run's loss correction cannot use its T."""
    params = dict(run.method)
    if run.method_name not in ("forward", "backward") or params["T"] == "estimated":
        return
    if params["T"] == "true":
        try:
            t = true_transition(run, num_classes)
        except ValueError as exc:
            raise ValueError(f"method {run.method_name} with T = 'true': {exc}") from None
    else:
        t = torch.tensor(params["T"], dtype=torch.float64)
        if t.shape != (num_classes, num_classes):
            raise ValueError(
                f"method {run.method_name}: T is {t.shape[0]}×{t.shape[1]}, but the dataset "
                f"has {num_classes} classes"
            )
    if run.method_name == "backward" and torch.linalg.matrix_rank(t) < num_classes:
        raise ValueError(
            f"method backward: the T of setup '{run.setup}' at level {run.level:g} is "
            "singular (backward correction needs T⁻¹)"
        )


def training_images(train_x: Tensor, train: RunTrainSet) -> Tensor:
    """uint8 [N', F]: the images of a run's training set, in its order."""
    return train_x if train.source is None else train_x[train.source.to(train_x.device)]


def noisy_validation_labels(run: RunSpec, valid_x: Tensor, valid_y: Tensor, k: int) -> Tensor:
    """The labels the early-stop method watches on the validation split: corrupted by the
    run's own label noise (its seed's "validation-labels" stream), as a practitioner's
    held-out labels would be; the clean labels when the run has none."""
    noise = make_noise(run.noise, dict(run.params)) if run.noise and run.level > 0 else None
    if not isinstance(noise, LabelNoise) or noise.max_level > 1:  # dilution adds examples
        return valid_y
    noise.prepare(valid_x.cpu(), valid_y.cpu(), run.seed)
    gen = seeding.generator(run.seed, "validation-labels")
    return noise.corrupt(valid_y.cpu(), k, run.level, gen).labels.to(valid_y.device)


def check_methods(runs: list[RunSpec], num_classes: int) -> None:
    """StudyError (one line) before any training if a run's loss correction cannot use its T."""
    for run in runs:
        forget = dict(run.method).get("forget_rate", run.level)
        if run.method_name == "coteaching" and forget >= 1:
            raise StudyError(
                f"method coteaching: setup '{run.setup}' at level {run.level:g} gives a forget "
                "rate ≥ 1; give forget_rate in [0, 1)"
            )
        try:
            check_transition(run, num_classes)
        except ValueError as exc:
            raise StudyError(str(exc)) from None


def anchor_transition(probs: Tensor) -> Tensor:
    """Patrini et al. 2017's anchor-point estimate of T from the noisy-label probabilities
    p(ỹ | x) [N, K] of a model trained on the noisy labels: row i is p(ỹ | x̄_i), where x̄_i is
    the example most confidently of class i (their estimator without outlier filtering)."""
    anchors = probs.argmax(0)  # [K]
    return probs[anchors]


def estimate_error(run: RunSpec, estimate: Tensor) -> dict[str, float]:
    """How far an estimated T [K, K] lies from the one the run's noise implies: the mean over
    classes of the L1 distance between rows (0: exact, 2: disjoint); nothing when the noise
    implies no matrix."""
    try:
        true = true_transition(run, estimate.shape[0])
    except ValueError:
        return {}
    return {"transition_l1": float((estimate.double().cpu() - true).abs().sum(1).mean())}


class Corrected:
    """Forward or backward correction of rows with transition matrices T [R, K, K]; with
    T = "estimated" (`transition` None), plain cross-entropy until the pack sets the estimate
    (`estimate`), then corrected with it."""

    def __init__(self, kind: str, transition: Tensor | None):
        self.kind, self.estimated = kind, transition is None
        self.transition = transition
        self.loss: Loss = backward.cross_entropy
        if transition is not None:
            self.estimate(transition)

    def estimate(self, transition: Tensor) -> None:
        self.transition = transition
        if self.kind == "forward":
            self.loss = backward.ForwardCorrected(transition)
        else:
            self.loss = backward.BackwardCorrected(transition)

    def __call__(self, logits: Tensor, labels: Tensor, loss_sum: Tensor) -> Tensor:
        return self.loss(logits, labels, loss_sum)


class CoTeaching:
    """Co-teaching (Han et al. 2018) of pairs of rows (peer 0, then peer 1): each network
    updates on the (1 − τ(e))·b examples of the batch with the smallest cross-entropy under its
    peer, τ(e) = τ·min(e / t_k, 1) in epoch e (counted from 0). The recorded loss is the mean
    cross-entropy over the kept examples (times b, as a sum)."""

    def __init__(self, forget: list[float], t_k: int, opt: Optimizer, steps_per_epoch: int):
        self.forget, self.t_k = forget, t_k  # τ per pair
        self.opt, self.steps_per_epoch = opt, steps_per_epoch

    def __call__(self, logits: Tensor, labels: Tensor, loss_sum: Tensor) -> Tensor:
        runs, _, b = logits.shape
        epoch = self.opt.step_count // self.steps_per_epoch  # steps done before this one
        logp = torch.log_softmax(logits, dim=1)
        losses = logp.gather(1, labels).neg_()  # [R, 1, b]
        mask = torch.zeros_like(losses)
        for pair, tau in enumerate(self.forget):
            keep = round((1 - tau * min(epoch / self.t_k, 1.0)) * b)
            for me, peer in ((2 * pair, 2 * pair + 1), (2 * pair + 1, 2 * pair)):
                chosen = losses[peer, 0].sort(stable=True).indices[:keep]
                mask[me, 0, chosen] = 1.0 / keep
        loss_sum.add_((losses * mask).sum((1, 2)), alpha=b)
        g = logp.exp_().scatter_add_(1, labels, backward._minus_one(logp, labels))
        return g.mul_(mask)


class ShardLosses:
    """The losses of a shard with several methods: each segment of rows [start, stop) its own."""

    def __init__(self, segments: list[tuple[int, int, Loss]]):
        self.segments = segments

    def __call__(self, logits: Tensor, labels: Tensor, loss_sum: Tensor) -> Tensor:
        g = torch.empty_like(logits)
        for start, stop, loss in self.segments:
            rows = slice(start, stop)
            g[rows] = loss(logits[rows], labels[rows], loss_sum[rows])
        return g

    def estimated(self) -> list[tuple[int, int, Corrected]]:
        """The segments whose T is estimated during training."""
        return [s for s in self.segments if isinstance(s[2], Corrected) and s[2].estimated]


def _segment_loss(
    runs: list[RunSpec], base: Loss, num_classes: int, opt: Optimizer, steps_per_epoch: int, dtype
) -> Loss:
    """The loss of consecutive runs of one method (`base`: the model's own loss)."""
    params: dict[str, Any] = dict(runs[0].method)
    name = runs[0].method_name
    if name in ("ce", "early-stop"):
        return base
    if name == "gce":
        return functools.partial(backward.generalized_cross_entropy, q=params["q"])
    if name == "sce":
        return functools.partial(
            backward.symmetric_cross_entropy,
            alpha=params["alpha"],
            beta=params["beta"],
            log_zero=params["log_zero"],
        )
    if name == "bootstrap":
        loss = backward.hard_bootstrap if params["hard"] else backward.soft_bootstrap
        return functools.partial(loss, beta=params["beta"])
    if name in ("forward", "backward"):
        if params["T"] == "estimated":
            return Corrected(name, None)
        if params["T"] == "true":
            ts = [true_transition(r, num_classes) for r in runs]
        else:
            ts = [torch.tensor(params["T"], dtype=torch.float64)] * len(runs)
        return Corrected(name, torch.stack(ts).to(opt.params[0].device, dtype))
    if name == "coteaching":
        forget = [params.get("forget_rate", r.level) for r in runs[::2]]
        return CoTeaching(forget, params["t_k"], opt, steps_per_epoch)
    raise ValueError(f"unknown method '{name}'")


def shard_loss(
    runs: list[RunSpec],
    base: Loss,
    num_classes: int,
    opt: Optimizer,
    steps_per_epoch: int,
    dtype: torch.dtype,
) -> Loss:
    """The loss of a shard's runs (in pack order): `base` when every run trains with plain
    cross-entropy, else one ShardLosses over segments of one method each."""
    if all(not r.method or r.method_name == "early-stop" for r in runs):
        return base
    segments, start = [], 0
    for stop in range(1, len(runs) + 1):
        if stop == len(runs) or method_key(runs[stop]) != method_key(runs[start]):
            loss = _segment_loss(runs[start:stop], base, num_classes, opt, steps_per_epoch, dtype)
            segments.append((start, stop, loss))
            start = stop
    if len(segments) == 1 and not isinstance(segments[0][2], Corrected):
        return segments[0][2]  # one method: its loss on the whole shard, no copy
    return ShardLosses(segments)
