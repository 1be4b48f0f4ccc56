"""The Summary's findings on synthetic stores whose truth is known.

Each store is written straight into a Store (no training): test accuracy is a chosen function
of setup, level, seed and epoch, so each test knows which findings must appear and what they
must say. Changing one stored number must change the sentence that quotes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import sql

from noisebench.report import explain, read
from noisebench.report.answer import summary
from noisebench.report.finding import Finding
from noisebench.report.render import table, title
from noisebench.report.stats import binomial_half, paired
from noisebench.report.words import verb as agreeing
from noisebench.store import Store
from noisebench.study import parse_study, plan

SETUPS = [
    {"name": "label noise", "noise": "labels.uniform"},
    {"name": "pixel noise", "noise": "pixels.replace"},
]
Accuracy = Callable[[str, float, int, int], float]  # (setup, level, seed, epoch) -> accuracy


def make_store(
    directory: Path,
    accuracy: Accuracy,
    seeds: list[int] = (0, 1, 2),
    levels: list[float] = (0.0, 0.3, 0.5, 0.7, 1.0),
    epochs: int = 10,
    dataset: str = "mnist-sample",
    setups: list[dict] = SETUPS,
) -> Path:
    study = parse_study(
        {
            "name": "synthetic",
            "seeds": list(seeds),
            "levels": list(levels),
            "train": {"epochs": epochs},
            "setups": list(setups),
        }
    )
    runs = plan(study)
    directory.mkdir(parents=True, exist_ok=True)
    with Store(directory) as store:
        store.set_meta(
            study=study.model_dump(mode="json"),
            study_name="synthetic",
            dataset=dataset,
            dataset_fallback=False,
            train_size=4000,
            test_size=1000,
            class_names=[str(i) for i in range(10)],
            changed_share={"pixel noise": 0.35},
            background_share=0.81,
        )
        store.add_pending((r.run_id, r.setup, r.noise, r.level, r.seed, r.config) for r in runs)
        for r in runs:
            rows = [
                {
                    "epoch": e,
                    "train_loss": 1.0,
                    "train_acc": 0.5,
                    "test_loss": 0.3 + (2.0 if r.setup == "label noise" else 1.0) * r.level,
                    "test_acc": accuracy(r.setup, r.level, r.seed, e),
                    "test_conf": 0.9 - 0.9 * r.level if r.setup == "label noise" else 0.9,
                    "wall_s": 0.1,
                }
                for e in range(1, epochs + 1)
            ]
            store.finish_run(r.run_id, "done", rows, {}, 0.0, len(runs))
    return directory


def findings(directory: Path) -> dict[str, Finding]:
    with Store.open_existing(directory, readonly=True) as store:
        found = summary(read(store))
    keys = [f.key for f in found]
    assert len(keys) == len(set(keys)), keys
    return {f.key: f for f in found}


def texts(directory: Path) -> list[str]:
    with Store.open_existing(directory, readonly=True) as store:
        return explain(read(store))


def clean_falls(base_label: float, base_pixel: float) -> Accuracy:
    """Accuracy 0.9 clean, falling linearly to chance at X = 100 %; the seed moves both setups
    alike (same seed, same initialisation), plus a small per-setup wobble."""

    def acc(setup: str, level: float, seed: int, epoch: int) -> float:
        if level == 0:
            return 0.9 + 0.01 * seed
        if level == 1.0:
            return 0.1 + 0.004 * (seed - 1)
        base = base_label if setup == "label noise" else base_pixel
        wobble = 0.002 * ((seed * 7 + (setup == "label noise")) % 3 - 1)
        return base - 0.2 * (level - 0.5) + 0.01 * seed + wobble

    return acc


# --- the headline comparison ----------------------------------------------------------------
def test_clear_difference_with_three_seeds_names_the_worse_setup(tmp_path):
    found = findings(make_store(tmp_path, clean_falls(0.60, 0.80)))
    assert found["values-last"].text == (
        "At X = 50 %, the last epoch's test accuracy is 61.0 % under label noise and 81.0 % "
        "under pixel noise."
    )
    verdict = found["compare-last"]
    assert verdict.holds
    assert verdict.text.startswith("Label noise costs 20.0 ± ")
    assert "points more accuracy than pixel noise there (paired by seed, 95 % interval)" in (
        verdict.text
    )
    assert found["compare-levels"].text == (
        "Over the shared noisy levels after the last epoch, label noise costs clearly more at "
        "X = 30–70 % and the data cannot tell at X = 100 %."
    )
    assert found["compare-epochs"].text == (
        "Label noise costs clearly more at X = 50 % at every epoch from 1 on."
    )


def test_no_difference_is_said_as_the_data_cannot_tell(tmp_path):
    found = findings(make_store(tmp_path, clean_falls(0.70, 0.70)))
    verdict = found["compare-last"]
    assert not verdict.holds
    assert verdict.text.startswith("The data cannot tell which setup costs more accuracy there")
    assert "costs clearly more" not in " ".join(texts(tmp_path))
    assert found["compare-epochs"].text.startswith("At no stretch of epochs up to epoch 10")


def test_one_seed_mentions_no_interval_and_small_gaps_are_no_difference(tmp_path):
    directory = make_store(tmp_path, clean_falls(0.70, 0.72), seeds=[0])
    every = " ".join(texts(directory))
    assert "±" not in every and "interval" not in every.replace("no intervals", "")
    assert "CI" not in every
    verdict = findings(directory)["compare-last"]
    error = binomial_half(0.7, 1000) * 2**0.5
    assert not verdict.holds
    assert f"within the test set's sampling error of about {error * 100:.1f} points" in (
        verdict.text
    )
    assert "With one seed there are no intervals" in every


def test_one_seed_gap_beyond_the_binomial_error_is_a_difference(tmp_path):
    directory = make_store(tmp_path, clean_falls(0.60, 0.80), seeds=[0])
    verdict = findings(directory)["compare-last"]
    assert verdict.holds and verdict.text.startswith("Label noise costs 19.8 points more")


def test_two_levels_give_no_slopes_fits_or_level_ranges(tmp_path):
    directory = make_store(tmp_path, clean_falls(0.60, 0.80), levels=[0.0, 0.5])
    found = findings(directory)
    assert "compare-levels" not in found
    every = " ".join(texts(directory))
    for word in ("per 10 %", "steepest", "fastest", "levels off", "slope"):
        assert word not in every


# --- training length --------------------------------------------------------------------
def peak_then_fall(setup: str, level: float, seed: int, epoch: int) -> float:
    """Label noise rises to 0.87 at epoch 5 and falls to 0.57 by epoch 20; pixel noise climbs
    steadily from 0.80 to 0.90; seeds move both alike."""
    if level == 0:
        return 0.92 + 0.005 * seed
    if level == 1.0:
        return 0.10
    if setup == "label noise":
        curve = 0.67 + 0.04 * epoch if epoch <= 5 else 0.87 - 0.02 * (epoch - 5)
    else:
        curve = 0.80 + 0.1 * (epoch - 1) / 19
    return (
        curve - 0.2 * (level - 0.5) + 0.004 * seed + 0.001 * (seed % 2) * (setup == "label noise")
    )


def test_peak_then_fall_is_reported_from_the_mean_curve(tmp_path):
    directory = make_store(tmp_path, peak_then_fall, epochs=20)
    found = findings(directory)
    peak = found["peak-label noise"]
    assert peak.holds
    assert peak.text.startswith(
        "Under label noise at X = 50 %, mean test accuracy peaks at 87.4 % at epoch 5, then "
        "falls by 30.0 points to the last epoch."
    )
    assert found["peak-pixel noise"].text == (
        "Under pixel noise at X = 50 %, mean test accuracy is highest at the last epoch "
        "measured, 90.4 %; these epochs show no peak."
    )
    over = found["compare-epochs"]
    assert over.text.startswith("Which setup costs more at X = 50 % changes with training length")
    # label noise starts lower (epochs 1-3), overtakes (4-6), then falls below for good
    assert over.text.endswith(
        "label noise costs clearly more at epochs 1–3 and 8–20, pixel noise at epochs 4–6."
    )


@pytest.mark.parametrize("final, memorises", [(0.05, False), (0.60, True)])
def test_memorising_the_noisy_labels_needs_more_than_a_random_guess(tmp_path, final, memorises):
    """fit_noisy rises clearly after the peak in both stores; only above chance (10 %) is it
    called memorising."""
    directory = make_store(tmp_path, peak_then_fall, epochs=20)
    for epoch in range(1, 21):
        share = 0.02 + (final - 0.02) * max(0, epoch - 5) / 15
        sql(
            directory,
            "INSERT INTO metrics SELECT run_id, ?, 'fit_noisy', ? + 0.001 * seed FROM runs "
            "WHERE setup = 'label noise' AND level = 0.5",
            epoch,
            share,
        )
    text = findings(directory)["memorising"].text
    assert ("the network memorises the noisy labels after its peak" in text) == memorises
    assert ("has not memorised the noisy labels" in text) != memorises


def test_a_peak_within_the_spread_is_not_called_a_fall(tmp_path):
    def flat(setup, level, seed, epoch):
        return 0.8 + (0.004 if epoch == 4 else 0.0) + 0.01 * ((seed * 5 + epoch * 3) % 7 - 3)

    found = findings(make_store(tmp_path, flat))
    peak = found["peak-label noise"]
    assert not peak.holds and "the data cannot tell a fall after the peak" in peak.text


# --- X = 100 % and the mechanism ------------------------------------------------------------
def test_random_labels_at_chance_and_above_chance(tmp_path):
    at_chance = findings(make_store(tmp_path / "a", clean_falls(0.6, 0.8)))
    assert at_chance["at-chance"].holds
    assert at_chance["at-chance"].text.startswith(
        "Test accuracy there cannot be told from chance (10.0 %)"
    )
    assert "learns the true pattern" not in at_chance["no-information"].text

    def above(setup, level, seed, epoch):
        return (
            0.4 + 0.01 * seed if level == 1.0 else clean_falls(0.6, 0.8)(setup, level, seed, epoch)
        )

    found = findings(make_store(tmp_path / "b", above))
    assert not found["at-chance"].holds
    assert found["at-chance"].text.endswith(
        "by guessing: clearly above chance under label noise and above chance under pixel noise."
    )


def test_background_share_is_the_training_sets_and_mostly_means_more_than_half(tmp_path):
    directory = make_store(tmp_path, clean_falls(0.6, 0.8))
    assert findings(directory)["background"].text == (
        "81.0 % of the training images' pixels are background (exactly 0), so a replacement "
        "drawn from those pixels is mostly background too: only 35.0 % of replaced pixels "
        "change value."
    )
    sql(directory, "UPDATE meta SET value = '0.471' WHERE key = 'background_share'")
    text = findings(directory)["background"].text
    assert text.startswith("47.1 %") and "mostly" not in text


def test_confidence_is_compared_with_the_share_of_correct_labels(tmp_path):
    text = findings(make_store(tmp_path, clean_falls(0.6, 0.8)))["label-confidence"].text
    # labels.uniform at X = 50 %: 1 - 0.5 * 9/10 = 55 % of the labels are right
    assert text == (
        "At X = 50 %, the mean test confidence of the models trained with label noise, 45.0 %, "
        "is below the 55.0 % of training labels that are correct."
    )


# --- numbers follow the store; no contradictions ------------------------------------------
def test_changing_one_stored_number_changes_the_sentence(tmp_path):
    directory = make_store(tmp_path, clean_falls(0.60, 0.80))
    before = findings(directory)["values-last"].text
    sql(
        directory,
        "UPDATE epochs SET test_acc = test_acc + 0.09 WHERE epoch = 10 AND run_id IN"
        " (SELECT run_id FROM runs WHERE setup = 'label noise' AND level = 0.5 AND seed = 0)",
    )
    after = findings(directory)["values-last"].text
    assert "61.0 % under label noise" in before and "64.0 % under label noise" in after


def test_the_data_scope_says_sample_and_full_data_plainly(tmp_path):
    sample = findings(make_store(tmp_path / "s", clean_falls(0.6, 0.8)))["data"].text
    assert sample.startswith("This study ran on mnist-sample: 5,000 MNIST digits")
    full = findings(make_store(tmp_path / "f", clean_falls(0.6, 0.8), dataset="fashion-mnist"))
    assert full["data"].text == (
        "This study ran on fashion-mnist, with 4,000 training and 1,000 test images."
    )


@pytest.mark.parametrize("seeds", [(0, 1, 2), (0,)])
@pytest.mark.parametrize(
    "accuracy", [clean_falls(0.6, 0.8), clean_falls(0.7, 0.7), clean_falls(0.8, 0.6)]
)
def test_no_summary_contradicts_itself(tmp_path, accuracy, seeds):
    directory = make_store(tmp_path, accuracy, seeds=seeds)
    found = findings(directory)
    verdict, levels = found["compare-last"], found["compare-levels"].text
    over_epochs = found["compare-epochs"].text
    # the last epoch's verdict and the epoch-by-epoch one agree about the last epoch
    assert verdict.holds != over_epochs.startswith("At no stretch of epochs")
    if verdict.holds:
        worse = verdict.text.split(" costs ")[0].lower()
        other = "pixel noise" if worse == "label noise" else "label noise"
        assert f"{worse} costs clearly more at X = 30–70 %" in levels
        assert f"{other} costs clearly more" not in levels
    else:
        assert "costs clearly more" not in levels or "50" not in levels
    every = texts(directory)
    assert 5 <= sum(t.count(". ") + 1 for t in every) <= 20
    for sentence in every:
        assert len(sentence.split()) <= 45, sentence


def test_paired_difference_uses_the_seed_pairing():
    import pandas as pd

    a = pd.Series([0.80, 0.85, 0.90], index=[0, 1, 2])
    b = a - 0.02  # unpaired, the spread of 5 points would hide a 2-point gap
    d = paired(a, b, 1000)
    assert d.clear and abs(d.mean - 0.02) < 1e-12 and d.half < 1e-9
    assert re.match(r"^\d", f"{d.binomial * 100:.1f}")


def test_no_line_is_drawn_across_a_level_that_was_not_measured(tmp_path):
    import numpy as np

    from noisebench.report import load
    from noisebench.report.figures import final_vs_level

    directory = make_store(tmp_path, clean_falls(0.6, 0.8))
    where = "SELECT run_id FROM runs WHERE setup = 'label noise' AND level = 0.5"
    sql(directory, f"DELETE FROM epochs WHERE run_id IN ({where})")
    sql(directory, f"UPDATE runs SET status = 'pending' WHERE run_id IN ({where})")
    with Store.open_existing(directory, readonly=True) as store:
        fig = final_vs_level(load(store, directory), "test_acc")
    label_line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "label noise")
    x, y = label_line.get_xdata(), np.asarray(label_line.get_ydata(), dtype=float)
    assert list(x) == [0, 30, 50, 70, 100]
    assert np.isnan(y[2]) and np.isfinite(y[[0, 1, 3, 4]]).all()
    # X = 50 % is not shared any more: the headline moves to the nearest shared level
    assert findings(directory)["values-last"].text.startswith("At X = 30 %")


def test_noisy_copies_are_written_as_copies_in_the_title_and_the_table(tmp_path):
    diluted = {"name": "diluted labels", "noise": "labels.dilution", "levels": [0, 1, 2, 5]}
    directory = make_store(tmp_path, lambda *_: 0.8, setups=[*SETUPS, diluted])
    with Store.open_existing(directory, readonly=True) as store:
        frames = read(store)
    assert title(frames)[1] == "X = 0–100 %, 0–5 noisy copies, 3 seeds, 10 epochs, on mnist-sample"
    levels = [row[1] for row in table(frames)[1] if row[0] == "diluted labels"]
    assert levels == ["0 copies", "1 copy", "2 copies", "5 copies"]


FOUR_SETUPS = SETUPS + [
    {"name": "pair labels", "noise": "labels.pairflip"},
    {"name": "gaussian pixels", "noise": "pixels.gaussian"},
]


def four_setups(pair_gap: float) -> Accuracy:
    """At X = 50 %: pair labels lowest, gaussian pixels highest; label noise sits `pair_gap`
    above pair labels (0: the same numbers, a tie)."""
    base = {"pair labels": 0.30, "label noise": 0.30 + pair_gap, "pixel noise": 0.6}
    base["gaussian pixels"] = 0.8

    def acc(setup: str, level: float, seed: int, epoch: int) -> float:
        if level == 0:
            return 0.9 + 0.01 * seed
        wobble = 0.004 * ((seed + len(setup)) % 3 - 1)
        return base[setup] + 0.01 * seed + wobble

    return acc


def test_more_than_two_setups_are_ranked_lowest_and_highest_with_ties_named(tmp_path):
    levels = (0.0, 0.5)
    apart = make_store(tmp_path / "a", four_setups(0.2), levels=levels, setups=FOUR_SETUPS)
    rank = findings(apart)["ranking"]
    assert rank.holds
    assert rank.text == (
        "Of the 4 setups at X = 50 %, pair labels leave the lowest last-epoch test accuracy "
        "(31.0 %) and gaussian pixels (81.0 %) the highest. The paired check over 3 seeds tells "
        "the lowest apart from 3 of the other 3 setups and the highest from 3."
    )
    tied = make_store(tmp_path / "t", four_setups(0.0), levels=levels, setups=FOUR_SETUPS)
    assert "tells the lowest apart from 2 of the other 3 setups" in findings(tied)["ranking"].text
    # one seed and a 1-point spread on 1,000 test images: not even the ends are told apart
    flat = make_store(
        tmp_path / "f",
        lambda setup, level, seed, epoch: 0.9 if level == 0 else 0.5 + 0.003 * len(setup),
        seeds=[0],
        levels=levels,
        setups=FOUR_SETUPS,
    )
    rank = findings(flat)["ranking"]
    assert not rank.holds
    assert rank.text.startswith(
        "Of the 4 setups at X = 50 %, the paired check (one seed: beyond the test set's "
        "sampling error) cannot tell even the lowest"
    )
    # two setups: the headline comparison says it all, no ranking
    two = make_store(tmp_path / "2", four_setups(0.2), levels=levels)
    assert "ranking" not in findings(two)


@pytest.mark.parametrize(
    ("name", "verb"),
    [
        ("label noise", "costs"),
        ("uniform labels", "cost"),
        ("pair flip", "costs"),
        ("class bias", "costs"),
    ],
)
def test_setup_names_get_the_verb_that_agrees_with_them(name, verb):
    assert agreeing(name, "costs", "cost") == verb


def test_symmetric_noise_that_excludes_the_true_label_is_described_so():
    from noisebench.report.words import noise_words

    assert "from the other 9 classes, once" in noise_words(
        "labels.uniform", {"exclude_true": True}, 10
    )
    assert "(sometimes the true one again)" in noise_words("labels.uniform", {}, 10)
