"""Finding the corrupted labels: K fold models trained as packs, cleanlab on their
out-of-sample probabilities, scored against the labels noisebench planted."""

import numpy as np
import pytest
import torch

from noisebench import Results, crossval
from noisebench.engine import train_pack
from noisebench.engine.trainset import fold_rows, fold_split
from noisebench.errors import NoisebenchError
from noisebench.store import Store
from noisebench.study import fold_runs, parse_study, plan


def study(**changes) -> dict:
    spec = {
        "name": "cv",
        "seeds": [0],
        "levels": [0.0, 0.6],
        "train": {"epochs": 4},
        "analysis": {"label_issues": "cv", "folds": 3, "fgsm_eps": [], "train_eval": 0},
        "setups": [
            {"name": "uniform", "noise": "labels.uniform"},
            {"name": "pairflip", "noise": "labels.pairflip", "levels": [0.3]},
        ],
    }
    return spec | changes


def final(results: Results, setup: str) -> dict[str, float]:
    m = results.metrics()
    m = m[(m.setup == setup) & (m.epoch == 0)]
    return dict(zip(m.name, m.value, strict=True))


# --- the fold split ---------------------------------------------------------------------------


def test_fold_split_is_stratified_and_drawn_from_the_seed_alone():
    labels = torch.tensor([0] * 50 + [1] * 31 + [2] * 9)[torch.randperm(90)]
    split = fold_split(labels, 4, 3, seed=7)
    assert torch.equal(split, fold_split(labels, 4, 3, seed=7))
    assert not torch.equal(split, fold_split(labels, 4, 3, seed=8))
    for c, n in enumerate([50, 31, 9]):  # each fold holds floor or ceil(N_c / K) of class c
        per_fold = torch.bincount(split[labels == c], minlength=4)
        assert set(per_fold.tolist()) <= {n // 4, -(-n // 4)}, (c, per_fold)
    assert set(torch.bincount(split).tolist()) <= {22, 23}  # and of all 90


def test_every_fold_model_trains_on_as_many_examples_none_of_its_own_fold():
    labels = torch.arange(103) % 10
    split = fold_split(labels, 5, 10, seed=0)
    held = []
    for k in range(5):
        trained, held_out = fold_rows(split, k, 5, seed=0)
        assert len(trained) == 103 - 21  # N less the largest fold
        assert not set(trained.tolist()) & set(held_out.tolist())
        held += held_out.tolist()
    assert sorted(held) == list(range(103))  # each example out of sample exactly once


def test_fold_models_are_extra_models_of_the_label_noise_runs_only():
    spec = parse_study(study())
    runs = plan(spec)
    folds = fold_runs(spec, runs)
    noisy = [r for r in runs if r.noise is not None]
    assert len(folds) == 3 * len(noisy) == 6
    assert {f.parent.run_id for f in folds} == {r.run_id for r in noisy}
    assert len({f.run_id for f in folds} | {r.run_id for r in runs}) == 6 + len(runs)
    assert len({f.pack_key for f in folds}) == 1  # every fold of every run: one pack
    assert fold_runs(parse_study(study(analysis={"label_issues": True})), runs) == []


def test_fold_models_are_planned_for_plain_ce_runs_only():
    spec = parse_study(study(methods=["ce", "gce", {"name": "coteaching"}]))
    runs = plan(spec)
    folds = fold_runs(spec, runs)
    assert {f.parent.method_name for f in folds} == {"ce"}
    assert len(folds) == 3 * len([r for r in runs if r.noise and r.method_name == "ce"])


def test_a_fold_models_numbers_do_not_depend_on_its_pack(small_data):
    spec = parse_study(study(seeds=[0, 1], levels=[0.5], train={"epochs": 2}))
    folds = fold_runs(spec, plan(spec))[:9]  # seeds 0 and 1 of both setups, 3 folds each
    together = train_pack(folds, small_data, analysis=spec.analysis)
    for k in (0, 4):
        (alone,) = train_pack([folds[k]], small_data, analysis=spec.analysis)
        timeless = [
            [{m: v for m, v in row.items() if not m.endswith("_s")} for row in r.epochs]
            for r in (alone, together[k])
        ]
        assert timeless[0] == timeless[1]
        for name, array in alone.arrays.items():
            assert np.array_equal(array, together[k].arrays[name]), name
    probs = together[0].arrays["fold/probs"]
    assert probs.shape == (len(together[0].arrays["fold/positions"]), 10)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)


# --- against the planted truth ------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_study(tmp_path_factory) -> Results:
    """mnist-sample, 4 epochs (not memorised): 60 % uniform and 30 % pair-flip noise."""
    out = tmp_path_factory.mktemp("cv")
    return parse_study(study()).run(out, dataset="mnist-sample")


def test_out_of_sample_confident_learning_finds_strong_uniform_noise_well_above_chance(
    noisy_study,
):
    got = final(noisy_study, "uniform")
    base = got["cv_issues_base_rate"]
    assert 0.5 < base < 0.6  # 60 % relabelled, a tenth of them to their own class
    for method in ("prune_by_noise_rate", "both", "confident_learning"):
        assert got[f"cv_issues_{method}_precision"] > base + 0.25, method
        assert got[f"cv_issues_{method}_recall"] > 0.6, method
    for score in ("self_confidence", "normalized_margin"):
        assert got[f"cv_issues_{score}_auroc"] > 0.85, score
        assert got[f"cv_issues_{score}_precision_at_k"] > base + 0.25, score
    assert got["cv_issues_prior_mae"] < 0.05


def test_the_estimated_noise_matrix_of_pair_flips_puts_its_mass_on_the_flipped_class(noisy_study):
    with Store.open_existing(noisy_study.directory, readonly=True) as store:
        (run,) = [r for r in store.runs() if r["setup"] == "pairflip"]
        matrix = store.array(run["run_id"], "issues/cv/noise_matrix")  # P(given i | true j)
    off = matrix - np.diag(np.diag(matrix))
    assert off.argmax(0).tolist() == [(j + 1) % 10 for j in range(10)]  # c -> c + 1
    flipped = off[(np.arange(10) + 1) % 10, np.arange(10)]
    assert flipped.min() > 0.15 and flipped.sum() > 0.6 * off.sum()
    assert final(noisy_study, "pairflip")["cv_issues_noise_matrix_mae"] < 0.05


def test_label_issues_returns_what_was_flagged_with_the_truth(noisy_study):
    got = final(noisy_study, "uniform")
    run_id = noisy_study.metrics("cv_issues_base_rate").query("setup == 'uniform'").run_id.item()
    for source, prefix in (("cv", "cv_issues_"), ("in_sample", "issues_")):
        frame = noisy_study.label_issues(run_id, source)
        flagged = frame[frame.prune_by_noise_rate]
        assert flagged.corrupted.mean() == pytest.approx(got[f"{prefix}precision"])
        assert len(flagged) / 4000 == pytest.approx(got[f"{prefix}flagged_share"])
        assert frame.position.is_monotonic_increasing and frame.position.max() < 4000
        assert frame.self_confidence.dtype == np.float32
    assert noisy_study.label_issues(run_id).equals(noisy_study.label_issues(run_id, "cv"))
    with pytest.raises(NoisebenchError, match="has no label issues stored"):
        noisy_study.label_issues("0123456789abcdef")
    with Store.open_existing(noisy_study.directory, readonly=True) as store:
        left = store.db.execute("SELECT count(*) FROM arrays WHERE name LIKE 'fold/%'")
        assert left.fetchone()[0] == 0  # the fold models' probabilities were joined


def test_in_sample_probabilities_of_a_memorising_model_miss_what_out_of_sample_ones_find(
    tmp_path,
):
    spec = study(
        levels=[0.5],
        train_sizes=[500],
        train={"epochs": 50, "optimizer": "adam", "lr": 0.001, "batch_size": 50},
        analysis={"label_issues": "cv", "folds": 5, "fgsm_eps": [], "train_eval": "all"},
        setups=[{"name": "uniform", "noise": "labels.uniform"}],
    )
    results = parse_study(spec).run(tmp_path, dataset="mnist-sample")
    fitted = results.metrics("train_clean_acc").value.iloc[-1]  # after the last epoch
    assert fitted > 0.99, fitted  # the wrong labels learnt by heart
    got = final(results, "uniform")
    assert got["issues_self_confidence_auroc"] < got["cv_issues_self_confidence_auroc"] - 0.1
    assert got["issues_recall"] < got["cv_issues_recall"] - 0.3
    assert got["cv_issues_precision"] > got["cv_issues_base_rate"] + 0.1


def test_every_label_noise_gets_out_of_sample_label_issues(tmp_path):
    shift = [[float(j == (i + 2) % 10) for j in range(10)] for i in range(10)]
    setups = [
        {"name": "uniform", "noise": "labels.uniform"},
        {"name": "pairflip", "noise": "labels.pairflip"},
        {"name": "matrix", "noise": "labels.matrix", "params": {"matrix": shift}},
        {"name": "feature", "noise": "labels.feature", "params": {"reference_epochs": 1}},
        {"name": "shuffle", "noise": "labels.shuffle"},
    ]
    spec = study(
        levels=[0.4],
        train_sizes=[300],
        train={"epochs": 2},
        analysis={"label_issues": "cv", "folds": 2, "fgsm_eps": [], "train_eval": 0},
        setups=setups,
    )
    results = parse_study(spec).run(tmp_path, dataset="mnist-sample")
    for setup in setups:
        got = final(results, setup["name"])
        assert got["cv_issues_base_rate"] == got["issues_base_rate"] > 0.2, setup["name"]
        assert 0 <= got["cv_issues_self_confidence_auroc"] <= 1, setup["name"]  # 2 epochs
        run_id = results.metrics("cv_issues_base_rate").query(f"setup == '{setup['name']}'")
        frame = results.label_issues(run_id.run_id.item())
        assert 0 < len(frame) <= 300 and frame.corrupted.any(), setup["name"]


def test_a_study_stopped_before_its_folds_were_joined_resumes_to_the_same_numbers(
    tmp_path, monkeypatch
):
    spec = parse_study(
        study(
            seeds=[0, 1],
            levels=[0.5],
            train_sizes=[300],
            train={"epochs": 2},
            setups=[{"name": "uniform", "noise": "labels.uniform"}],
        )
    )
    whole = spec.run(tmp_path / "whole", dataset="mnist-sample").metrics("cv_issues%")
    assert len(whole) > 0
    with monkeypatch.context() as patch:  # stopped after training, before the join
        patch.setattr(crossval, "join_folds", lambda *_: None)
        spec.run(tmp_path / "stopped", dataset="mnist-sample")
    folds = fold_runs(spec, plan(spec))
    with Store(tmp_path / "stopped") as store:
        assert store.metrics("cv_issues%") == []
        store.delete_arrays([folds[0].run_id])  # and one fold model was never stored
        assert crossval.unfinished(store, folds) == [folds[0]]
    resumed = spec.run(tmp_path / "stopped", dataset="mnist-sample").metrics("cv_issues%")
    columns = ["run_id", "name", "value"]
    assert resumed[columns].equals(whole[columns])
