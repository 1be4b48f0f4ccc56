"""The label-issues report section from hand-made frames: base rates beside every rate, paired
t-intervals across seeds, no claim from one seed."""

import math

import pandas as pd
import pytest
from scipy import stats

from noisebench.report.label_issues_section import label_issues_section, mean_ci


def frames(seeds: list[int], gain: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One uniform-noise run per seed; out-of-sample F1 = in-sample F1 + gain[seed]."""
    runs = pd.DataFrame(
        {"run_id": [f"r{s}" for s in seeds], "setup": "uniform", "level": 0.5, "seed": seeds}
    )
    rows = []
    for s, g in zip(seeds, gain, strict=True):
        for prefix, f1 in (("issues_", 0.5), ("cv_issues_", 0.5 + g)):
            values = {
                "base_rate": 0.45,
                "prune_by_noise_rate_precision": 0.8,
                "prune_by_noise_rate_recall": 0.7,
                "prune_by_noise_rate_flagged_share": 0.4,
                "prune_by_noise_rate_f1": f1,
                "self_confidence_auroc": 0.9,
                "noise_matrix_mae": 0.02,
                "precision": 0.8,  # the name kept from before cleanlab: not in the table
            }
            rows += [(f"r{s}", 0, prefix + k, v) for k, v in values.items()]
        rows.append((f"r{s}", 1, "issues_precision", 0.1))  # not after training: ignored
    return runs, pd.DataFrame(rows, columns=["run_id", "epoch", "name", "value"])


def test_three_seeds_give_a_paired_t_interval_of_the_out_of_sample_gain():
    section = label_issues_section(*frames([0, 1, 2], [0.10, 0.12, 0.14]))
    text = " ".join(section.paragraphs)
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3) * 100  # sd of the gains: 2 points
    assert text.startswith(
        "Under uniform at X = 50 %, out-of-sample probabilities raise the F1 of cleanlab's "
        "prune_by_noise_rate: 50% ± 0 points in sample against 62% ± 5 points out of sample "
        f"(+12 ± {half:.0f} points, paired over 3 seeds, 95 % t-interval)."
    )
    assert "with precision 80% ± 0 points, against a base rate of 45% (the share" in text
    assert "AUROC 0.90 out of sample and 0.90 in sample (chance 0.50)" in text
    # gains that straddle zero: no claim, the sentence itself says so
    unsure = label_issues_section(*frames([0, 1, 2], [0.10, -0.08, 0.01]))
    assert unsure.paragraphs[0].startswith(
        "Under uniform at X = 50 %, the data cannot tell in-sample from out-of-sample"
    )
    # each sentence carries its check: the F1 claim holds only where the paired gain is clear
    assert section.claims[0] == ("f1-uniform-0.5", True)
    assert unsure.claims[0] == ("f1-uniform-0.5", False)
    f1 = section.table.query("source == 'out-of-sample' and statistic == 'f1'")
    assert f1["mean"].item() == pytest.approx(0.62) and f1.seeds.item() == 3
    assert set(section.table.method) == {"", "prune_by_noise_rate", "self_confidence"}
    assert section.figure is not None


def test_one_seed_gives_no_interval_and_no_claim():
    section = label_issues_section(*frames([0], [0.3]))
    text = " ".join(section.paragraphs)
    assert "with one seed that is no claim either way" in text
    assert "better" not in text and "±" not in text


def test_a_study_without_label_issues_has_no_section():
    runs, metrics = frames([0], [0.0])
    assert label_issues_section(runs, metrics[~metrics.name.str.contains("issues")]) is None
    assert mean_ci(pd.Series([0.2])) == (0.2, pytest.approx(math.nan, nan_ok=True))
