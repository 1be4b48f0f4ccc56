"""Curve fits in the report: late-epoch loss slopes, logistic accuracy fits, their sentences and
their figure.

The maths is checked on synthetic series with known answers. The report side uses one small
real study (mnist-sample, 2 seeds, X in {0, 90 %} label noise, 6 epochs), trained once per
module; tests that need particular curves copy its store and rewrite epochs with SQL.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from helpers import copy_store, sql
from matplotlib.figure import Figure

from noisebench.report import explain, load, write_report
from noisebench.report.figures import catalogue
from noisebench.report.fitplot import fits_figure
from noisebench.report.fits import (
    CHANCE,
    EARLY,
    PEAKED,
    POOR,
    fit_logistic,
    late_slope,
    late_slopes,
    logistic,
    slope,
    window,
)
from noisebench.results import Results
from noisebench.runner import run_study
from noisebench.store import DB_NAME, Store
from noisebench.study import parse_study

SMALL = {
    "name": "fits",
    "seeds": [0, 1],
    "levels": [0.0, 0.9],
    "train": {"epochs": 6, "batch_size": 256, "lr": 0.05},
    "setups": [{"name": "label noise", "noise": "labels.uniform"}],
}
NOISY = "SELECT run_id FROM runs WHERE setup = 'label noise' AND level = 0.9"
SEED = "(SELECT seed FROM runs r WHERE r.run_id = epochs.run_id)"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fits")
    run_study(parse_study(SMALL), out, dataset="mnist-sample", warn=lambda _: None)
    return out


def data_of(directory: Path):
    with Store.open_existing(directory) as store:
        return load(store, directory)


def with_phrase(texts: list[str], fragment: str) -> list[str]:
    return [s for s in texts if fragment in s]


# --- the maths ----------------------------------------------------------------------------------
def test_slope_of_a_rising_or_falling_series_is_recovered():
    epochs = np.arange(1, 11)
    noise = np.random.default_rng(0).normal(0, 0.002, size=10)
    assert slope(2.0 + 0.05 * epochs + noise) == pytest.approx(0.05, abs=0.002)
    assert slope(1.0 - 0.02 * epochs + noise) == pytest.approx(-0.02, abs=0.002)
    assert slope([1.0, 1.0, 1.0]) == 0
    assert math.isnan(slope([1.0, float("nan"), 2.0]))  # fewer than 3 finite points

    # the late window: the last third, at least 3 epochs; each seed's own last finite epochs
    assert [window(n) for n in (2, 3, 6, 9, 12, 30)] == [0, 3, 3, 3, 4, 10]
    curves = np.array(
        [
            [9.0, 5.0, 1.0, 1.1, 1.2, 1.3],  # falls early, rises by 0.1 late
            [9.0, 5.0, 1.0, 0.9, 0.8, 0.7],  # keeps falling by 0.1
            [9.0, 1.0, 1.2, 1.4, np.nan, np.nan],  # diverged after epoch 4: its last 3 finite
        ]
    )
    assert late_slopes(curves, 3) == pytest.approx([0.1, -0.1, 0.2])


def test_late_slopes_are_estimated_over_seeds(study_dir):
    st = data_of(study_dir).stats[("label noise", 0.9)]
    st.curves["train_loss"] = np.array([[3, 2, 1.6, 1.5, 1.4, 1.3], [3, 2, 1.7, 1.6, 1.5, 1.4]])
    st.curves["test_loss"] = np.array([[2, 1, 1.1, 1.2, 1.3, 1.4], [2, 1, 1.2, 1.3, 1.4, 1.5]])
    s = late_slope(st, 3)
    assert s.train.mean == pytest.approx(-0.1) and s.test.mean == pytest.approx(0.1)
    assert s.overfitting and s.leaning and s.window == 3


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


# --- the sentences ------------------------------------------------------------------------------
def rising_test_loss(directory: Path, test_step: str = "0.1") -> None:
    """At X = 90 %: train loss falls by 0.05 and test loss rises by `test_step` per epoch."""
    sql(
        directory,
        f"UPDATE epochs SET test_loss = 1 + ({test_step}) * epoch + 0.01 * {SEED},"
        f" train_loss = 2 - 0.05 * epoch + 0.001 * {SEED} WHERE run_id IN ({NOISY})",
    )


def test_rising_test_loss_with_falling_train_loss_is_called_fitting_the_noise(study_dir, tmp_path):
    directory = copy_store(study_dir, tmp_path / "rising")
    rising_test_loss(directory)
    texts = explain(data_of(directory))
    [text] = with_phrase(texts, "Over the last 3 epochs")
    assert text.startswith(
        "Over the last 3 epochs the test loss of label noise at X = 90 % rises by 0.10 nats "
        "per epoch while its train loss falls by 0.050 (95 % CIs exclude zero): the network is "
        "fitting the noise"
    )
    assert 5 <= len(texts) <= 20


def test_flat_test_loss_gives_no_overfitting_sentence(study_dir, tmp_path):
    directory = copy_store(study_dir, tmp_path / "flat")
    sql(directory, f"UPDATE epochs SET test_loss = 1 + 0.01 * {SEED}")
    texts = explain(data_of(directory))
    assert not with_phrase(texts, "fitting the noise")
    assert not with_phrase(texts, "overfitting its training set")
    [text] = with_phrase(texts, "Over the last 3 epochs")
    assert text.startswith("Over the last 3 epochs no test loss rises while its train loss falls")
    assert "steepest late test-loss slope: 0.00 nats per epoch" in text


def test_seeds_that_disagree_make_the_overfitting_sentence_uncertain(study_dir, tmp_path):
    directory = copy_store(study_dir, tmp_path / "unsure")
    sql(directory, f"UPDATE epochs SET test_loss = 1 + 0.01 * {SEED}")  # flat elsewhere
    rising_test_loss(directory, test_step=f"CASE {SEED} WHEN 0 THEN 0.1 ELSE -0.02 END")
    [text] = with_phrase(explain(data_of(directory)), "Over the last 3 epochs")
    assert "label noise at X = 90 % rises by 0.040 nats per epoch" in text
    assert text.endswith(
        "but a 95 % CI includes zero, so whether the network is fitting the noise there is "
        "uncertain."
    )


def set_test_acc(directory: Path, values: list[float]) -> None:
    with sqlite3.connect(directory / DB_NAME) as db:
        for epoch, value in enumerate(values, 1):
            db.execute(
                f"UPDATE epochs SET test_acc = ? WHERE epoch = ? AND run_id IN ({NOISY})",
                (value, epoch),
            )


def test_a_good_logistic_fit_reports_its_plateau(study_dir, tmp_path):
    directory = copy_store(study_dir, tmp_path / "plateau")
    curve = logistic(np.arange(1, 7), 0.8, 1.0, 3.0, 0.1)  # ends at 76.7 %, levels off at 80
    set_test_acc(directory, list(curve))
    [text] = with_phrase(explain(data_of(directory)), "logistic fitted")
    assert text.startswith(
        "A logistic fitted to the mean test-accuracy curve of label noise at X = 90 % levels "
        "off at 80.0 %"
    )
    assert "3.3 points above the last epoch's 76.7 %: more epochs would still help there" in text


def test_a_curve_that_peaks_and_falls_gets_no_plateau(study_dir, tmp_path):
    directory = copy_store(study_dir, tmp_path / "peaked")
    set_test_acc(directory, [0.3, 0.6, 0.7, 0.65, 0.6, 0.55])
    texts = explain(data_of(directory))
    assert not with_phrase(texts, "label noise at X = 90 % levels off")
    [text] = with_phrase(texts, "not fitted well enough")
    assert "label noise at X = 90 % peaks and then falls" in text


# --- the figure ---------------------------------------------------------------------------------
def dashed(fig: Figure) -> int:
    return sum(line.get_linestyle() == "--" for line in fig.axes[0].get_lines())


def test_the_fits_figure_is_in_every_report_format(study_dir, tmp_path):
    directory = copy_store(study_dir, tmp_path / "report")
    set_test_acc(directory, list(logistic(np.arange(1, 7), 0.8, 1.0, 3.0, 0.1)))
    rising_test_loss(directory)
    data = data_of(directory)
    assert "fits" in [name for name, *_ in catalogue(data)]
    paths = write_report(directory)
    png = directory / "figures" / "fits.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (directory / "figures" / "fits.svg").exists()
    assert 'id="fig-fits"' in paths["html"].read_text()
    assert "(figures/fits.png)" in paths["md"].read_text()
    assert isinstance(Results(directory).plot("fits"), Figure)

    # the good fit at X = 90 % is drawn dashed; a curve that peaks and falls is not
    fig = fits_figure(data)
    drawn = dashed(fig)
    assert drawn >= 1
    set_test_acc(directory, [0.3, 0.6, 0.7, 0.65, 0.6, 0.55])
    assert dashed(fits_figure(data_of(directory))) == drawn - 1
    triangles = [ln for ln in fig.axes[1].get_lines() if ln.get_marker() == "v"]
    assert len(triangles) == 1 and len(triangles[0].get_xdata()) == 1  # only X = 90 %
