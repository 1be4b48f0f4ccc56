"""Running a study: everything lands in the store, interrupted studies resume, data is honest."""

import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import reference
import torch
from scipy import stats

from noisebench.errors import DataUnavailable, NoisebenchError
from noisebench.noise import make_noise
from noisebench.runner import changed_share, run_study
from noisebench.store import Store
from noisebench.study import parse_study, plan
from noisebench.summary import final_table

SMALL = {
    "name": "small",
    "seeds": [0, 1],
    "levels": [0.0, 0.5],
    "train": {"epochs": 2, "batch_size": 128, "lr": 0.05},
    "max_pack": 2,
    "setups": [
        {"name": "label noise", "noise": "labels.uniform"},
        {"name": "pixel noise", "noise": "pixels.replace"},
    ],
}


def small_study(**changes):
    return parse_study({**SMALL, **changes})


def table(directory: Path) -> list[tuple]:
    with Store(directory) as store:
        return [
            (r["setup"], r["level"], r["test_acc"].mean, r["test_loss"].mean)
            for r in final_table(store)
        ]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    run_study(small_study(), out, dataset="mnist-sample")
    return out


def test_a_finished_study_stores_every_run_and_epoch(finished):
    with Store(finished) as store:
        runs = store.runs()
        assert len(runs) == 6 and {r["status"] for r in runs} == {"done"}
        assert len(store.epochs()) == 6 * 2
        meta = store.meta()
    assert meta["dataset"] == "mnist-sample" and meta["dataset_fallback"] is False
    assert meta["study"]["name"] == "small" and meta["train_size"] == 4000
    lines = (finished / "results.csv").read_text().splitlines()
    assert lines[0].startswith("setup,noise,level,seed,status,run_id,epoch,train_loss")
    assert len(lines) == 1 + 6 * 2
    assert not (finished / "checkpoints").exists()


def test_label_noise_runs_keep_which_examples_were_changed(finished):
    with Store(finished) as store:
        run = next(r for r in store.runs() if r["setup"] == "label noise")
        picked = store.array(run["run_id"], "label_picked")
        original = store.array(run["run_id"], "label_original")
        examples = store.array("study", "examples/pixel noise")
    assert len(picked) == len(original) == 2000
    assert examples.shape == (2, 8, 784)
    assert (examples[0] != examples[1]).mean() > 0.05  # level 0.5 visibly differs from clean


def test_the_stored_assigned_labels_are_the_labels_the_run_trained_on(finished, sample_data):
    """label_picked, label_original and label_assigned rebuild the run's training labels:
    plain torch trained on them (tests/reference.py) records the run's stored numbers."""
    with Store(finished) as store:
        run = next(r for r in store.runs() if r["setup"] == "label noise" and r["seed"] == 0)
        arrays = {
            k: store.array(run["run_id"], f"label_{k}") for k in ("picked", "original", "assigned")
        }
        stored = [e for e in store.epochs() if e["run_id"] == run["run_id"]]
    picked = torch.from_numpy(arrays["picked"]).long()
    assigned = torch.from_numpy(arrays["assigned"]).long()
    clean = sample_data.train_y
    assert torch.equal(torch.from_numpy(arrays["original"]).long(), clean[picked])
    kept = int((assigned == clean[picked]).sum())  # uniform noise keeps the label 1 time in 10
    assert stats.binomtest(kept, len(picked), 0.1).pvalue > 1e-4
    labels = clean.clone()
    labels[picked] = assigned
    spec = next(r for r in plan(small_study()) if r.run_id == run["run_id"])
    expected = reference.train_run(spec, sample_data, labels)
    on_clean_labels = reference.train_run(spec, sample_data)
    assert len(stored) == len(expected) == 2
    for mine, theirs, clean_run in zip(stored, expected, on_clean_labels, strict=True):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert mine["train_acc"] == theirs["train_acc"] != clean_run["train_acc"]
        assert mine["test_acc"] == theirs["test_acc"]


def test_changed_share_counts_the_replaced_pixels_whose_value_changes(small_data):
    def images(value: int):
        return replace(small_data, train_x=torch.full_like(small_data.train_x, value))

    n = 200 * 784
    salt_pepper = make_noise("pixels.saltpepper", {"salt": 0.3})  # at level 1: every pixel
    for value, changes in ((0, 0.3), (255, 0.7)):  # black: only salt; white: only pepper
        low, high = stats.binom.interval(1 - 1e-4, n, changes)
        assert low / n <= changed_share(salt_pepper, images(value), samples=200) <= high / n
    from_data = make_noise("pixels.replace")  # values drawn from the training pixels
    from_data.fit(images(0).train_x)
    assert changed_share(from_data, images(0), samples=200) == 0.0


def test_a_study_stores_the_share_of_replaced_pixels_that_change(finished, sample_data):
    """pixels.replace draws values from the training set's pixels: a pixel of value v changes
    unless the draw is v, so the share is 1 − Σ_v q_v·p_v (q: the 2,000 measured images,
    p: all training images)."""
    with Store(finished) as store:
        shares = store.meta()["changed_share"]
    assert set(shares) == {"pixel noise"}
    measured = np.bincount(sample_data.train_x[:2000].numpy().ravel(), minlength=256)
    every = np.bincount(sample_data.train_x.numpy().ravel(), minlength=256)
    expected = 1 - (measured / measured.sum()) @ (every / every.sum())
    assert shares["pixel noise"] == pytest.approx(expected, abs=3e-3)  # 1.6 M draws: σ ≈ 4e-4


def test_summary_puts_the_clean_baseline_at_level_zero_of_every_setup(finished):
    rows = table(finished)
    assert [(s, lv) for s, lv, *_ in rows] == [
        ("label noise", 0.0),
        ("label noise", 0.5),
        ("pixel noise", 0.0),
        ("pixel noise", 0.5),
    ]
    assert rows[0][2:] == rows[2][2:]


def test_rerunning_into_a_finished_directory_trains_nothing(finished):
    with Store(finished) as store:
        stamps = {r["run_id"]: r["finished_at"] for r in store.runs()}
    run_study(small_study(), finished, dataset="mnist-sample")
    with Store(finished) as store:
        assert {r["run_id"]: r["finished_at"] for r in store.runs()} == stamps


def test_an_interrupted_study_resumes_to_the_same_table(finished, tmp_path):
    out = tmp_path / "interrupted"

    def interrupt_in_second_pack(done: int, total: int, _text: str) -> None:
        if done > total * 0.45:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(small_study(), out, dataset="mnist-sample", progress=interrupt_in_second_pack)
    with Store(out) as store:
        statuses = [r["status"] for r in store.runs()]
        assert statuses.count("done") == 2 and statuses.count("pending") == 4
        first_done = {r["run_id"]: r["finished_at"] for r in store.runs() if r["status"] == "done"}
    run_study(small_study(), out, dataset="mnist-sample")
    with Store(out) as store:
        after = {r["run_id"]: r["finished_at"] for r in store.runs()}
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert all(after[k] == v for k, v in first_done.items())
    assert table(out) == table(finished)


def test_a_different_study_cannot_write_into_existing_results(finished):
    before = (finished / "results.sqlite").stat().st_mtime
    with pytest.raises(NoisebenchError, match="different study"):
        run_study(small_study(seeds=[7]), finished, dataset="mnist-sample")
    assert (finished / "results.sqlite").stat().st_mtime == before


@pytest.mark.usefixtures("isolated_data_env")
def test_default_dataset_falls_back_to_the_sample_loudly(tmp_path):
    warnings = []
    study = small_study(seeds=[0], levels=[0.0], train={"epochs": 1})
    run_study(study, tmp_path / "fb", warn=warnings.append)
    assert len(warnings) == 1 and "FALLING BACK to 'mnist-sample'" in warnings[0]
    with Store(tmp_path / "fb") as store:
        meta = store.meta()
    assert meta["dataset"] == "mnist-sample" and meta["dataset_fallback"] is True
    assert meta["dataset_requested"] == "mnist"


@pytest.mark.usefixtures("isolated_data_env")
def test_a_named_dataset_never_falls_back_and_nothing_is_written(tmp_path):
    with pytest.raises(DataUnavailable, match="'mnist' is not available offline"):
        run_study(small_study(), tmp_path / "named", dataset="mnist")
    assert not (tmp_path / "named").exists()


def test_a_diverged_run_is_stored_as_diverged(tmp_path):
    study = small_study(seeds=[0], levels=[0.0], train={"epochs": 2, "lr": 1e6, "momentum": 0.99})
    run_study(study, tmp_path / "div", dataset="mnist-sample")
    with Store(tmp_path / "div") as store:
        assert [r["status"] for r in store.runs()] == ["diverged"]


@pytest.mark.slow
def test_one_epoch_study_on_full_fashion_mnist(tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    study = small_study(seeds=[0], levels=[0.0, 0.5], train={"epochs": 1, "batch_size": 64})
    run_study(study, tmp_path / "fm", dataset="fashion-mnist")
    with Store(tmp_path / "fm") as store:
        meta = store.meta()
        rows = {(r["setup"], r["level"]): r["test_acc"].mean for r in final_table(store)}
    assert meta["train_size"] == 60000 and meta["test_size"] == 10000
    assert rows[("label noise", 0.0)] > 0.75
    assert rows[("pixel noise", 0.5)] < rows[("pixel noise", 0.0)]
    assert len(plan(study)) == 3


def test_the_store_is_plain_sqlite(finished):
    db = sqlite3.connect(finished / "results.sqlite")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "runs", "epochs", "arrays"} <= tables


def test_reading_results_writes_nothing(finished, tmp_path):
    import hashlib
    import shutil

    from noisebench import Results

    study = tmp_path / "copy"
    shutil.copytree(finished, study)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in study.iterdir()}
    results = Results(study)
    assert len(results.summary()) == 4 and not results.metrics().empty
    results.plot("final_accuracy")
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in study.iterdir()}
    assert after == before  # no schema, no journal, no new file


def test_a_store_from_before_named_metrics_still_reads(finished, tmp_path):
    import shutil

    from noisebench import Results

    shutil.copytree(finished, tmp_path / "old")
    db = sqlite3.connect(tmp_path / "old" / "results.sqlite")
    db.execute("DROP TABLE metrics")
    db.commit()
    db.close()
    results = Results(tmp_path / "old")
    assert results.metrics().empty and len(results.summary()) == 4
    results.report()  # the report leaves out what it has no numbers for
    assert (tmp_path / "old" / "report.html").is_file()
