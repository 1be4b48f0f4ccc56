"""The experiment presets (memorization, zero-loss, sample-size) and their report sections.

Each preset is scaled down (small MLP, one or two seeds, small N) and trained on mnist-sample
through run_study, then its section is built from the store: the 99.99 % targets must really
be reached, and the sentences and tables must carry the stored numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from helpers import copy_store, sql

from noisebench.engine import parameter_count
from noisebench.engine.trainset import check_sizes
from noisebench.noise import NOISES
from noisebench.report import write_report
from noisebench.report.experiment_text import buyback, seconds_text
from noisebench.report.experiments import (
    SECTIONS,
    early_stopping_section,
    model_size_section,
    sample_size_section,
    small_set_section,
    zero_loss_section,
)
from noisebench.report.frames import read
from noisebench.report.stats import paired
from noisebench.report.words import acc
from noisebench.runner import run_study
from noisebench.store import Store
from noisebench.study import Study, load_preset, plan, preset_names
from noisebench.summary import Estimate

SMALL = {"hidden": [256]}
FAST = {"optimizer": "adam", "lr": 0.003, "batch_size": 32}


def scaled(name: str, **changes) -> Study:
    """A shipped preset with some fields replaced, validated again."""
    data = load_preset(name).model_dump() | changes
    return Study.model_validate(data)


def trained(tmp_path_factory, name: str, study: Study):
    out = tmp_path_factory.mktemp(name)
    run_study(study, out, dataset="mnist-sample", warn=lambda _: None)
    with Store.open_existing(out) as store:
        return out, read(store), store.runs(), store.metrics()


def after(metrics, name: str) -> dict[str, float]:
    """run_id -> the after-training value of `name`."""
    return {m["run_id"]: m["value"] for m in metrics if m["name"] == name and m["epoch"] == 0}


def last_epoch_values(metrics, name: str) -> dict[str, float]:
    last: dict[str, tuple[int, float]] = {}
    for m in metrics:
        if m["name"] == name and m["epoch"] > 0:
            if m["run_id"] not in last or m["epoch"] > last[m["run_id"]][0]:
                last[m["run_id"]] = (m["epoch"], m["value"])
    return {run: value for run, (_, value) in last.items()}


def last_test_acc(data) -> dict[str, float]:
    """run_id -> test accuracy at its last epoch (the epochs table, as the report reads it)."""
    rows = data.values
    acc = rows[(rows.metric == "test_acc") & (rows.epoch > 0)].sort_values("epoch")
    return dict(zip(acc.run_id, acc.value, strict=True))


def build(builder, data, folder: Path):
    section = builder(data, folder)
    if section is not None:
        for figure in section.figures:
            assert figure.png.stat().st_size > 0 and figure.svg.stat().st_size > 0
    return section


# --- the presets ------------------------------------------------------------------------------
def test_the_three_presets_load_and_plan_their_sizes(sample_data):
    assert {"memorization", "zero-loss", "sample-size"} <= set(preset_names())
    assert "labels.shuffle" in NOISES
    expected = {  # (runs, training-set sizes, target)
        "memorization": (24, {100, 300, 1000, None}, 0.9999),
        "zero-loss": (6, {1000, None}, 0.9999),  # permuted + clean on 1,000; clean on all
        "sample-size": (54, {500, 1000, 1500, 2000, 3000, None}, None),
    }
    for name, (count, sizes, target) in expected.items():
        study = load_preset(name)
        runs = plan(study)
        assert study.description and len(runs) == count, name
        assert {r.train_size for r in runs} == sizes
        assert study.stop_at_train_acc == target
        check_sizes(runs, sample_data)  # every size fits mnist-sample's 400 per class
    memo = load_preset("memorization")
    assert memo.analysis.train_eval == "all"
    assert {s.noise for s in memo.setups} == {"labels.shuffle", "labels.uniform"}
    assert sorted({r.level for r in plan(load_preset("sample-size"))}) == [0.0, 0.5, 0.8]


# --- memorisation -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    study = scaled(
        "memorization",
        seeds=[0],
        train_sizes=[100, 200],
        model=SMALL,
        train=FAST | {"epochs": 40},
    )
    return trained(tmp_path_factory, "memorised", study)


def test_clean_and_random_labels_are_memorised_to_the_target(memorised):
    _, data, runs, metrics = memorised
    reached = after(metrics, "reached_target")
    last_acc = last_epoch_values(metrics, "train_clean_acc")
    stopped = after(metrics, "stopped_epoch")
    assert len(runs) == 6 and {r["setup"] for r in runs} == {
        "clean",
        "shuffled labels",
        "uniform labels",
    }
    for run in runs:
        assert reached[run["run_id"]] == 1.0, run["setup"]
        assert last_acc[run["run_id"]] >= 0.9999
        assert stopped[run["run_id"]] < 40


def test_the_memorisation_section_reports_epochs_and_chance_test_accuracy(memorised, tmp_path):
    _, data, runs, metrics = memorised
    section = build(small_set_section, data, tmp_path)
    assert section is not None and section.key == "memorisation"
    assert [f.name for f in section.figures] == ["memorisation-curves", "memorisation-epochs"]
    text = " ".join(section.paragraphs)
    stopped = after(metrics, "stopped_epoch")
    for setup in ("clean", "shuffled labels"):
        epochs = {
            r["config"]["train_size"]: stopped[r["run_id"]] for r in runs if r["setup"] == setup
        }
        label = "clean labels" if setup == "clean" else f"{setup} at X = 100 %"
        assert (
            f"With {label}, 2 of 2 runs reach 99.99 % training accuracy, in "
            f"{epochs[100]:.0f} epochs at N = 100 and {epochs[200]:.0f} at N = 200"
        ) in text
    assert "of chance (10.0 %)" in text
    # one seed: "noisy labels need more epochs at every N" cannot be confirmed by a paired check
    assert "at every N the noisy labels need more epochs" not in text
    if "times as many epochs" in text:
        assert "from one seed, which no check can confirm" in text
    assert early_stopping_section(data, tmp_path) is None
    assert sample_size_section(data, tmp_path) is None  # a target-stopped study


def test_the_report_has_the_experiment_sections(memorised):
    out, *_ = memorised
    paths = write_report(out)
    markdown = paths["md"].read_text()
    for title in ("Model size", "Fitting random labels", "Zero training loss"):
        assert title in markdown
    assert (out / "figures" / "memorisation-curves.png").exists()
    assert (out / "figures" / "zero-loss-gap.svg").exists()


def test_a_run_that_misses_the_target_is_named_and_counted(memorised, tmp_path):
    out, _, runs, _ = memorised
    copy = copy_store(out, tmp_path / "copy")
    run = next(
        r for r in runs if r["setup"] == "uniform labels" and r["config"]["train_size"] == 200
    )
    for name, value in (("reached_target", 0.0), ("train_clean_acc", 0.5)):
        update = "UPDATE metrics SET value = ? WHERE run_id = ? AND name = ?"
        sql(copy, update, value, run["run_id"], name)
    with Store.open_existing(copy) as store:
        data = read(store)
    text = " ".join(build(small_set_section, data, tmp_path / "figures").paragraphs)
    assert "With uniform labels at X = 100 %, 1 of 2 runs reach 99.99 %" in text
    assert (
        "1 run never reaches 99.99 % within 40 epochs: uniform labels at X = 100 %, N = 200 "
        "(best 50.0 %)."
    ) in text
    zero = build(zero_loss_section, data, tmp_path / "figures")
    rows = {(row[0], row[1]): row for row in zero.table_rows}
    assert rows[("uniform labels at X = 100 %", "200")][2:4] == ["0 of 1", "—"]
    # the comparison at equal N moves to the largest N where every random-label run fitted
    assert "With uniform labels at X = 100 % and N = 100, the same network" in " ".join(
        zero.paragraphs
    )


# --- zero loss --------------------------------------------------------------------------------
def test_zero_loss_reaches_the_target_and_explains_the_gap(tmp_path_factory, tmp_path):
    permuted = {"name": "permuted labels", "noise": "labels.shuffle"}  # on the study's size
    study = scaled(
        "zero-loss",
        seeds=[0],
        train_sizes=[300],
        setups=[permuted],
        model=SMALL,
        train=FAST | {"epochs": 40},
    )
    _, data, runs, metrics = trained(tmp_path_factory, "zero", study)
    last_acc = last_epoch_values(metrics, "train_clean_acc")
    assert all(last_acc[r["run_id"]] >= 0.9999 for r in runs) and len(runs) == 2
    section = build(zero_loss_section, data, tmp_path)
    assert section is not None and section.table_head[0] == "labels"
    assert [row[:3] for row in section.table_rows] == [
        ["clean labels", "300", "1 of 1"],
        ["permuted labels at X = 100 %", "300", "1 of 1"],
    ]
    final = {r["setup"]: r["run_id"] for r in runs}
    test = last_test_acc(data)
    gaps = {setup: last_acc[run] - test[run] for setup, run in final.items()}
    text = " ".join(section.paragraphs)
    assert (
        f"At N = 300, both labellings fit their training labels (at least 99.9 %), but the "
        f"train–test gap is {gaps['clean'] * 100:.1f} points with clean labels, against "
        f"{gaps['permuted labels'] * 100:.1f} points with permuted labels: the network can "
        "memorise any labelling"
    ) in text
    # every other builder: no sample-size sweep, no validation
    assert sample_size_section(data, tmp_path) is None
    assert early_stopping_section(data, tmp_path) is None


# --- sample size ------------------------------------------------------------------------------
def test_buyback_interpolates_in_log_n():
    def series(values):
        return [(n, Estimate(v, math.nan, 1)) for n, v in values]

    clean = series([(100, 0.80), (200, 0.85), (400, 0.90)])
    noisy = series([(100, 0.70), (200, 0.80), (400, 0.88)])
    found = buyback(clean, noisy)
    assert found.n0 == 200 and found.target == 0.85  # 0.90 at N = 400 is never reached
    assert found.nx == pytest.approx(200 * 2**0.625) and (found.below, found.above) == (200, 400)
    never = buyback(clean, series([(100, 0.3), (200, 0.4), (400, 0.5)]))
    assert never.n0 == 100 and never.nx is None
    assert buyback(clean, clean) is None


def test_the_sample_size_section_shows_accuracy_and_time_against_n(tmp_path_factory, tmp_path):
    study = scaled(
        "sample-size",
        seeds=[0, 1],
        levels=[0.0, 0.5],
        train_sizes=[200, 400, 800],
        train={"epochs": 3, "batch_size": 32, "lr": 0.05},
    )
    _, data, runs, metrics = trained(tmp_path_factory, "sizes", study)
    assert len(runs) == 12
    section = build(sample_size_section, data, tmp_path)
    assert section is not None and [f.name for f in section.figures] == ["sample-size"]
    text = " ".join(section.paragraphs)
    pack = {r["run_id"]: r["pack_size"] for r in runs}
    size = {r["run_id"]: r["config"]["train_size"] for r in runs}
    seconds = {}  # per run: its pack's step time per epoch over the pack's run count
    for m in metrics:
        if m["name"] == "train_s":
            seconds[m["run_id"]] = seconds.get(m["run_id"], 0.0) + m["value"] / pack[m["run_id"]]
    at_200 = [v for run, v in seconds.items() if size[run] == 200]
    assert f"Training takes {seconds_text(sum(at_200) / len(at_200))} per run at N = 200" in text
    test = last_test_acc(data)
    clean = [test[r["run_id"]] for r in runs if r["setup"] == "clean"]
    clean_200 = [
        test[r["run_id"]] for r in runs if r["setup"] == "clean" and size[r["run_id"]] == 200
    ]
    assert (
        len(clean) == 6 and f"test accuracy rises from {acc(sum(clean_200) / 2)} at N = 200" in text
    )
    assert "With uniform labels at X = 50 %" in text

    # "the accuracy lost narrows / widens with N" only as far as the paired check tells
    def by_seed(setup: str, n: int) -> pd.Series:
        return pd.Series(
            {
                r["seed"]: test[r["run_id"]]
                for r in runs
                if r["setup"] == setup and size[r["run_id"]] == n
            }
        )

    lost = [by_seed("clean", n) - by_seed("uniform labels", n) for n in (200, 800)]
    verb = {1: "widens", -1: "narrows", 0: "changes by no clear amount"}[paired(*lost[::-1]).sign]
    assert f"The test accuracy lost to uniform labels {verb} with N" in text
    # every sentence is a Finding; this one holds exactly when the paired check is clear
    found = {f.key: f for f in section.findings}
    assert found["gap-uniform labels"].holds == (paired(*lost[::-1]).sign != 0)
    assert [f.text for f in section.findings] == section.paragraphs
    assert small_set_section(data, tmp_path) is None
    assert zero_loss_section(data, tmp_path) is None


# --- early stopping ---------------------------------------------------------------------------
def test_early_stopping_stops_runs_and_tables_best_vs_last(tmp_path_factory, tmp_path):
    study = Study.model_validate(
        {
            "name": "stopping",
            "seeds": [0],
            "levels": [0.0, 0.8],
            "train_sizes": [500],
            "validation": 0.1,
            "early_stopping": {"patience": 2},
            "model": SMALL,
            "train": FAST | {"epochs": 15},
            "analysis": {"fgsm_eps": [], "label_issues": False},
            "setups": [{"name": "uniform labels", "noise": "labels.uniform"}],
        }
    )
    out, data, runs, metrics = trained(tmp_path_factory, "stopping", study)
    stopped, best = after(metrics, "stopped_epoch"), after(metrics, "best_epoch")
    assert any(v < 15 for v in stopped.values())
    section = build(early_stopping_section, data, tmp_path)
    assert section is not None and section.figures[0].name == "early-stopping-curves"
    # one seed: an epoch difference has no sampling error to beat, so no earlier/later claim
    assert section.paragraphs[-1].startswith(
        "Whether the best validation epoch comes earlier with uniform labels at X = 80 % than "
        "with clean labels, the data cannot tell (epoch "
    )
    assert not section.findings[-1].holds and section.findings[-1].key == "earlier"
    by_label = {row[0]: row for row in section.table_rows}
    with Store.open_existing(out) as store:
        epochs = store.epochs()
    for run in runs:
        label = "clean labels" if run["setup"] == "clean" else "uniform labels at X = 80 %"
        mine = [e for e in epochs if e["run_id"] == run["run_id"]]
        at_best = mine[int(best[run["run_id"]]) - 1]["test_acc"]
        assert by_label[label][2] == f"{best[run['run_id']]:.1f}"
        assert by_label[label][4] == f"{at_best * 100:.1f}"
        assert by_label[label][5] == f"{mine[-1]['test_acc'] * 100:.1f}"
    assert "Early stopping (patience 2" in section.paragraphs[0]


# --- model size, and every builder on a study without the data --------------------------------
def test_the_model_size_comes_from_the_study_and_the_dataset(memorised, tmp_path):
    _, data, *_ = memorised
    section = model_size_section(data, tmp_path)
    count = parameter_count(data.study.model, 784, 10)
    assert count == 784 * 256 + 256 + 256 * 10 + 10
    assert f"784 → 256 → 10 (ReLU) with {count:,} parameters" in section.paragraphs[0]
    assert f"{count / 200:,.0f} per training example at N = 200" in section.paragraphs[0]
    assert len(SECTIONS) == 5
