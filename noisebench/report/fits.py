"""Logistic fits of accuracy curves over epochs (the memorisation sections read them).

A logistic in the epoch, floor + (plateau − floor) / (1 + exp(−rate · (epoch − midpoint))),
fitted to a mean curve (the floor is chance, 1/K: an untrained network guesses). A fit that
fails, fits badly, has not yet passed its midpoint, leaves the plateau loosely determined or
would level off at or below a value the curve already reached is kept but marked not `ok`,
and nothing reads its plateau.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

MIN_WINDOW = 3  # epochs in the late window the fit must follow, at least
MIN_FIT_EPOCHS = 5  # a 3-parameter logistic needs a few points more than parameters
GOOD_R2 = 0.9  # a fit explaining less of the curve's variance is poor ...
GOOD_RMSE = 0.005  # ... unless it is within half a point everywhere (a flat curve has no R²)
MAX_PLATEAU_HALF = 0.05  # 95 % half-width of the plateau above which it is not reported
MAX_LATE_MISS = 0.01  # mean distance of the fit from the late epochs' values it may keep
MAX_PEAK_DROP = 0.02  # a mean curve that ends this far below its peak is not a logistic

# Why a fit's plateau is not quoted, as predicates of the curve; the most telling first.
PEAKED = "peaks and then falls, which a logistic cannot follow"
MISSED = "is missed by the fit over its last epochs"
EARLY = "is still below its midpoint, so its plateau would be a guess"
LOOSE = "has a loosely determined plateau"
POOR = "fits poorly"
CHANCE = "stays near chance"
REACHED = "would level off at or below a value it already reached"
FAILED = "could not be fitted"
PROBLEMS = (PEAKED, MISSED, REACHED, EARLY, LOOSE, POOR, CHANCE, FAILED)
NEAR_CHANCE = 0.02  # a curve never this far above the floor has nothing to fit


# --- logistic fits ----------------------------------------------------------------------
def window(epochs: int) -> int:
    """Epochs in the late window: the last third, at least MIN_WINDOW; 0 if too short."""
    if epochs < MIN_WINDOW:
        return 0
    return max(MIN_WINDOW, math.ceil(epochs / 3))


def logistic(epoch, plateau: float, rate: float, midpoint: float, floor: float = 0.0):
    """floor + (plateau − floor) / (1 + exp(−rate · (epoch − midpoint)))."""
    z = np.clip(-rate * (np.asarray(epoch, dtype=float) - midpoint), -60, 60)
    return floor + (plateau - floor) / (1 + np.exp(z))


@dataclass(frozen=True)
class LogisticFit:
    """A logistic fitted to one accuracy curve; `ok` says whether its plateau can be quoted."""

    plateau: float
    rate: float
    midpoint: float
    floor: float
    r2: float
    rmse: float
    plateau_half: float  # 95 % half-width of the plateau (from the fit's covariance)
    epochs: int  # points fitted
    last: float  # the curve's value at its last epoch
    problem: str  # why the fit is not ok, as a predicate of the curve ("" when it is ok)

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def gain(self) -> float:
        """What more epochs would add: plateau minus the last epoch's value."""
        return self.plateau - self.last

    def __call__(self, epoch):
        return logistic(epoch, self.plateau, self.rate, self.midpoint, self.floor)


def _starts(x: np.ndarray, y: np.ndarray, floor: float, top: float) -> list[list[float]]:
    p0 = float(np.clip(np.nanmax(y), floor + 1e-3, top))
    half = floor + (p0 - floor) / 2
    above = np.flatnonzero(y >= half)
    m0 = float(x[above[0]]) if above.size else float(x[-1])
    return [[p0, r, m] for r in (0.5, 2.0) for m in (m0, float(x[0]))]


def fit_logistic(values, floor: float, top: float = 1.0) -> LogisticFit | None:
    """Fit plateau, rate and midpoint to a curve over epochs 1, 2, …, `floor` fixed.

    Returns None when the curve has fewer than MIN_FIT_EPOCHS finite points; otherwise a fit,
    marked with the reason it is not to be trusted (failed, poor, still rising, loose)."""
    y = np.asarray(values, dtype=float)
    x = np.arange(1, len(y) + 1, dtype=float)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(y)
    if n < MIN_FIT_EPOCHS or not math.isfinite(floor):
        return None
    last = float(y[-1])
    nan = float("nan")
    if float(y.max()) - floor < NEAR_CHANCE:
        return LogisticFit(nan, nan, nan, floor, nan, nan, nan, n, last, CHANCE)

    def model(e, plateau, rate, midpoint):
        return logistic(e, plateau, rate, midpoint, floor)

    span = float(x[-1])
    lower = [floor, 1e-3, -2 * span]
    upper = [max(top, floor + 2e-3), 20.0, 4 * span]
    best = None
    for p0 in _starts(x, y, floor, top):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, cov = optimize.curve_fit(
                    model, x, y, p0=p0, bounds=(lower, upper), max_nfev=200
                )
        except (RuntimeError, ValueError):
            continue
        sse = float(((model(x, *params) - y) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, params, cov)
    if best is None:
        return LogisticFit(nan, nan, nan, floor, nan, nan, nan, n, last, FAILED)
    sse, (plateau, rate, midpoint), cov = best
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - sse / sst if sst > 0 else (1.0 if sse == 0 else float("-inf"))
    rmse = math.sqrt(sse / n)
    var = float(cov[0, 0]) if np.all(np.isfinite(cov)) else float("inf")
    half = float(sps.t.ppf(0.975, n - 3) * math.sqrt(var)) if var >= 0 else float("inf")
    late = model(x, plateau, rate, midpoint)[-window(n) :] - y[-window(n) :]
    if float(y.max()) - last > MAX_PEAK_DROP:
        problem = PEAKED
    elif r2 < GOOD_R2 and rmse > GOOD_RMSE:
        problem = POOR
    elif abs(float(late.mean())) > MAX_LATE_MISS:
        problem = MISSED
    elif plateau <= float(y.max()):
        problem = REACHED
    elif midpoint > span:
        problem = EARLY
    elif not half <= MAX_PLATEAU_HALF:
        problem = LOOSE
    else:
        problem = ""
    return LogisticFit(
        float(plateau), float(rate), float(midpoint), floor, r2, rmse, half, n, last, problem
    )
