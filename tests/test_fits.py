"""Logistic fits of accuracy curves over epochs (the memorisation sections quote them).

The maths is checked on synthetic series with known answers, and a fit is only `ok` (its
plateau quotable as where the curve "levels off") when it levels off above every value the
curve already reached.
"""

from __future__ import annotations

import numpy as np
import pytest

from noisebench.report.fits import CHANCE, EARLY, PEAKED, POOR, REACHED, fit_logistic, logistic


def test_logistic_fit_recovers_known_parameters():
    epochs = np.arange(1, 13)
    truth = {"plateau": 0.85, "rate": 0.9, "midpoint": 3.5}
    noise = np.random.default_rng(1).normal(0, 0.002, size=len(epochs))
    fit = fit_logistic(logistic(epochs, **truth, floor=0.1) + noise, floor=0.1)
    assert fit.ok, fit.problem
    assert fit.plateau == pytest.approx(0.85, abs=0.005)
    assert fit.rate == pytest.approx(0.9, rel=0.1)
    assert fit.midpoint == pytest.approx(3.5, abs=0.15)
    assert fit.r2 > 0.99 and fit.plateau_half < 0.01
    assert fit(epochs) == pytest.approx(logistic(epochs, **truth, floor=0.1), abs=0.005)


def test_logistic_fits_that_would_mislead_are_flagged():
    epochs = np.arange(1, 11)
    assert fit_logistic([0.2, 0.5, 0.7, 0.8], floor=0.1) is None  # too few epochs
    peaked = fit_logistic([0.2, 0.4, 0.5, 0.56, 0.56, 0.55, 0.53, 0.52, 0.5, 0.49], floor=0.1)
    assert not peaked.ok and peaked.problem == PEAKED
    early = fit_logistic(logistic(epochs[:8], 0.9, 0.4, 14.0, 0.1), floor=0.1)
    assert not early.ok and early.problem == EARLY  # still below its midpoint
    chance = 0.1 + np.random.default_rng(2).normal(0, 0.005, size=10)
    assert fit_logistic(chance, floor=0.1).problem == CHANCE  # nothing to fit
    wobbly = 0.3 + np.random.default_rng(3).normal(0, 0.03, size=10)  # no trend, just noise
    assert fit_logistic(wobbly, floor=0.1).problem in (POOR, PEAKED)


def test_a_fit_that_would_level_off_below_the_curve_is_not_quoted():
    # wobbles around 0.60 once risen: the fit's plateau lies below the 0.61 already reached
    curve = [0.2, 0.45, 0.56, 0.61, 0.59, 0.60, 0.61, 0.595]
    fit = fit_logistic(curve, floor=0.1)
    assert fit.plateau < 0.61
    assert not fit.ok and fit.problem == REACHED
