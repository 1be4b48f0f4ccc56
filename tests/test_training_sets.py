"""What each run trains on and when it stops: balanced subsets, the validation hold-out,
diluted label sets, early stopping, training-accuracy targets, and what is measured."""

import pytest
import reference
import torch
import torch.nn.functional as F
from cleanlab.filter import find_label_issues

from noisebench import seeding
from noisebench.engine import pack, train_pack
from noisebench.engine.trainset import balanced_subset, check_sizes, split_validation
from noisebench.errors import StudyError
from noisebench.study import AnalysisSpec, parse_study, plan


def runs_of(**study):
    spec = {
        "name": "sets",
        "seeds": [0, 1],
        "levels": [0.0, 0.4],
        "train": {"epochs": 3, "batch_size": 32, "lr": 0.05},
        "analysis": {"fgsm_eps": [0.05, 0.1]},
        "setups": [
            {"name": "labels", "noise": "labels.uniform"},
            {"name": "pixels", "noise": "pixels.replace"},
        ],
    } | study
    return plan(parse_study(spec))


def everything(result) -> list:
    """Every recorded number of a run except wall-clock times."""
    rows = [{k: v for k, v in e.items() if not k.endswith("_s")} for e in result.epochs]
    return [rows, result.final | {}, result.status]


# --- subsets and the hold-out ----------------------------------------------------------------


def test_a_balanced_subset_has_equal_classes_and_grows_by_nesting(small_data):
    pool = torch.arange(len(small_data.train_y))
    small = balanced_subset(pool, small_data.train_y, 100, 10, seed=3)
    large = balanced_subset(pool, small_data.train_y, 200, 10, seed=3)
    assert torch.bincount(small_data.train_y[small], minlength=10).tolist() == [10] * 10
    assert len(set(small.tolist())) == 100
    assert set(small.tolist()) <= set(large.tolist())
    other = balanced_subset(pool, small_data.train_y, 100, 10, seed=4)
    assert set(other.tolist()) != set(small.tolist())
    uneven = balanced_subset(pool, small_data.train_y, 105, 10, seed=3)
    assert sorted(torch.bincount(small_data.train_y[uneven]).tolist()) == [10] * 5 + [11] * 5


def test_a_subset_larger_than_a_class_is_a_one_line_error(small_data):
    runs = runs_of(train_sizes=[5000])
    with pytest.raises(StudyError, match=r"train size 5000 needs 500 examples of class \d"):
        check_sizes(runs, small_data)
    with pytest.raises(StudyError, match="smaller than the 10 classes"):
        check_sizes(runs_of(train_sizes=[5]), small_data)


def test_the_validation_hold_out_is_stratified_disjoint_and_the_same_for_every_run(small_data):
    train, valid = split_validation(small_data, 0.25)
    assert set(train.tolist()).isdisjoint(valid.tolist())
    assert len(train) + len(valid) == len(small_data.train_y)
    counts = torch.bincount(small_data.train_y, minlength=10)
    held = torch.bincount(small_data.train_y[valid], minlength=10)
    assert ((held - 0.25 * counts).abs() <= 0.5).all()
    assert torch.equal(valid, split_validation(small_data, 0.25)[1])


def test_runs_train_on_their_subset_and_label_noise_stays_inside_it(small_data):
    runs = [r for r in runs_of(train_sizes=[100], validation=0.2) if r.noise == "labels.uniform"]
    result = train_pack(runs[:1], small_data)[0]
    assert result.final["train_size"] == 100
    picked = result.label_noise.picked
    assert picked.numel() == 40 and int(picked.max()) < 100  # 40 % of the run's 100 examples
    assert all("val_loss" in e and "val_acc" in e for e in result.epochs)


def test_diluted_runs_train_on_the_clean_set_plus_k_noisy_copies(small_data):
    runs = plan(
        parse_study(
            {
                "name": "dilution",
                "seeds": [0],
                "levels": [2],
                "train": {"epochs": 1, "batch_size": 64},
                "setups": [{"name": "diluted", "noise": "labels.dilution"}],
            }
        )
    )
    result = train_pack(runs, small_data)[0]
    assert result.final["train_size"] == 3 * len(small_data.train_y)
    assert len(result.label_noise.labels) == 3 * len(small_data.train_y)


@pytest.mark.parametrize(
    "regime",
    [
        {"train_sizes": [120]},
        {"validation": 0.2, "early_stopping": {"patience": 1}},
        {"stop_at_train_acc": 0.5},
    ],
    ids=["subset", "early-stopping", "target"],
)
def test_a_run_gives_the_same_numbers_alone_as_in_its_pack(small_data, regime):
    runs = runs_of(**regime)
    packed = {r.run_id: everything(r) for r in train_pack(runs, small_data)}
    for run in (runs[1], runs[-1]):
        assert everything(train_pack([run], small_data)[0]) == packed[run.run_id]


# --- stopping --------------------------------------------------------------------------------


def test_early_stopping_stops_after_patience_epochs_without_improvement(small_data):
    runs = runs_of(
        train={"epochs": 12, "batch_size": 32, "lr": 0.3},
        levels=[0.0, 0.8],
        validation=0.2,
        early_stopping={"patience": 2, "min_delta": 0.0},
    )
    results = train_pack(runs, small_data)
    stopped = [r for r in results if r.final["stopped_epoch"] < 12]
    assert stopped, "no run stopped early at lr 0.3 with 80 % label noise"
    for result in stopped:
        best, last = result.final["best_epoch"], result.final["stopped_epoch"]
        assert last - best == 2 and len(result.epochs) == last
        losses = [e["val_loss"] for e in result.epochs]
        assert losses[best - 1] == min(losses)
    for result in results:
        assert 1 <= result.final["best_epoch"] <= result.final["stopped_epoch"]


def test_a_training_accuracy_target_stops_each_run_when_it_is_reached(small_data):
    runs = runs_of(  # clean and entirely random labels: both are memorised
        train={"epochs": 40, "batch_size": 32, "lr": 0.003, "optimizer": "adam"},
        levels=[0.0, 1.0],
        train_sizes=[100],
        stop_at_train_acc=1.0,
    )
    analysis = AnalysisSpec(train_eval="all", fgsm_eps=[])
    results = train_pack(
        [r for r in runs if r.noise != "pixels.replace"], small_data, analysis=analysis
    )
    assert len(results) == 4
    for result in results:
        assert result.final["reached_target"] == 1.0
        assert result.epochs[-1]["train_clean_acc"] == 1.0
        assert all(e["train_clean_acc"] < 1.0 for e in result.epochs[:-1])
        assert result.final["stopped_epoch"] == len(result.epochs) < 40
        assert "fgsm@0.1" not in result.final


def test_resuming_with_stopping_rules_and_subsets_continues_bit_for_bit(small_data, tmp_path):
    runs = runs_of(
        train={"epochs": 6, "batch_size": 32, "lr": 0.3},
        levels=[0.0, 0.8],
        train_sizes=[200],
        validation=0.2,
        early_stopping={"patience": 1},
    )
    reference = [everything(r) for r in train_pack(runs, small_data)]

    class Stop(Exception):
        pass

    def stop_in_fourth_epoch(step: int, total: int) -> None:
        if step >= total // 2 + 1:
            raise Stop

    checkpoint = tmp_path / "pack.pt"
    with pytest.raises(Stop):
        train_pack(runs, small_data, checkpoint=checkpoint, progress=stop_in_fourth_epoch)
    resumed = [everything(r) for r in train_pack(runs, small_data, checkpoint=checkpoint)]
    assert resumed == reference


# --- what is measured ------------------------------------------------------------------------


@pytest.fixture
def measured(monkeypatch) -> dict[str, list]:
    """The parameters of run 0 whenever a pack is measured ("epoch": after each epoch, "final":
    after training), as plain torch layers (tests/reference.py): train one run at a time."""
    seen: dict[str, list] = {"epoch": [], "final": []}

    def spy(kind: str, measure):
        def measure_and_keep(model, *args):
            seen[kind].append(reference.layers_of(model, 0))
            return measure(model, *args)

        return measure_and_keep

    monkeypatch.setattr(pack, "epoch_metrics", spy("epoch", pack.epoch_metrics))
    monkeypatch.setattr(pack, "final_metrics", spy("final", pack.final_metrics))
    return seen


def predictions(layers, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities [n, C] (float64) and predicted classes [n] on uint8 images."""
    with torch.no_grad():
        p = reference.logits(layers, x.float() / 255).double().softmax(1)
    return p, p.argmax(1)


def accuracy(layers, x01: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (reference.logits(layers, x01).argmax(1) == y).double().mean().item()


def share(hit: torch.Tensor, among: torch.Tensor | None = None) -> float:
    """The share of True in `hit` (among the examples `among` selects)."""
    return (hit if among is None else hit[among]).double().mean().item()


def test_each_epoch_measures_calibration_validation_and_the_fit_of_the_training_set(
    small_data, measured
):
    """Recomputed in plain torch from the parameters each epoch was measured on."""
    runs = runs_of(validation=0.2)
    train_rows, valid_rows = split_validation(small_data, 0.2)
    x, y = small_data.train_x, small_data.train_y
    for run in (runs[0], runs[3]):  # clean, 40 % label noise
        measured["epoch"].clear()
        (result,) = train_pack([run], small_data)
        given = y[train_rows] if run.noise is None else result.label_noise.labels
        corrupted = given != y[train_rows]
        assert corrupted.any() == (run.noise is not None)
        assert len(measured["epoch"]) == len(result.epochs) == 3
        for row, layers in zip(result.epochs, measured["epoch"], strict=True):
            p, predicted = predictions(layers, small_data.test_x)
            hits = predicted == small_data.test_y
            ece = reference.calibration_error(p.max(1).values, hits, bins=15)
            assert row["test_ece"] == pytest.approx(ece, abs=1e-6)
            p, predicted = predictions(layers, x[valid_rows])
            loss = F.nll_loss(p.log(), y[valid_rows]).item()
            assert row["val_loss"] == pytest.approx(loss, rel=1e-5)
            assert row["val_acc"] == share(predicted == y[valid_rows])
            _, predicted = predictions(layers, x[train_rows])
            assert row["train_clean_acc"] == share(predicted == given)
            if run.noise is None:
                assert "fit_noisy" not in row
                continue
            assert row["fit_noisy"] == share(predicted == given, corrupted)
            assert row["fit_true"] == share(predicted == y[train_rows], corrupted)
            assert row["fit_clean"] == share(predicted == given, ~corrupted)


def test_after_training_robustness_and_label_issues_are_measured(small_data, measured):
    """FGSM, random signs of the same size and confident-learning flags, recomputed in plain
    torch from the parameters the run ended with."""
    runs = runs_of()
    x01, y = small_data.test_x.float() / 255, small_data.test_y
    for run in (runs[0], runs[3], runs[5]):  # clean, 40 % label noise, 40 % pixel noise
        measured["final"].clear()
        (result,) = train_pack([run], small_data)
        (layers,) = measured["final"]
        final = result.final
        assert final["attacked_acc"] == accuracy(layers, x01, y)
        xr = x01.clone().requires_grad_()
        loss = F.cross_entropy(reference.logits(layers, xr), y, reduction="sum")
        (toward_error,) = torch.autograd.grad(loss, xr)
        # the run's own signs: one uniform draw per pixel, negative below 1/2
        u = torch.rand(x01.shape, generator=seeding.generator(run.seed, "random-sign"))
        directions = {"fgsm": toward_error.sign(), "randsign": torch.where(u < 0.5, -1.0, 1.0)}
        for eps in (0.05, 0.1):
            for name, direction in directions.items():
                expected = accuracy(layers, (x01 + eps * direction).clamp(0, 1), y)
                assert final[f"{name}@{eps}"] == expected, f"{name}@{eps}"
        if run.noise != "labels.uniform":
            assert "issues_recall" not in final
            continue
        given = result.label_noise.labels
        p, _ = predictions(layers, small_data.train_x)
        # cleanlab itself, on the probabilities of the parameters the run ended with
        flagged = find_label_issues(given.numpy(), p.double().numpy(), n_jobs=1)
        corrupted = (given != small_data.train_y).numpy()
        assert final["issues_base_rate"] == pytest.approx(corrupted.mean())
        assert final["issues_precision"] == pytest.approx(corrupted[flagged].mean())
        assert final["issues_recall"] == pytest.approx(flagged[corrupted].mean())
        assert final["issues_flagged_share"] == pytest.approx(flagged.mean())
        confidence = p.gather(1, given[:, None])[:, 0].numpy()
        lowest = confidence.argsort(kind="stable")[: int(corrupted.sum())]
        assert final["issues_precision_at_k"] == pytest.approx(corrupted[lowest].mean())
        assert final["issues_precision"] > 0.4  # 40 % noise: better than flagging at random
