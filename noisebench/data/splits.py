"""Deterministic stratified train/test splits (for mnist-sample and per-class image folders)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SAMPLE_SEED = 0
FOLDER_TEST_FRACTION = 0.2
FOLDER_SEED = 0


def stratified_split(
    labels: np.ndarray, test_per_class: int, seed: int = SAMPLE_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, test) row indices with `test_per_class` test rows per class.

    Both index arrays come in a fixed shuffled order, so no split is sorted by class.
    """
    return _stratified(labels, lambda _: test_per_class, seed)


def stratified_fraction_split(
    labels: np.ndarray, test_fraction: float = FOLDER_TEST_FRACTION, seed: int = FOLDER_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Like `stratified_split`, but each class gives `test_fraction` of its rows to the test
    split (rounded half up), and at least one row to each split; classes need 2 rows or more.
    """

    def test_count(size: int) -> int:
        return min(size - 1, max(1, int(np.floor(size * test_fraction + 0.5))))

    return _stratified(labels, test_count, seed)


def _stratified(
    labels: np.ndarray, test_count: Callable[[int], int], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        count = test_count(len(rows))
        test.append(rows[:count])
        train.append(rows[count:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
