"""The report's analysis sections: memorisation, calibration, robustness, finding wrong labels
and the setups ranked, each with its figure and sentences built from the stored metrics.

One small real study (mnist-sample, 2 seeds, two label and two pixel noises, 3 epochs) is
trained once per module and reported; tests that need other numbers copy its store and
rewrite metric rows with SQL, then rebuild a section.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import copy_store, sql

from noisebench.report import read, write_report
from noisebench.report.diagnostic_text import _shifts
from noisebench.report.diagnostics import noisy_fit_section, robustness_section
from noisebench.runner import run_study
from noisebench.store import Store
from noisebench.study import parse_study
from noisebench.summary import estimate

STUDY = {
    "name": "diagnostics",
    "seeds": [0, 1],
    "levels": [0.0, 0.5, 0.8],
    "train": {"epochs": 3, "batch_size": 128, "lr": 0.05},
    "setups": [
        {"name": "uniform labels", "noise": "labels.uniform"},
        {"name": "pair labels", "noise": "labels.pairflip"},
        {"name": "replaced pixels", "noise": "pixels.replace"},
        {"name": "gaussian pixels", "noise": "pixels.gaussian"},
    ],
}
SECTIONS = {  # key -> title
    "setup-ranking": "Which noise costs the most accuracy",
    "fitting-noise": "Fitting the true pattern, then memorising the noisy labels",
    "calibration": "Calibration: does confidence match accuracy?",
    "robustness": "Robustness: adversarial vs random perturbations",
    "label-issues": "Finding the wrong labels",
}
LABEL_ONLY = ("fitting-noise", "label-issues")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("diagnostics")
    run_study(parse_study(STUDY), out, dataset="mnist-sample", warn=lambda msg: None)
    write_report(out)
    return out


def page_text(directory: Path) -> str:
    return html.unescape((directory / "report.html").read_text())


def section_html(directory: Path, key: str) -> str:
    """The HTML of one section, from its heading to the next section."""
    page = page_text(directory)
    start = page.index(f'<h2 id="{key}">')
    end = page.find("</section>", start)
    return page[start:end]


def after_training(directory: Path, setup: str, level: float, name: str) -> list[float]:
    """Each run's value of an after-training metric, straight from the store."""
    with Store.open_existing(directory) as store:
        rows = store.db.execute(
            "SELECT m.value FROM metrics m JOIN runs r USING (run_id)"
            " WHERE r.setup = ? AND r.level = ? AND m.name = ? AND m.epoch = 0",
            (setup, level, name),
        ).fetchall()
    return [r["value"] for r in rows]


def last_epoch(directory: Path, setup: str, level: float, name: str) -> list[float]:
    """Each run's value of a per-epoch metric at its last epoch, straight from the store."""
    with Store.open_existing(directory) as store:
        rows = store.db.execute(
            "SELECT m.value FROM metrics m JOIN runs r USING (run_id)"
            " WHERE r.setup = ? AND r.level = ? AND m.name = ? AND m.epoch ="
            " (SELECT MAX(epoch) FROM metrics WHERE run_id = m.run_id AND name = m.name)",
            (setup, level, name),
        ).fetchall()
    return [r["value"] for r in rows]


def ci(values: list[float]) -> str:
    e = estimate(values)
    return f"{e.mean * 100:.1f} ± {e.half * 100:.1f} %"


# --- every format ---------------------------------------------------------------------------
def test_each_section_is_in_html_and_markdown_with_its_figure(study_dir):
    page = page_text(study_dir)
    markdown = (study_dir / "report.md").read_text()
    for key, title in SECTIONS.items():
        assert f'<h2 id="{key}">{title}</h2>' in page
        assert f'<a id="{key}"></a>' in markdown and f"## {title}" in markdown
        for ext in ("png", "svg"):
            assert (study_dir / "figures" / f"{key}.{ext}").stat().st_size > 1000
        assert f'<figure id="fig-{key}">' in section_html(study_dir, key)
        assert f"(figures/{key}.png)" in markdown
        sentences = re.findall(r"<p>(.*?)</p>", section_html(study_dir, key), re.S)
        assert 2 <= len(sentences) <= 5, (key, sentences)
        for sentence in sentences:
            assert re.search(r"\d", sentence) and sentence.endswith("."), sentence
            assert sentence in markdown
    # sections come after the main figures and continue their numbering
    numbers = [int(n) for n in re.findall(r"### Figure (\d+):", markdown)]
    assert numbers == list(range(1, len(numbers) + 1))
    assert markdown.index("### Figure 1:") < markdown.index('<a id="setup-ranking">')
    assert "<table>" in section_html(study_dir, "label-issues")


def test_pdf_has_every_section_title(study_dir):
    if not shutil.which("pdftotext"):
        pytest.skip("poppler-utils (pdftotext) are not installed")
    text = subprocess.run(
        ["pdftotext", str(study_dir / "report.pdf"), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    text = " ".join(text.split())
    for title in SECTIONS.values():
        assert title in text
    figures = len(re.findall(r"### Figure \d+:", (study_dir / "report.md").read_text()))
    assert [int(n) for n in re.findall(r"Figure (\d+):", text)] == list(range(1, figures + 1))


# --- the numbers are the store's --------------------------------------------------------------
def test_robustness_sentence_quotes_the_stored_fgsm_accuracy(study_dir):
    clean = after_training(study_dir, "clean", 0.0, "fgsm@0.1")
    randsign = after_training(study_dir, "clean", 0.0, "randsign@0.1")
    assert len(clean) == 2
    text = " ".join(section_html(study_dir, "robustness").split())
    assert f"FGSM at ε = 0.1 leaves {ci(clean)}" in text
    assert f"random ±ε signs of the same size leave {ci(randsign)}" in text
    pixels = after_training(study_dir, "replaced pixels", 0.5, "fgsm@0.1")
    assert f"replaced pixels ({ci(pixels)})" in text


def test_memorisation_and_label_issue_sentences_quote_the_store(study_dir):
    noisy = last_epoch(study_dir, "uniform labels", 0.8, "fit_noisy")
    text = " ".join(section_html(study_dir, "fitting-noise").split())
    assert f"the noisy label wins for {ci(noisy)}" in text
    recall = after_training(study_dir, "uniform labels", 0.5, "issues_recall")
    text = " ".join(section_html(study_dir, "label-issues").split())
    assert f"they cover {ci(recall)} of the corrupted labels" in text


def rebuild(directory: Path, builder, tmp_path: Path):
    with Store.open_existing(directory) as store:
        return builder(read(store), tmp_path / "figures")


def test_the_epoch_the_noisy_label_overtakes_follows_the_numbers(study_dir, tmp_path):
    directory = copy_store(study_dir, tmp_path / "memorise")
    runs = "SELECT run_id FROM runs WHERE setup = 'uniform labels' AND level = 0.8"
    seed = "(SELECT seed FROM runs r WHERE r.run_id = metrics.run_id)"
    sql(
        directory,
        f"UPDATE metrics SET value = CASE WHEN epoch = 1 THEN 0.1 ELSE 0.6 END + 0.01 * {seed}"
        f" WHERE name = 'fit_noisy' AND run_id IN ({runs})",
    )
    sql(
        directory,
        f"UPDATE metrics SET value = CASE WHEN epoch = 1 THEN 0.5 ELSE 0.2 END + 0.01 * {seed}"
        f" WHERE name = 'fit_true' AND run_id IN ({runs})",
    )
    section = rebuild(directory, noisy_fit_section, tmp_path)
    first = section.paragraphs[0]
    assert first.startswith("Under uniform labels at X = 80 %, the network first fits the true")
    assert "at epoch 1 it predicts the true label for 50.5 ± 6.4 %" in first
    assert "from epoch 2 on it memorises the noise" in first
    assert (
        "the noisy label wins for 60.5 ± 6.4 % of them and the true one for 20.5 ± 6.4 %" in first
    )
    assert "(a clear difference: paired difference +40.0 ± 0.0 points over 2 seeds)" in first
    assert (tmp_path / "figures" / "fitting-noise.png").exists()


def test_noisy_and_true_fits_are_compared_seed_by_seed_not_by_overlapping_intervals(
    study_dir, tmp_path
):
    # seed 1 fits everything 30 points better than seed 0, so the two shares' own 95 % CIs
    # overlap widely, yet within every seed the noisy label wins by 5 points
    directory = copy_store(study_dir, tmp_path / "paired")
    runs = "SELECT run_id FROM runs WHERE setup = 'uniform labels' AND level = 0.8"
    seed = "(SELECT seed FROM runs r WHERE r.run_id = metrics.run_id)"
    for name, value in (("fit_noisy", 0.35), ("fit_true", 0.30)):
        sql(
            directory,
            f"UPDATE metrics SET value = {value} + 0.3 * {seed}"
            f" WHERE name = ? AND run_id IN ({runs})",
            name,
        )
    first = rebuild(directory, noisy_fit_section, tmp_path).paragraphs[0]
    assert "the noisy label wins for 50.0 ± 190.6 % of them and the true one for 45.0" in first
    assert "(a clear difference: paired difference +5.0 ± 0.0 points over 2 seeds)" in first
    # the same means with the seeds' gap reversed for one share: no longer clear
    sql(
        directory,
        f"UPDATE metrics SET value = 0.75 - 0.3 * {seed} WHERE name = 'fit_true'"
        f" AND run_id IN ({runs})",
    )
    first = rebuild(directory, noisy_fit_section, tmp_path).paragraphs[0]
    assert "(not distinguishable: paired difference" in first


def test_the_robustness_answer_follows_the_confidence_intervals(study_dir, tmp_path):
    directory = copy_store(study_dir, tmp_path / "robust")
    seed = "(SELECT seed FROM runs r WHERE r.run_id = metrics.run_id)"
    for setup, level, base in (
        ("clean", 0.0, 0.20),
        ("replaced pixels", 0.5, 0.60),  # far above the clean baseline: more robust
        ("gaussian pixels", 0.5, None),  # seed 0 above the baseline, seed 1 below
        ("uniform labels", 0.5, 0.05),  # far below: less robust
        ("pair labels", 0.5, 0.25),  # above: the opposite of less robust
    ):
        value = f"{base} + 0.002 * {seed}" if base else f"0.23 - 0.05 * {seed}"
        sql(
            directory,
            f"UPDATE metrics SET value = {value} WHERE name = 'fgsm@0.1' AND run_id IN"
            " (SELECT run_id FROM runs WHERE setup = ? AND level = ?)",
            setup,
            level,
        )
    section = rebuild(directory, robustness_section, tmp_path)
    pixels, labels = section.paragraphs[1:3]
    # each sentence is a Finding whose check is the paired difference it reports
    checks = {f.key: f.holds for f in section.findings}
    assert checks == {
        "robustness-clean": True,
        "robustness-pixels": False,
        "robustness-labels": True,
    }
    assert all(f.statistic.startswith("paired difference") for f in section.findings)
    assert pixels.startswith("Is a model trained on noisy pixels more robust to FGSM")
    assert (
        "Yes for replaced pixels (60.1 ± 1.3 %); not distinguishable for gaussian pixels" in pixels
    )
    assert (
        "after training at X = 50 %, against the clean baseline's 20.1 ± 1.3 % (paired "
        "differences over seeds, 95 % t-intervals)" in pixels
    )
    assert labels.startswith("Is one trained on noisy labels less robust? Yes for uniform labels")
    assert "(5.1 ± 1.3 %); no, more robust, for pair labels (25.1 ± 1.3 %)" in labels


# --- only what the study has ----------------------------------------------------------------
def test_a_study_without_label_noise_has_no_label_sections(tmp_path):
    study = {
        "name": "pixels-only",
        "seeds": [0],
        "levels": [0.0, 0.5],
        "train": {"epochs": 1, "batch_size": 128},
        "setups": [{"name": "replaced pixels", "noise": "pixels.replace"}],
    }
    out = run_study(parse_study(study), tmp_path / "p", dataset="mnist-sample", warn=print)
    write_report(out)
    page = page_text(out)
    for key in LABEL_ONLY + ("setup-ranking",):
        assert f'id="{key}"' not in page
        assert not (out / "figures" / f"{key}.png").exists()
    for key in ("calibration", "robustness"):
        assert f'<h2 id="{key}">' in page
    # one seed: a difference counts only beyond the attacked images' binomial sampling error
    assert "(one seed: larger than the test set's sampling error of about" in section_html(
        out, "robustness"
    )
    # one seed: no confidence interval is mentioned anywhere in the report
    text = (out / "report.md").read_text()
    mention = r"\bCIs?\b|confidence interval|t-interval|±(?!ε)"
    assert not re.search(mention, text), re.findall(rf"[^.]*(?:{mention})[^.]*", text)


def test_calibration_words_follow_the_sign_and_say_when_one_seed_cannot_tell():
    from noisebench.report.diagnostic_text import _confident
    from noisebench.summary import estimate

    assert _confident(estimate([0.13])) == "over-confident (one seed, so uncertain)"
    assert _confident(estimate([-0.2])) == "under-confident (one seed, so uncertain)"
    assert _confident(estimate([0.10, 0.12, 0.11])) == "over-confident"
    assert _confident(estimate([-0.05, 0.06])) == "neither over- nor under-confident"


@pytest.mark.parametrize(
    ("gap", "base", "above", "below"),
    [
        (0.02, 0.04, "more over-confident", "less over-confident"),  # both over-confident
        (-0.40, 0.02, "less under-confident", "under- instead of over-confident"),
        (-0.40, -0.10, "less under-confident", "more under-confident"),
        (0.05, -0.10, "over- instead of under-confident", "less over-confident"),
    ],
)
def test_a_calibration_shift_is_named_from_both_gaps(gap, base, above, below):
    assert _shifts(gap, base) == (above, below)
