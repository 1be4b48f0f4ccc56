"""What each run trains on: the validation hold-out, a balanced subset, and its labels.

A run's training set is a list of rows of the dataset's training images (`source`) with one
label per row. By default it is every row with its own label; a validation share removes a
stratified hold-out first (the same rows for every run), `train_size` keeps a balanced subset
drawn from the run's seed, and a label noise may relabel rows or (labels.dilution) add rows.
A cross-validation model (RunSpec.fold) trains on its parent run's set less one fold.
"""

from dataclasses import dataclass

import torch

from .. import seeding
from ..data import Dataset
from ..errors import StudyError
from ..noise import LabelNoise, LabelNoiseResult, make_noise
from ..study import RunSpec

VALIDATION_SEED = 0  # one hold-out for the whole study, whatever the runs' seeds


def _per_class(labels: torch.Tensor, num_classes: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Each class's positions in `labels`, in a random order drawn from `gen`."""
    order = torch.randperm(len(labels), generator=gen)
    shuffled = labels[order]
    return [order[shuffled == c] for c in range(num_classes)]


def split_validation(data: Dataset, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, validation rows): a stratified `share` of every class is held out."""
    if share == 0:
        return torch.arange(len(data.train_y)), torch.empty(0, dtype=torch.long)
    gen = seeding.generator(VALIDATION_SEED, "validation")
    train, valid = [], []
    for rows in _per_class(data.train_y, data.num_classes, gen):
        cut = round(share * len(rows))
        valid.append(rows[:cut])
        train.append(rows[cut:])
    return torch.cat(train).sort().values, torch.cat(valid).sort().values


def balanced_subset(
    pool: torch.Tensor, labels: torch.Tensor, size: int, num_classes: int, seed: int
) -> torch.Tensor:
    """`size` rows of `pool`, equally many per class (the first size mod K classes, in a
    seeded order, get one more), drawn from `seed`: nested across sizes for one seed."""
    gen = seeding.generator(seed, "subset")
    by_class = _per_class(labels[pool], num_classes, gen)
    extra = torch.randperm(num_classes, generator=gen)[: size % num_classes]
    counts = [size // num_classes + int(c in extra) for c in range(num_classes)]
    for c, (rows, want) in enumerate(zip(by_class, counts, strict=True)):
        if want > len(rows):
            raise StudyError(
                f"train size {size} needs {want} examples of class {c}; "
                f"the training set has {len(rows)}"
            )
    picked = torch.cat([rows[:want] for rows, want in zip(by_class, counts, strict=True)])
    return pool[picked.sort().values]


def check_sizes(runs: list[RunSpec], data: Dataset) -> None:
    """Fail before any training if a run's subset cannot be drawn."""
    if not runs:
        return
    pool, _ = split_validation(data, runs[0].validation)
    for run in {r.train_size: r for r in runs if r.train_size is not None}.values():
        if run.train_size < data.num_classes:
            raise StudyError(
                f"train size {run.train_size} is smaller than the {data.num_classes} classes"
            )
        balanced_subset(pool, data.train_y, run.train_size, data.num_classes, run.seed)


def check_folds(runs: list[RunSpec], data: Dataset) -> None:
    """Fail before any training if a fold model's split would leave a class out of a fold."""
    folds = {r.fold[1] for r in runs if r.fold is not None}
    if not folds:
        return
    pool, _ = split_validation(data, runs[0].validation)
    smallest = int(torch.bincount(data.train_y[pool], minlength=data.num_classes).min())
    sizes = {r.train_size for r in runs if r.train_size is not None}
    if sizes:
        smallest = min(smallest, min(sizes) // data.num_classes)
    if max(folds) > smallest:
        raise StudyError(
            f"analysis.folds = {max(folds)} is more than the {smallest} examples of the "
            "smallest class in a training set: every fold needs every class"
        )


def train_set_size(run: RunSpec, data: Dataset) -> int:
    """How many examples `run` trains on per epoch."""
    n = len(data.train_y)
    if run.validation:
        n -= len(split_validation(data, run.validation)[1])
    n = (run.train_size or n) * run.size_factor
    return n if run.fold is None else n - -(-n // run.fold[1])  # less the largest fold


def fold_split(labels: torch.Tensor, folds: int, num_classes: int, seed: int) -> torch.Tensor:
    """int64 [N]: the fold 0..K-1 of each example, stratified by `labels` and drawn from
    `seed` alone. Each class's examples, in a seeded order, are dealt to the folds in turn,
    every class going on where the last one stopped: each fold holds floor or ceil(N / K)
    examples and floor or ceil(N_c / K) of each class c."""
    fold = torch.empty(len(labels), dtype=torch.long)
    dealt = 0
    for rows in _per_class(labels, num_classes, seeding.generator(seed, "folds")):
        fold[rows] = (dealt + torch.arange(len(rows))) % folds
        dealt += len(rows)
    return fold


def fold_rows(
    fold: torch.Tensor, k: int, folds: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(trained, held out): positions a fold-k model trains on and those of fold k.

    Every fold model of a run trains on N - ceil(N / K) examples, so all K share a pack:
    where fold k is one example short of ceil(N / K), one more position, drawn from `seed`,
    is left out of its training (it is in another fold, so it still gets its own
    out-of-sample probabilities)."""
    held_out = (fold == k).nonzero().squeeze(1)
    trained = (fold != k).nonzero().squeeze(1)
    extra = len(trained) - (len(fold) - -(-len(fold) // folds))
    if extra:
        gen = seeding.generator(seed, f"fold-{k}-extra")
        trained = trained[torch.randperm(len(trained), generator=gen)[extra:]].sort().values
    return trained, held_out


@dataclass
class RunTrainSet:
    """One run's training set: dataset rows, the labels it trains on, their true labels."""

    source: torch.Tensor | None  # int64 [N'], rows of data.train_x (None: all, in order)
    labels: torch.Tensor  # int64 [N'], what the model trains on
    true: torch.Tensor  # int64 [N'], the dataset's labels of those rows
    label_noise: LabelNoiseResult | None  # indices relative to this training set
    # a fold model's parent training set and the positions of it the model did not see
    parent: "RunTrainSet | None" = None
    held_out: torch.Tensor | None = None  # int64 [m]

    @property
    def corrupted(self) -> torch.Tensor:
        """bool [N']: examples whose label differs from the true one."""
        return self.labels != self.true


def run_train_set(
    run: RunSpec, data: Dataset, pool: torch.Tensor | None, parents: dict | None = None
) -> RunTrainSet:
    """The training set of `run`, drawn from the rows `pool` (None: every training row).
    A fold model's parent set is drawn once per `parents` (a dict by run id): a pack's K fold
    models of a run share it (labels.feature trains a reference model to draw it)."""
    if run.fold is not None:
        parents = {} if parents is None else parents
        if run.parent.run_id not in parents:
            parents[run.parent.run_id] = run_train_set(run.parent, data, pool)
        return _fold_train_set(run, data, parents[run.parent.run_id])
    source = pool
    if run.train_size is not None:
        every = torch.arange(len(data.train_y)) if pool is None else pool
        source = balanced_subset(every, data.train_y, run.train_size, data.num_classes, run.seed)
    x, true = (data.train_x, data.train_y) if source is None else (None, data.train_y[source])
    noise = make_noise(run.noise, dict(run.params)) if run.noise and run.level > 0 else None
    if not isinstance(noise, LabelNoise):
        return RunTrainSet(source, true, true, None)
    noise.prepare(data.train_x[source] if x is None else x, true, run.seed)
    result = noise.corrupt(true, data.num_classes, run.level, seeding.generator(run.seed, "labels"))
    grown = getattr(result, "source", None)  # noises that add examples say where they come from
    if grown is not None:
        source = grown if source is None else source[grown]
        true = true[grown]
    return RunTrainSet(source, result.labels, true, result)


def _fold_train_set(run: RunSpec, data: Dataset, parent: RunTrainSet) -> RunTrainSet:
    """A fold model's training set: its parent's, with the same noisy labels, less one fold
    (stratified by the given labels, drawn from the run's seed)."""
    k, folds = run.fold
    split = fold_split(parent.labels, folds, data.num_classes, run.seed)
    trained, held_out = fold_rows(split, k, folds, run.seed)
    rows = trained if parent.source is None else parent.source[trained]
    return RunTrainSet(rows, parent.labels[trained], parent.true[trained], None, parent, held_out)
