"""Measurements of trained packs (engine/metrics.py): calibration, robustness, label-issue
flagging, memorisation."""

import math

import pytest
import reference
import torch
import torch.nn.functional as F

from noisebench.engine import StackedMLP, label_issues, metrics
from noisebench.study import ModelSpec

NAN = float("nan")


def linear_model(a: torch.Tensor, c: torch.Tensor) -> StackedMLP:
    """Runs whose logits are exactly x01 @ a[r] + c[r] (a [R, F, C], c [R, C]): the one relu
    hidden layer is the identity, which passes the non-negative pixels through."""
    runs, features, classes = a.shape
    model = StackedMLP(ModelSpec(hidden=[features]), list(range(runs)), (features, classes), "cpu")
    with torch.no_grad():
        model.weights[0].copy_(torch.eye(features).expand(runs, -1, -1))
        model.biases[0].zero_()
        model.weights[1].copy_(a)
        model.biases[1].copy_(c.unsqueeze(1))
    return model


def random_model(runs=3, features=20, classes=4, scale=4.0) -> StackedMLP:
    """A random relu MLP whose outputs are scaled up so confidences spread over (1/C, 1)."""
    model = StackedMLP(ModelSpec(hidden=[16]), list(range(runs)), (features, classes), "cpu")
    with torch.no_grad():
        model.weights[-1].mul_(scale)
    return model


def random_bytes(n: int, features: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, features), generator=gen, dtype=torch.uint8)


def clean_accuracy(model: StackedMLP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (model.logits_of_bytes(x).argmax(-1) == y).double().mean(1)


def train(model: StackedMLP, x: torch.Tensor, labels: torch.Tensor, steps: int) -> StackedMLP:
    """Full-batch Adam on cross-entropy against each run's labels [R, N] (plain autograd)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x01 = x.float() / 255
    for _ in range(steps):
        loss = F.cross_entropy(model(x01).mT, labels, reduction="sum") / len(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module")
def trained(small_data):
    """Two runs trained on clean small_data: (model, test images, test labels)."""
    model = StackedMLP(ModelSpec(hidden=[32]), [0, 1], (784, 10), "cpu")
    train(model, small_data.train_x, small_data.train_y.expand(2, -1), steps=60)
    return model, small_data.test_x, small_data.test_y


# --- calibration -------------------------------------------------------------------------


def two_groups(p_a: float, p_b: float, correct_a: int, correct_b: int):
    """One run, two classes, 10 examples at confidence p_a (pixel 0 lit) and 10 at p_b (pixel
    1 lit), all predicted class 0; correct_a / correct_b of them are labelled 0."""
    a = torch.tensor([[[math.log(p_a / (1 - p_a)), 0.0], [math.log(p_b / (1 - p_b)), 0.0]]])
    model = linear_model(a, torch.zeros(1, 2))
    x = torch.tensor([[255, 0]] * 10 + [[0, 255]] * 10, dtype=torch.uint8)
    y = torch.tensor(
        [0] * correct_a + [1] * (10 - correct_a) + [0] * correct_b + [1] * (10 - correct_b)
    )
    return model, x, y


def test_ece_of_a_constant_confidence_is_its_gap_to_accuracy():
    # run 0 says class 0 at 0.75, run 1 class 1 at 0.85; half the labels are each: accuracy 0.5
    c = torch.tensor([[math.log(3), 0.0], [0.0, math.log(0.85 / 0.15)]])
    model = linear_model(torch.zeros(2, 2, 2), c)
    x, y = random_bytes(10, 2), torch.tensor([0, 1] * 5)
    confidence, ece = metrics.calibration(model, x, y)
    torch.testing.assert_close(confidence, torch.tensor([0.75, 0.85], dtype=torch.float64))
    torch.testing.assert_close(ece, torch.tensor([0.25, 0.35], dtype=torch.float64))
    conf, acc, count = metrics.reliability(model, x, y, bins=10)
    assert count.tolist() == [[0] * 7 + [10, 0, 0], [0] * 8 + [10, 0]]
    torch.testing.assert_close(conf[0, 7], torch.tensor(0.75, dtype=torch.float64))
    assert acc[0, 7].item() == acc[1, 8].item() == 0.5
    assert conf[0, :7].isnan().all() and acc[1, 9].isnan()


def test_ece_is_zero_when_confidence_matches_accuracy_in_every_bin():
    model, x, y = two_groups(0.7, 0.9, correct_a=7, correct_b=9)
    confidence, ece = metrics.calibration(model, x, y)
    torch.testing.assert_close(confidence, torch.tensor([0.8], dtype=torch.float64))
    assert ece.item() == pytest.approx(0.0, abs=1e-6)
    conf, acc, count = metrics.reliability(model, x, y, bins=15)
    lit = count[0].nonzero().flatten().tolist()
    assert lit == [10, 13] and count[0, lit].tolist() == [10, 10]  # (10/15, 11/15], (13/15, 1]
    torch.testing.assert_close(conf[0, lit], acc[0, lit])


def test_ece_adds_the_gaps_of_each_bin_so_opposite_gaps_do_not_cancel():
    # confidence 0.7 with accuracy 1.0, and 0.9 with 0.6: both 0.8 overall
    model, x, y = two_groups(0.7, 0.9, correct_a=10, correct_b=6)
    assert metrics.calibration(model, x, y)[1].item() == pytest.approx(0.3, abs=1e-6)
    assert metrics.calibration(model, x, y, bins=1)[1].item() == pytest.approx(0.0, abs=1e-6)


def test_calibration_of_a_random_model_is_plain_torchs_and_agrees_with_its_diagram():
    model, x = random_model(classes=4), random_bytes(200, 20)
    y = torch.arange(200) % 4
    confidence, ece = metrics.calibration(model, x, y)
    for r in range(3):  # the same in plain torch (tests/reference.py), run by run
        with torch.no_grad():
            top = reference.logits(reference.layers_of(model, r), x.float() / 255).softmax(1)
        expected = reference.calibration_error(top.max(1).values, top.argmax(1) == y, bins=15)
        assert ece[r].item() == pytest.approx(expected, abs=1e-6)
        assert confidence[r].item() == pytest.approx(top.max(1).values.mean().item(), rel=1e-6)
    assert len(set(ece.tolist())) == 3 and (ece > 0.01).all()  # runs differ; none calibrated
    conf, acc, count = metrics.reliability(model, x, y)
    assert count.sum(1).tolist() == [200] * 3
    torch.testing.assert_close((conf.nan_to_num() * count).sum(1) / 200, confidence)
    torch.testing.assert_close((acc.nan_to_num() * count).sum(1) / 200, clean_accuracy(model, x, y))


# --- robustness ----------------------------------------------------------------------------


def test_attacks_of_size_zero_give_the_clean_accuracy():
    model, x = random_model(), random_bytes(150, 20)
    y = torch.arange(150) % 4
    clean = clean_accuracy(model, x, y)
    assert metrics.fgsm_accuracy(model, x, y, [0.0])[:, 0].tolist() == clean.tolist()
    gen = torch.Generator().manual_seed(0)
    assert metrics.random_sign_accuracy(model, x, y, [0.0], gen)[:, 0].tolist() == clean.tolist()


def test_fgsm_on_a_two_class_linear_model_is_the_worst_case_step_and_only_hurts_more():
    # for two classes the CE gradient points along a_other - a_y: FGSM steps every pixel
    # against the margin, so the margin (and accuracy) can only fall as eps grows
    gen = torch.Generator().manual_seed(3)
    a, c = torch.randn(2, 6, 2, generator=gen), torch.randn(2, 2, generator=gen) * 0.1
    model, x = linear_model(a, c), random_bytes(300, 6)
    y = (torch.arange(300) * 7 % 3 == 0).long()
    eps = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4]
    got = metrics.fgsm_accuracy(model, x, y, eps)
    x01 = x.float() / 255
    for r in range(2):
        toward_y = (a[r, :, 1] - a[r, :, 0]).sign() * (2 * y[:, None] - 1)  # [N, F]
        for e, size in enumerate(eps):
            worst = (x01 - size * toward_y).clamp(0, 1)
            expected = ((worst @ a[r] + c[r]).argmax(-1) == y).double().mean()
            assert got[r, e].item() == pytest.approx(expected.item(), abs=1.5 / len(x))
    assert (got[:, 1:] <= got[:, :-1]).all()
    assert (got[:, -1] < got[:, 0] - 0.2).all()


def test_fgsm_hurts_a_trained_model_more_than_random_signs_of_the_same_size(trained):
    model, x, y = trained
    eps = [0.05, 0.1, 0.2]
    clean = clean_accuracy(model, x, y)
    assert (clean > 0.7).all()
    fgsm = metrics.fgsm_accuracy(model, x, y, eps)
    noise = metrics.random_sign_accuracy(model, x, y, eps, torch.Generator().manual_seed(0))
    assert (fgsm < noise).all()
    assert (fgsm[:, 1] < clean - 0.3).all()  # worst-case steps of 0.1 break most answers
    assert (noise[:, 0] > clean - 0.1).all()  # random ones of 0.05 barely matter


def test_random_signs_are_reproducible_from_their_generator(trained):
    model, x, y = trained
    eps = [0.3, 0.6]

    def with_seed(seed):
        return metrics.random_sign_accuracy(model, x, y, eps, torch.Generator().manual_seed(seed))

    assert torch.equal(with_seed(1), with_seed(1))
    assert not torch.equal(with_seed(1), with_seed(2))
    with pytest.raises(ValueError, match="3 generators for 2 runs"):
        metrics.random_sign_accuracy(model, x, y, eps, [torch.Generator()] * 3)


# --- every run's numbers are its own, whatever the pack or chunk -----------------------------


def measure_all(model: StackedMLP, x, y, labels, corrupted, chunk=metrics.CHUNK, seed=10):
    runs = model.weights[0].shape[0]
    gens = [torch.Generator().manual_seed(seed + r) for r in range(runs)]
    eps = [0.0, 0.1, 0.3]
    conf, acc, count = metrics.reliability(model, x, y, chunk=chunk)
    return {
        "calibration": torch.stack(metrics.calibration(model, x, y, chunk=chunk), 1),
        "reliability": torch.stack([conf, acc, count], 1).nan_to_num(-1),
        "fgsm": metrics.fgsm_accuracy(model, x, y, eps, chunk=chunk),
        "random": metrics.random_sign_accuracy(model, x, y, eps, gens, chunk=chunk),
        "probabilities": metrics.class_probabilities(model, x, chunk=chunk),
        **metrics.label_fit_split(model, x, labels, y, corrupted, chunk=chunk),
    }


@pytest.fixture(scope="module")
def pack():
    model, x = random_model(runs=3), random_bytes(53, 20, seed=5)
    y = torch.arange(53) % 4
    corrupted = torch.rand(3, 53, generator=torch.Generator().manual_seed(6)) < 0.3
    labels = torch.where(corrupted, (y + 1 + torch.arange(3)[:, None]) % 4, y)
    return model, x, y, labels, corrupted


def test_results_do_not_depend_on_the_chunk_size(pack):
    whole = measure_all(*pack)
    chunked = measure_all(*pack, chunk=7)  # 53 = 7 x 7 + 4
    for name, value in whole.items():
        torch.testing.assert_close(chunked[name], value, msg=name)


def test_each_run_gets_the_numbers_it_gets_alone(pack):
    model, x, y, labels, corrupted = pack
    packed = measure_all(*pack)
    for r in range(3):
        alone = measure_all(
            model.rows(r, r + 1), x, y, labels[r : r + 1], corrupted[r : r + 1], seed=10 + r
        )
        for name, value in packed.items():
            torch.testing.assert_close(alone[name][0], value[r], msg=f"run {r}: {name}")


# --- label issues --------------------------------------------------------------------------


def test_class_probabilities_are_each_runs_softmax_over_classes(pack):
    model, x, *_ = pack
    got = metrics.class_probabilities(model, x, chunk=10)  # 53 = 5 x 10 + 3
    torch.testing.assert_close(got, torch.softmax(model.logits_of_bytes(x), -1))
    assert got.shape == (3, 53, 4) and (got[0] != got[1]).any()


def test_a_briefly_trained_model_ranks_the_corrupted_labels_lowest_until_it_memorises(
    small_data,
):
    x, true = small_data.train_x, small_data.train_y
    gen = torch.Generator().manual_seed(0)
    corrupted = torch.rand(2, len(x), generator=gen) < 0.4
    wrong = (true + torch.randint(1, 10, (2, len(x)), generator=gen)) % 10
    given = torch.where(corrupted, wrong, true)
    model = train(StackedMLP(ModelSpec(hidden=[32]), [0, 1], (784, 10), "cpu"), x, given, 10)

    def found() -> list[dict[str, float]]:
        probs = metrics.class_probabilities(model, x).numpy()
        return [
            label_issues.find_issues(probs[r], given[r].numpy(), true.numpy(), 10)[0]
            for r in range(2)
        ]

    early = found()
    for run in early:  # chance: 0.4
        assert run["precision_at_k"] > 0.75 and run["self_confidence_auroc"] > 0.85
        assert run["precision"] > 0.6 and run["recall"] > 0.6
    split = metrics.label_fit_split(model, x, given, true, corrupted)
    assert (split["true_fit"] > split["noisy_fit"] + 0.4).all()
    train(model, x, given, 60)  # 640 examples: the noisy labels get learnt by heart
    split = metrics.label_fit_split(model, x, given, true, corrupted)
    assert (split["noisy_fit"] > 0.9).all() and (split["true_fit"] < 0.1).all()
    for before, after in zip(early, found(), strict=True):
        assert after["precision_at_k"] < before["precision_at_k"] - 0.2


# --- memorisation --------------------------------------------------------------------------


def oracle_pack():
    """Runs 0 and 2 predict the true class with confidence ~1, run 1 always says class 0; in
    run 0 examples 0 and 3 got the next class as label, runs 1 and 2 are corrupted elsewhere."""
    x = torch.eye(4, dtype=torch.uint8).repeat(4, 1) * 255  # 16 examples, one-hot of the class
    true = torch.arange(16) % 4
    a = torch.stack([30 * torch.eye(4), torch.zeros(4, 4), 30 * torch.eye(4)])
    c = torch.tensor([[0.0] * 4, [30.0, 0, 0, 0], [0.0] * 4])
    corrupted = torch.zeros(3, 16, dtype=torch.bool)
    corrupted[0, [0, 3]] = True
    corrupted[1, [0, 3]] = True
    corrupted[2, [5, 6, 11, 12]] = True
    given = torch.where(corrupted, (true + 1) % 4, true)
    return linear_model(a, c), x, given, true, corrupted


def test_memorisation_split_of_hand_built_runs():
    model, x, given, true, corrupted = oracle_pack()
    split = metrics.label_fit_split(model, x, given, true, corrupted, chunk=5)
    # run 0 predicts the truth; run 1 says 0: right for the corrupted example 3 (given 0) and
    # clean examples 4, 8, 12, and the truth of the corrupted example 0
    assert split["noisy_fit"].tolist() == [0.0, 0.5, 0.0]
    assert split["true_fit"].tolist() == [1.0, 0.5, 1.0]
    assert split["clean_fit"].tolist() == [1.0, 3 / 14, 1.0]
    assert split["train_acc"].tolist() == [14 / 16, 4 / 16, 12 / 16]
    clean = torch.zeros_like(corrupted)
    alone = metrics.label_fit_split(model, x, true.expand(3, -1), true, clean)
    assert alone["noisy_fit"].isnan().all() and alone["true_fit"].isnan().all()
    assert alone["clean_fit"].tolist() == alone["train_acc"].tolist() == [1.0, 0.25, 1.0]
