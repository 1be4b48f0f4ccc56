"""The statistics behind every comparison the report makes.

Runs with the same seed share their initialisation and batch order, so two setups (or two
levels, or two epochs of one run) are compared by the per-seed difference: its mean and the
95 % t-interval over seeds. That interval covers seed-to-seed variation only; the test set
is finite, so every accuracy also carries a binomial sampling error (about ±1.9 points at
90 % accuracy on 1,000 images, 95 %), which the intervals leave out. With one seed there is
no interval at all; a difference smaller than the test set's binomial error is no difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Paired:
    """a − b, paired by seed: mean, half-width of its 95 % t-interval (NaN for one seed), the
    seeds used, and the test set's binomial error of the compared accuracies (NaN when the
    compared quantity is not an accuracy on the test set)."""

    mean: float
    half: float
    n: int
    binomial: float = float("nan")

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    @property
    def clear(self) -> bool:
        """The data tell the sign: with seeds, the interval excludes zero; with one seed, the
        difference exceeds the test set's binomial error (unknown error: never clear)."""
        if self.n >= 2 and math.isfinite(self.half):
            return self.low > 0 or self.high < 0
        return math.isfinite(self.binomial) and abs(self.mean) > self.binomial

    @property
    def sign(self) -> int:
        """+1 or −1 when clear, else 0."""
        return int(np.sign(self.mean)) if self.clear else 0


def mean_half(values: pd.Series | list[float]) -> tuple[float, float, int]:
    """Mean of the finite values, half-width of its 95 % t-interval (NaN below two), count."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    if len(v) == 1:
        return float(v[0]), float("nan"), 1
    half = sps.t.ppf(0.5 + CONFIDENCE / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half), len(v)


def binomial_half(accuracy: float, n_test: int | None) -> float:
    """Half-width of the 95 % normal interval of an accuracy measured on n_test images."""
    if not n_test or not math.isfinite(accuracy):
        return float("nan")
    p = min(max(accuracy, 0.0), 1.0)
    return float(sps.norm.ppf(0.5 + CONFIDENCE / 2) * math.sqrt(p * (1 - p) / n_test))


def paired(a: pd.Series, b: pd.Series, n_test: int | None = None) -> Paired:
    """a − b over the seeds both have (index: seed). With `n_test`, a and b are accuracies on
    that many test images and the binomial error of their difference is attached: the
    root-sum-square of each accuracy's error (an upper bound for two models on one set)."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    mean, half, n = mean_half(both.a - both.b)
    if n_test and n:
        errors = [binomial_half(float(both[c].mean()), n_test) for c in ("a", "b")]
        binomial = math.sqrt(sum(e * e for e in errors))
    else:
        binomial = float("nan")
    return Paired(mean, half, n, binomial)
