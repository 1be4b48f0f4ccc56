"""Noise models do what they say: rates, seeds, distributions, and never the test set."""

import pytest
import torch
from scipy import stats

from noisebench.errors import StudyError
from noisebench.noise import make_noise
from noisebench.seeding import generator


def binomial_interval(n: int, p: float, alpha: float = 1e-4) -> tuple[int, int]:
    low, high = stats.binom.interval(1 - alpha, n, p)
    return int(low), int(high)


# --- labels.uniform ---------------------------------------------------------------------


@pytest.mark.parametrize("level", [0.0, 0.1, 0.37, 0.5, 1.0])
def test_label_noise_picks_exactly_round_x_n_examples(level):
    labels = torch.arange(1000) % 10
    result = make_noise("labels.uniform").corrupt(labels, 10, level, generator(0, "labels"))
    assert result.picked.numel() == round(level * 1000)
    assert result.picked.unique().numel() == result.picked.numel()
    assert torch.equal(result.original, labels[result.picked])
    untouched = torch.ones(1000, dtype=torch.bool)
    untouched[result.picked] = False
    assert torch.equal(result.labels[untouched], labels[untouched])


def test_label_noise_choice_depends_on_seed_only():
    labels = torch.arange(1000) % 10
    noise = make_noise("labels.uniform")
    a = noise.corrupt(labels, 10, 0.3, generator(0, "labels"))
    b = noise.corrupt(labels, 10, 0.3, generator(0, "labels"))
    c = noise.corrupt(labels, 10, 0.3, generator(1, "labels"))
    assert torch.equal(a.picked, b.picked) and torch.equal(a.labels, b.labels)
    assert set(a.picked.tolist()) != set(c.picked.tolist())


def test_label_noise_sets_are_nested_across_levels():
    labels = torch.arange(1000) % 10
    noise = make_noise("labels.uniform")
    low = noise.corrupt(labels, 10, 0.1, generator(3, "labels"))
    high = noise.corrupt(labels, 10, 0.5, generator(3, "labels"))
    assert set(low.picked.tolist()) <= set(high.picked.tolist())


def test_uniform_label_noise_keeps_the_old_label_about_one_time_in_k():
    labels = torch.arange(20000) % 10
    result = make_noise("labels.uniform").corrupt(labels, 10, 1.0, generator(0, "labels"))
    kept = int((result.labels == labels).sum())
    low, high = binomial_interval(20000, 0.1)
    assert low <= kept <= high


def test_exclude_true_never_keeps_the_old_label_and_covers_all_other_classes():
    labels = torch.arange(5000) % 10
    noise = make_noise("labels.uniform", {"exclude_true": True})
    result = noise.corrupt(labels, 10, 0.8, generator(0, "labels"))
    assert (result.labels[result.picked] != result.original).all()
    assert result.labels[result.picked].unique().numel() == 10


# --- pixels.replace ---------------------------------------------------------------------


def fitted(**params):
    noise = make_noise("pixels.replace", params)
    train = torch.zeros(1000, 784, dtype=torch.uint8)
    train[:, :200] = 255  # a data distribution with ~25 % white and ~75 % black pixels
    noise.fit(train)
    return noise


SENTINEL = 0.5  # no distribution here produces exactly this value, so changes are visible


@pytest.mark.parametrize("values", ["data", "uniform", "binary"])
@pytest.mark.parametrize("level", [0.1, 0.3, 0.9])
def test_pixel_replacement_rate_is_inside_a_binomial_interval(values, level):
    noise = fitted(values=values)
    x = torch.full((1, 64, 784), SENTINEL)
    out = noise.apply(x, torch.tensor([level]), [generator(0, "pixels")])
    replaced = int((out != SENTINEL).sum())
    low, high = binomial_interval(64 * 784, level)
    assert low <= replaced <= high


def test_exact_mode_replaces_exactly_round_x_784_pixels_per_sample():
    noise = fitted(values="binary", exact=True)
    x = torch.full((2, 32, 784), SENTINEL)
    out = noise.apply(x, torch.tensor([0.3, 0.05]), [generator(0, "p"), generator(1, "p")])
    per_sample = (out != SENTINEL).sum(-1)
    assert (per_sample[0] == round(0.3 * 784)).all()
    assert (per_sample[1] == round(0.05 * 784)).all()


def test_pixel_noise_is_redrawn_at_every_step():
    noise = fitted()
    gen = generator(0, "pixels")
    x = torch.full((1, 16, 784), SENTINEL)
    first = noise.apply(x, torch.tensor([0.5]), [gen]) != SENTINEL
    second = noise.apply(x, torch.tensor([0.5]), [gen]) != SENTINEL
    assert not torch.equal(first, second)
    assert (first ^ second).float().mean() > 0.3  # independent masks differ in ~50 % of pixels


def test_data_values_follow_the_training_pixel_distribution():
    noise = fitted(values="data")
    x = torch.full((1, 256, 784), SENTINEL)
    out = noise.apply(x, torch.tensor([1.0]), [generator(0, "pixels")])
    assert set(out.unique().tolist()) == {0.0, 1.0}
    white = int((out == 1.0).sum())
    low, high = binomial_interval(256 * 784, 200 / 784)
    assert low <= white <= high


def test_uniform_values_are_uniform_and_binary_values_are_balanced():
    x = torch.full((1, 64, 784), SENTINEL)
    uniform = fitted(values="uniform").apply(x, torch.tensor([1.0]), [generator(0, "u")])
    assert stats.kstest(uniform.flatten().numpy()[:20000], "uniform").pvalue > 1e-4
    binary = fitted(values="binary").apply(x, torch.tensor([1.0]), [generator(0, "b")])
    ones = int((binary == 1.0).sum())
    low, high = binomial_interval(64 * 784, 0.5)
    assert set(binary.unique().tolist()) == {0.0, 1.0} and low <= ones <= high


def test_each_run_in_a_stack_uses_only_its_own_level_and_stream():
    noise = fitted()
    x = torch.rand(3, 8, 784)
    levels = torch.tensor([0.2, 0.6, 0.9])
    together = noise.apply(x, levels, [generator(s, "pixels") for s in (0, 1, 2)])
    alone = noise.apply(x[1:2], levels[1:2], [generator(1, "pixels")])
    assert torch.equal(together[1:2], alone)


def test_pixel_noise_does_not_modify_its_input():
    noise = fitted()
    x = torch.rand(1, 8, 784)
    before = x.clone()
    noise.apply(x, torch.tensor([0.7]), [generator(0, "pixels")])
    assert torch.equal(x, before)


# --- registry ---------------------------------------------------------------------------


def test_unknown_noise_is_a_one_line_error_listing_known_noises():
    with pytest.raises(StudyError, match="unknown noise 'labels.nope'.*labels.uniform"):
        make_noise("labels.nope")


def test_bad_noise_parameter_names_the_parameter():
    with pytest.raises(StudyError, match="'values'"):
        make_noise("pixels.replace", {"values": "gaussian"})
    with pytest.raises(StudyError, match="'colour'"):
        make_noise("labels.uniform", {"colour": "red"})
