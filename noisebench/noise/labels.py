"""Label noise: a share of the training labels is reassigned once, before training."""

from typing import Literal

import torch

from .base import LabelNoise, LabelNoiseResult


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
