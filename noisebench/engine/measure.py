"""What a pack measures besides its loss: after each epoch (validation, calibration, how the
training set is fitted) and after training (robustness, finding the wrong labels).

Every measurement runs per shard in the shard threads, and anything random or run-specific is
done run by run, so a run's numbers do not depend on its pack.
"""

import copy
from dataclasses import dataclass

import numpy as np
import torch

from .. import seeding
from ..data import Dataset
from ..study import AnalysisSpec
from . import label_issues, metrics
from .model import StackedMLP, evaluate
from .trainset import RunTrainSet


@dataclass
class EvalSets:
    """The images a pack is measured on; training-set rows are per run."""

    test_x: torch.Tensor
    test_y: torch.Tensor
    valid_x: torch.Tensor | None  # uint8 [V, F], the held-out rows (None: no validation)
    valid_y: torch.Tensor | None
    train_x: torch.Tensor  # the dataset's training images (uint8 [N, F])
    watched: torch.Tensor | None  # positions of each run's training set measured per epoch


def eval_sets(data: Dataset, valid_rows: torch.Tensor, size: int, spec: AnalysisSpec, device):
    """The test and validation images, and which `size`-example training-set positions are
    measured every epoch (the same for every run of the pack)."""
    valid = len(valid_rows) > 0
    want = size if spec.train_eval == "all" else min(spec.train_eval, size)
    watched = None
    if want > 0:
        watched = torch.randperm(size, generator=seeding.generator(0, "watched"))[:want]
        watched = watched.sort().values
    return EvalSets(
        test_x=data.test_x.to(device),
        test_y=data.test_y.to(device),
        valid_x=data.train_x[valid_rows].to(device) if valid else None,
        valid_y=data.train_y[valid_rows].to(device) if valid else None,
        train_x=data.train_x.to(device),
        watched=watched,
    )


def _rows(train_x: torch.Tensor, train: RunTrainSet, positions: torch.Tensor | None):
    """A run's training images at `positions` of its training set (None: all of them)."""
    if train.source is None:
        return train_x if positions is None else train_x[positions]
    rows = train.source if positions is None else train.source[positions]
    return train_x[rows.to(train_x.device)]


@dataclass
class _Seen:
    """Runs [start, stop) of a shard that see the same training images, and those images
    with each run's given and true labels at the chosen positions."""

    start: int
    stop: int
    x: torch.Tensor  # uint8 [N, F]
    given: torch.Tensor  # [r, N]
    true: torch.Tensor  # [N]
    corrupted: torch.Tensor  # bool [r, N]


def _seen(train_x, trains: list[RunTrainSet], positions: torch.Tensor | None) -> list[_Seen]:
    """Runs on the whole training set share one batched pass; runs on their own subsets or
    diluted sets are measured one by one."""

    def at(t: torch.Tensor) -> torch.Tensor:
        return t if positions is None else t[positions]

    if all(t.source is None for t in trains):
        given = torch.stack([at(t.labels) for t in trains])
        corrupted = torch.stack([at(t.corrupted) for t in trains])
        x = train_x if positions is None else train_x[positions]
        return [_Seen(0, len(trains), x, given, at(trains[0].true), corrupted)]
    return [
        _Seen(
            r,
            r + 1,
            _rows(train_x, t, positions),
            at(t.labels)[None],
            at(t.true),
            at(t.corrupted)[None],
        )
        for r, t in enumerate(trains)
    ]


def epoch_metrics(
    model: StackedMLP, sets: EvalSets, trains: list[RunTrainSet], spec: AnalysisSpec
) -> list[dict[str, float]]:
    """Per run of `model` (a shard): calibration on the test set, validation loss and
    accuracy, and how its watched training examples are fitted, on clean inputs."""
    _, ece = metrics.calibration(model, sets.test_x, sets.test_y, bins=spec.calibration_bins)
    out = [{"test_ece": float(e)} for e in ece]
    if sets.valid_x is not None:
        loss, acc, _ = evaluate(model, sets.valid_x, sets.valid_y)
        for row, lv, av in zip(out, loss.tolist(), acc.tolist(), strict=True):
            row.update(val_loss=lv, val_acc=av)
    if sets.watched is None:
        return out
    for seen in _seen(sets.train_x, trains, sets.watched):
        part = model.rows(seen.start, seen.stop)
        split = metrics.label_fit_split(part, seen.x, seen.given, seen.true, seen.corrupted)
        for i, r in enumerate(range(seen.start, seen.stop)):
            out[r]["train_clean_acc"] = float(split["train_acc"][i])
            if trains[r].label_noise is not None:
                out[r] |= {f"fit_{k.removesuffix('_fit')}": float(split[k][i]) for k in _FITS}
    return out


_FITS = ("noisy_fit", "true_fit", "clean_fit")


def _attacked(sets: EvalSets, spec: AnalysisSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images the robustness analysis perturbs: a fixed random subset, the same for
    every run, or all of them."""
    n = len(sets.test_y)
    if spec.robustness_examples == "all" or spec.robustness_examples >= n:
        return sets.test_x, sets.test_y
    picked = torch.randperm(n, generator=seeding.generator(0, "robustness"))
    picked = picked[: spec.robustness_examples].sort().values.to(sets.test_x.device)
    return sets.test_x[picked], sets.test_y[picked]


def _detached(model: StackedMLP) -> StackedMLP:
    """The model with every tensor detached (no copy): its views were made without grad, so
    autograd, which the attacks need for input gradients, must not see them as parameters."""
    frozen = copy.copy(model)
    for name, value in vars(model).items():
        if isinstance(value, torch.Tensor):
            setattr(frozen, name, value.detach())
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            setattr(frozen, name, [v.detach() for v in value])
    return frozen


def final_metrics(
    model: StackedMLP,
    sets: EvalSets,
    trains: list[RunTrainSet],
    seeds: list[int],
    spec: AnalysisSpec,
    num_classes: int,
) -> tuple[list[dict[str, float]], list[dict[str, np.ndarray]]]:
    """Per run of `model` (a shard, as kept at the end): metrics and arrays. Accuracy under
    FGSM and under random signs of the same size on the test set, and how well cleanlab finds
    the corrupted training labels from the run's own (in-sample) probabilities. A fold model
    (label_issues = "cv") measures only its out-of-sample probabilities (`held_out`)."""
    out: list[dict[str, float]] = [{} for _ in seeds]
    arrays: list[dict[str, np.ndarray]] = [{} for _ in seeds]
    if trains[0].held_out is not None:  # a pack holds fold models only, or none
        return out, [held_out(model.rows(r, r + 1), sets.train_x, t) for r, t in enumerate(trains)]
    eps = spec.fgsm_eps
    if eps:
        x, y = _attacked(sets, spec)
        fgsm = metrics.fgsm_accuracy(_detached(model), x, y, [0.0, *eps])  # ε = 0: unperturbed
        gens = [seeding.generator(s, "random-sign", x.device) for s in seeds]
        rand = metrics.random_sign_accuracy(model, x, y, eps, gens)
        for r, row in enumerate(out):
            row["attacked_acc"] = float(fgsm[r, 0])
            row |= {f"fgsm@{e:g}": float(v) for e, v in zip(eps, fgsm[r, 1:], strict=True)}
            row |= {f"randsign@{e:g}": float(v) for e, v in zip(eps, rand[r], strict=True)}
    if not spec.label_issues:
        return out, arrays
    noisy = [r for r, t in enumerate(trains) if t.label_noise is not None and t.corrupted.any()]
    if not noisy:
        return out, arrays
    for seen in _seen(sets.train_x, [trains[r] for r in noisy], None):
        runs = noisy[seen.start : seen.stop]
        probs = metrics.class_probabilities(_runs_of(model, runs), seen.x).cpu().numpy()
        for i, r in enumerate(runs):
            given = seen.given[i].cpu().numpy()
            found = label_issues.find_issues(probs[i], given, seen.true.numpy(), num_classes)
            values, found_arrays = label_issues.stored("in_sample", *found)
            out[r] |= values
            arrays[r] |= found_arrays
    return out, arrays


def held_out(model: StackedMLP, train_x: torch.Tensor, train: RunTrainSet) -> dict[str, np.ndarray]:
    """A fold model's (one run) probabilities [m, C] on the fold of its parent's training set
    it did not see, with those positions, given and true labels."""
    parent = train.parent
    positions = train.held_out
    x = _rows(train_x, parent, positions)
    probs = metrics.class_probabilities(model, x)[0]
    return {
        "fold/positions": positions.numpy().astype(np.int32),
        "fold/probs": probs.cpu().numpy().astype(np.float32),
        "fold/given": parent.labels[positions].numpy().astype(np.int32),
        "fold/true": parent.true[positions].numpy().astype(np.int32),
    }


def _runs_of(model: StackedMLP, runs: list[int]) -> StackedMLP:
    """The model of some runs: a view when they are contiguous, else a copy of their rows."""
    if runs == list(range(runs[0], runs[-1] + 1)):
        return model.rows(runs[0], runs[-1] + 1)
    picked = copy.copy(model)
    for name, value in vars(model).items():
        if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            setattr(picked, name, [v[runs] for v in value])
    return picked
