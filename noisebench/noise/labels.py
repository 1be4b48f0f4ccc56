"""Label noise: a share of the training labels is reassigned once, before training."""

import hashlib
import math
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PrivateAttr, field_validator

from .. import seeding
from ..errors import StudyError
from .base import LabelNoise, LabelNoiseResult

MAX_CLASSES = 1_000  # of a mapping or transition matrix


class LabelUniform(LabelNoise):
    """Exactly round(level·N) examples get a label drawn uniformly from the classes.

    With `exclude_true` the new label is drawn from the other classes only, so every picked
    example really changes; otherwise it keeps its label with probability 1/K.
    """

    target: Literal["labels"] = "labels"
    exclude_true: bool = False

    def corrupt(
        self, labels: torch.Tensor, num_classes: int, level: float, gen: torch.Generator
    ) -> LabelNoiseResult:
        n = labels.numel()
        # One permutation per seed: the examples picked at level 0.3 include those at 0.1.
        order = torch.randperm(n, generator=gen)
        draws = torch.randint(0, num_classes, (n,), generator=gen)
        offsets = torch.randint(1, num_classes, (n,), generator=gen)
        picked = order[: round(level * n)]
        original = labels[picked].clone()
        if self.exclude_true:
            assigned = (original + offsets[picked]) % num_classes
        else:
            assigned = draws[picked]
        noisy = labels.clone()
        noisy[picked] = assigned
        return LabelNoiseResult(labels=noisy, picked=picked, original=original)


def _pick(labels: torch.Tensor, level: float, gen: torch.Generator) -> torch.Tensor:
    """Exactly round(level·N) distinct indices; the same seed gives nested sets across levels
    and the same sets as labels.uniform."""
    n = labels.numel()
    return torch.randperm(n, generator=gen)[: round(level * n)]


def _result(labels: torch.Tensor, picked: torch.Tensor, assigned: torch.Tensor) -> LabelNoiseResult:
    noisy = labels.clone()
    noisy[picked] = assigned
    return LabelNoiseResult(labels=noisy, picked=picked, original=labels[picked].clone())


class LabelShuffle(LabelNoise):
    """Exactly round(level·N) examples, chosen at random, have their labels permuted among
    themselves, so every class keeps exactly its count; level 1 permutes the whole label vector
    (the "random labels" of Zhang et al. 2017).

    A permuted example may get its own label back by chance (about 1 time in K with balanced
    classes), so about (1 − 1/K)·level·N labels really change. The picked examples are the
    same as labels.uniform's for the same seed, and nested across levels.
    """

    target: Literal["labels"] = "labels"

    def corrupt(
        self,
        labels: torch.Tensor,
        num_classes: int,  # noqa: ARG002 (the interface)
        level: float,
        gen: torch.Generator,
    ) -> LabelNoiseResult:
        picked = _pick(labels, level, gen)
        perm = torch.randperm(picked.numel(), generator=gen).to(labels.device)
        return _result(labels, picked, labels[picked][perm])


class LabelPairFlip(LabelNoise):
    """Exactly round(level·N) examples, chosen at random, move from class c to `mapping[c]`.

    `mapping` defaults to c → c+1 mod K. It need not be a permutation (several classes may map
    to one), but must have length K and mapping[c] ≠ c, so every picked example changes.
    """

    target: Literal["labels"] = "labels"
    mapping: list[Annotated[int, Field(ge=0, lt=MAX_CLASSES)]] | None = Field(
        default=None, min_length=2, max_length=MAX_CLASSES
    )

    @field_validator("mapping")
    @classmethod
    def _no_fixed_points(cls, mapping: list[int] | None) -> list[int] | None:
        for c, m in enumerate(mapping or []):
            if m == c:
                raise ValueError(f"mapping[{c}] = {c}: a class must flip to another class")
        return mapping

    def check_classes(self, num_classes: int) -> None:
        if self.mapping is None:
            return
        if len(self.mapping) != num_classes or max(self.mapping) >= num_classes:
            raise StudyError(
                f"labels.pairflip mapping has {len(self.mapping)} entries with values up to "
                f"{max(self.mapping)}, but the dataset has {num_classes} classes "
                f"(it needs {num_classes} entries in 0..{num_classes - 1})"
            )

    def corrupt(
        self, labels: torch.Tensor, num_classes: int, level: float, gen: torch.Generator
    ) -> LabelNoiseResult:
        self.check_classes(num_classes)
        if self.mapping is None:
            table = (torch.arange(num_classes) + 1) % num_classes
        else:
            table = torch.tensor(self.mapping)
        picked = _pick(labels, level, gen)
        return _result(labels, picked, table.to(labels.device)[labels[picked]])


class LabelMatrix(LabelNoise):
    """Exactly round(level·N) examples, chosen at random, get a label drawn from row y of the
    K×K transition `matrix` (P[y, y'] = probability that true class y becomes y').

    Picked examples keep their label with probability P[y, y], so the realised flip rate is
    level · mean(1 − P[y, y]). K must be the dataset's number of classes.
    """

    target: Literal["labels"] = "labels"
    matrix: list[list[float]] = Field(min_length=2, max_length=MAX_CLASSES)

    @field_validator("matrix")
    @classmethod
    def _stochastic(cls, matrix: list[list[float]]) -> list[list[float]]:
        k = len(matrix)
        for i, row in enumerate(matrix):
            if len(row) != k:
                raise ValueError(f"must be square: row {i} has {len(row)} entries, not {k}")
            if min(row) < 0:
                raise ValueError(f"row {i} has a negative entry")
            if abs(math.fsum(row) - 1) > 1e-6:
                raise ValueError(f"row {i} sums to {math.fsum(row):.9g}, not 1")
        return matrix

    def check_classes(self, num_classes: int) -> None:
        if len(self.matrix) != num_classes:
            raise StudyError(
                f"labels.matrix is {len(self.matrix)}×{len(self.matrix)}, but the dataset has "
                f"{num_classes} classes"
            )

    def corrupt(
        self, labels: torch.Tensor, num_classes: int, level: float, gen: torch.Generator
    ) -> LabelNoiseResult:
        self.check_classes(num_classes)
        picked = _pick(labels, level, gen)
        rows = torch.tensor(self.matrix, dtype=torch.float64)[labels.cpu()]  # [N, K]
        # One draw per example, level-independent: an example picked at 0.1 and at 0.3 gets the
        # same new label at both.
        draws = torch.multinomial(rows, 1, generator=gen).squeeze(1).to(labels.device)
        return _result(labels, picked, draws[picked])


class LabelDilution(LabelNoise):
    """The level is an integer k ≥ 0 of noisy copies per clean example (Rolnick et al. 2017,
    "Deep learning is robust to massive label noise"): the training set becomes the N clean
    examples followed by k blocks of copies of all N, each copy labelled uniformly at random.

    Copy j of example i is training example (1 + j)·N + i. With `exclude_true` a copy's label is
    drawn from the other classes only; otherwise it is the true one with probability 1/K.
    The training set grows to (1 + k)·N (size_factor); a seed's copies at level k are the first
    k blocks of its copies at any higher level, with the same labels.
    """

    target: Literal["labels"] = "labels"
    exclude_true: bool = False
    max_level: ClassVar[float] = 100.0

    def check_level(self, level: float) -> None:
        super().check_level(level)
        if not float(level).is_integer():
            raise ValueError(f"level {level:g} is not a whole number of noisy copies")

    def size_factor(self, level: float) -> int:
        return 1 + int(level)

    def corrupt(
        self, labels: torch.Tensor, num_classes: int, level: float, gen: torch.Generator
    ) -> LabelNoiseResult:
        try:
            self.check_level(level)
        except ValueError as exc:
            raise StudyError(f"labels.dilution: {exc}") from None
        n, copies = labels.numel(), int(level)
        blocks = []
        for _ in range(copies):  # block by block, so lower levels are prefixes of higher ones
            if self.exclude_true:
                offsets = torch.randint(1, num_classes, (n,), generator=gen).to(labels.device)
                blocks.append((labels + offsets) % num_classes)
            else:
                blocks.append(torch.randint(0, num_classes, (n,), generator=gen).to(labels.device))
        index = torch.arange(n, device=labels.device)
        return LabelNoiseResult(
            labels=torch.cat([labels, *blocks]),
            picked=torch.arange(n, (1 + copies) * n, device=labels.device),
            original=labels.repeat(copies),
            source=index.repeat(1 + copies),
        )


REFERENCE_HIDDEN, REFERENCE_LR, REFERENCE_BATCH = 128, 0.05, 64
_REFERENCE_CACHE: dict[tuple, torch.Tensor] = {}
_REFERENCE_CACHE_SIZE = 8


def _fingerprint(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        array = t.detach().cpu().contiguous().numpy()
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _linear(fan_in: int, fan_out: int, gen: torch.Generator) -> list[torch.Tensor]:
    bound = 1.0 / math.sqrt(fan_in)  # torch.nn.Linear's default initialisation
    w = (torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * bound
    b = (torch.rand(fan_out, generator=gen) * 2 - 1) * bound
    return [w.requires_grad_(), b.requires_grad_()]


@torch.enable_grad()
def _train_reference(
    train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, seed: int, epochs: int
) -> torch.Tensor:
    x_all = train_x.cpu().float().div_(255)
    y_all = train_y.cpu()
    init = seeding.generator(seed, "reference/init")
    w1, b1 = _linear(x_all.shape[1], REFERENCE_HIDDEN, init)
    w2, b2 = _linear(REFERENCE_HIDDEN, num_classes, init)

    def logits(x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(b2, torch.relu(torch.addmm(b1, x, w1)), w2)

    optimizer = torch.optim.SGD([w1, b1, w2, b2], lr=REFERENCE_LR, momentum=0.9)
    order_gen = seeding.generator(seed, "reference/order")
    for _ in range(epochs):
        for idx in torch.randperm(len(y_all), generator=order_gen).split(REFERENCE_BATCH):
            loss = F.cross_entropy(logits(x_all[idx]), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return torch.cat([logits(x).softmax(-1) for x in x_all.split(4096)])


def reference_probs(
    train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, seed: int, epochs: int
) -> torch.Tensor:
    """Softmax [N, K] on every training example of labels.feature's reference model, trained
    on (train_x, train_y) for `epochs` epochs from `seed`; cached, so levels share one model."""
    key = (_fingerprint(train_x, train_y), num_classes, seed, epochs)
    if key not in _REFERENCE_CACHE:
        while len(_REFERENCE_CACHE) >= _REFERENCE_CACHE_SIZE:
            del _REFERENCE_CACHE[next(iter(_REFERENCE_CACHE))]
        _REFERENCE_CACHE[key] = _train_reference(train_x, train_y, num_classes, seed, epochs)
    return _REFERENCE_CACHE[key]


class LabelFeature(LabelNoise):
    """The round(level·N) training examples a reference model finds most confusing get its
    most likely wrong class.

    Reference: an MLP F-128-K (ReLU; SGD, lr 0.05, momentum 0.9, batch 64) trained on the
    clean training set for `reference_epochs` epochs, seeded from the run's seed. Confusion is
    ranked by the margin p(y) − max_{c≠y} p(c) of its softmax on each training example, lowest
    first (negative where the reference is wrong); the new label is that c: the reference's
    second choice where its first is y, else its first. Deterministic given the seed (`gen` is
    unused); sets are nested across levels. Needs prepare() before corrupt().
    """

    target: Literal["labels"] = "labels"
    reference_epochs: Annotated[int, Field(ge=1, le=100)] = 3
    _train: tuple[torch.Tensor, torch.Tensor, int] | None = PrivateAttr(default=None)

    def prepare(self, train_x: torch.Tensor, train_y: torch.Tensor, seed: int) -> None:
        self._train = (train_x, train_y, seed)

    def corrupt(
        self,
        labels: torch.Tensor,
        num_classes: int,
        level: float,
        gen: torch.Generator,  # noqa: ARG002 (the interface)
    ) -> LabelNoiseResult:
        if self._train is None:
            raise RuntimeError("labels.feature needs prepare(train_x, train_y, seed) first")
        train_x, train_y, seed = self._train
        if labels.shape != train_y.shape:
            raise RuntimeError("labels.feature: corrupt() labels do not match prepare()'s")
        probs = reference_probs(train_x, train_y, num_classes, seed, self.reference_epochs)
        probs = probs.to(labels.device)
        given = labels.view(-1, 1)
        best_wrong, wrong_class = probs.scatter(1, given, -1.0).max(1)
        margin = probs.gather(1, given).squeeze(1) - best_wrong
        picked = torch.sort(margin, stable=True).indices[: round(level * labels.numel())]
        return _result(labels, picked, wrong_class[picked])
