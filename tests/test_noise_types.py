"""The noise types beyond labels.uniform and pixels.replace do what their docstrings say."""

import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from noisebench.cli import app
from noisebench.engine import train_pack
from noisebench.errors import StudyError
from noisebench.noise import NOISES, LabelNoise, PixelNoise, make_noise
from noisebench.noise import labels as label_module
from noisebench.seeding import generator
from noisebench.study import load_preset, parse_study, plan


def binomial_interval(n: int, p: float, alpha: float = 1e-4) -> tuple[int, int]:
    low, high = stats.binom.interval(1 - alpha, n, p)
    return int(low), int(high)


def gen(seed: int = 0, purpose: str = "labels") -> torch.Generator:
    return generator(seed, purpose)


LABELS = torch.arange(1000) % 10
FLIP_BACK = [1, 0, 3, 2, 5, 4, 7, 6, 9, 8]
MATRIX3 = [[0.6, 0.3, 0.1], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]]


# --- labels.pairflip --------------------------------------------------------------------


@pytest.mark.parametrize("level", [0.0, 0.1, 0.37, 1.0])
def test_pairflip_moves_exactly_round_x_n_examples_to_the_next_class(level):
    before = LABELS.clone()
    result = make_noise("labels.pairflip").corrupt(LABELS, 10, level, gen())
    assert torch.equal(LABELS, before)
    assert result.picked.numel() == round(level * 1000) == result.picked.unique().numel()
    assert torch.equal(result.original, LABELS[result.picked])
    assert torch.equal(result.labels[result.picked], (result.original + 1) % 10)
    assert int((result.labels != LABELS).sum()) == result.picked.numel()


def test_pairflip_follows_a_given_mapping_which_need_not_be_a_permutation():
    mapping = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # every class but 0 becomes 0
    result = make_noise("labels.pairflip", {"mapping": mapping}).corrupt(LABELS, 10, 0.5, gen())
    assert torch.equal(result.labels[result.picked], torch.tensor(mapping)[result.original])
    back = make_noise("labels.pairflip", {"mapping": FLIP_BACK}).corrupt(LABELS, 10, 1.0, gen())
    assert torch.equal(back.labels, torch.tensor(FLIP_BACK)[LABELS])


def test_pairflip_picks_depend_on_the_seed_only_are_nested_and_match_labels_uniform():
    noise = make_noise("labels.pairflip")
    a, b = (noise.corrupt(LABELS, 10, 0.3, gen(0)) for _ in range(2))
    other = noise.corrupt(LABELS, 10, 0.3, gen(1))
    high = noise.corrupt(LABELS, 10, 0.6, gen(0))
    uniform = make_noise("labels.uniform").corrupt(LABELS, 10, 0.3, gen(0))
    assert torch.equal(a.picked, b.picked) and torch.equal(a.labels, b.labels)
    assert set(a.picked.tolist()) != set(other.picked.tolist())
    assert set(a.picked.tolist()) <= set(high.picked.tolist())
    assert torch.equal(a.picked, uniform.picked)  # noise types compare on the same examples


@pytest.mark.parametrize(
    ("mapping", "message"),
    [([1, 1, 3], "mapping.*flip to another class"), ([1, -1], "mapping"), ([1], "mapping")],
)
def test_pairflip_rejects_a_bad_mapping_when_built(mapping, message):
    with pytest.raises(StudyError, match=message):
        make_noise("labels.pairflip", {"mapping": mapping})


@pytest.mark.parametrize("mapping", [FLIP_BACK[:8], [*FLIP_BACK[:9], 10]])
def test_pairflip_mapping_must_fit_the_dataset_classes(mapping):
    noise = make_noise("labels.pairflip", {"mapping": mapping})
    with pytest.raises(StudyError, match="10 classes"):
        noise.corrupt(LABELS, 10, 0.1, gen())


# --- labels.matrix ----------------------------------------------------------------------


def test_matrix_draws_new_labels_from_the_rows_at_their_probabilities():
    labels = torch.arange(30000) % 3
    result = make_noise("labels.matrix", {"matrix": MATRIX3}).corrupt(labels, 3, 1.0, gen())
    assert result.picked.numel() == 30000
    for y, row in enumerate(MATRIX3):
        new = result.labels[labels == y]
        for y2, p in enumerate(row):
            low, high = binomial_interval(10000, p)
            assert low <= int((new == y2).sum()) <= high, (y, y2)


@pytest.mark.parametrize("level", [0.0, 0.25, 0.5])
def test_matrix_passes_exactly_round_x_n_examples_and_leaves_the_rest(level):
    labels = torch.arange(3000) % 3
    result = make_noise("labels.matrix", {"matrix": MATRIX3}).corrupt(labels, 3, level, gen())
    assert result.picked.numel() == round(level * 3000) == result.picked.unique().numel()
    untouched = torch.ones(3000, dtype=torch.bool)
    untouched[result.picked] = False
    assert torch.equal(result.labels[untouched], labels[untouched])
    assert torch.equal(result.original, labels[result.picked])


def test_matrix_identity_changes_nothing_and_levels_are_consistent():
    identity = torch.eye(10).tolist()
    result = make_noise("labels.matrix", {"matrix": identity}).corrupt(LABELS, 10, 0.8, gen())
    assert torch.equal(result.labels, LABELS)
    noise = make_noise("labels.matrix", {"matrix": (torch.ones(10, 10) / 10).tolist()})
    low, high = (noise.corrupt(LABELS, 10, x, gen(4)) for x in (0.2, 0.7))
    assert set(low.picked.tolist()) <= set(high.picked.tolist())
    assert torch.equal(low.labels[low.picked], high.labels[low.picked])  # same draw per example
    assert not torch.equal(noise.corrupt(LABELS, 10, 0.7, gen(5)).labels, high.labels)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([[1.0, 0.0], [0.0, 1.0, 0.0]], "square"),
        ([[1.5, -0.5], [0.0, 1.0]], "row 0 has a negative entry"),
        ([[float("nan"), 1.0], [0.0, 1.0]], "finite number"),
        ([[float("inf"), 0.0], [0.0, 1.0]], "finite number"),
        ([[0.5, 0.4], [0.0, 1.0]], "row 0 sums to 0.9"),
        ([[1.0]], "at least 2"),
    ],
)
def test_matrix_rejects_a_matrix_that_is_not_a_transition_matrix(matrix, message):
    with pytest.raises(StudyError, match=f"'matrix.*{message}"):
        make_noise("labels.matrix", {"matrix": matrix})


def test_matrix_rows_may_miss_one_by_a_rounding_error_but_must_match_the_classes():
    noise = make_noise("labels.matrix", {"matrix": [[1 / 3] * 3, [0, 1, 0], [0.5, 0.5 + 5e-7, 0]]})
    with pytest.raises(StudyError, match="3×3, but the dataset has 10 classes"):
        noise.corrupt(LABELS, 10, 0.1, gen())
    with pytest.raises(StudyError, match="'matrix'"):
        make_noise("labels.matrix", {})


# --- labels.feature ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def feature_data(sample_data):
    x, y = sample_data.train_x[:1000].clone(), sample_data.train_y[:1000].clone()
    probs = label_module.reference_probs(x, y, 10, 0, 3)
    return x, y, probs


def feature_noise(x, y, seed=0):
    noise = make_noise("labels.feature", {"reference_epochs": 3})
    noise.prepare(x, y, seed)
    return noise


def test_feature_noise_flips_the_lowest_margin_examples_to_the_references_next_choice(
    feature_data,
):
    x, y, probs = feature_data
    assert (probs.argmax(1) == y).float().mean() > 0.7  # the reference has learned something
    before = y.clone()
    result = feature_noise(x, y).corrupt(y, 10, 0.2, gen())
    assert torch.equal(y, before)
    assert result.picked.numel() == 200
    true_p = probs.gather(1, y.view(-1, 1)).squeeze(1)
    top2 = probs.topk(2, dim=1)
    margin = true_p - torch.where(top2.indices[:, 0] == y, top2.values[:, 1], top2.values[:, 0])
    picked = torch.zeros(1000, dtype=torch.bool)
    picked[result.picked] = True
    assert margin[picked].max() <= margin[~picked].min()
    right = top2.indices[:, 0] == y
    second_choice = torch.where(right, top2.indices[:, 1], top2.indices[:, 0])
    assert torch.equal(result.labels[picked], second_choice[picked])
    assert (result.labels[picked] != y[picked]).all()
    assert torch.equal(result.labels[~picked], y[~picked])
    # The flipped examples really are the confusing ones.
    assert right[picked].float().mean() < right[~picked].float().mean() - 0.2


def test_feature_noise_trains_the_reference_once_per_seed_and_nests_levels(
    feature_data, monkeypatch
):
    x, y, _ = feature_data  # the fixture has trained and cached the reference of seed 0
    calls = []
    real = label_module._train_reference
    monkeypatch.setattr(label_module, "_train_reference", lambda *a: calls.append(a[3]) or real(*a))
    low, high = (feature_noise(x, y).corrupt(y, 10, lv, gen(7)) for lv in (0.1, 0.3))
    again = feature_noise(x, y).corrupt(y, 10, 0.3, gen(8))  # gen is unused: seed decides
    other, other_high = (feature_noise(x, y, seed=1).corrupt(y, 10, lv, gen()) for lv in (0.3, 0.5))
    assert calls == [1]
    assert set(low.picked.tolist()) <= set(high.picked.tolist())
    assert set(other.picked.tolist()) <= set(other_high.picked.tolist())
    assert torch.equal(high.labels, again.labels)
    assert set(high.picked.tolist()) != set(other.picked.tolist())


def test_feature_noise_needs_the_training_images_first():
    with pytest.raises(RuntimeError, match="prepare"):
        make_noise("labels.feature").corrupt(LABELS, 10, 0.1, gen())
    with pytest.raises(StudyError, match="'reference_epochs'"):
        make_noise("labels.feature", {"reference_epochs": 0})


# --- labels.shuffle ---------------------------------------------------------------------

BIG = torch.arange(20000) % 10


@pytest.mark.parametrize("level", [0.0, 0.1, 0.37, 1.0])
def test_label_shuffle_permutes_exactly_round_x_n_labels_and_keeps_class_counts(level):
    before = LABELS.clone()
    result = make_noise("labels.shuffle").corrupt(LABELS, 10, level, gen())
    assert torch.equal(LABELS, before) and result.source is None
    assert result.picked.numel() == round(level * 1000) == result.picked.unique().numel()
    assert torch.equal(result.original, LABELS[result.picked])
    assert torch.equal(result.labels.bincount(minlength=10), LABELS.bincount(minlength=10))
    # The picked labels are permuted among themselves; the others stay.
    assert torch.equal(result.labels[result.picked].sort().values, result.original.sort().values)
    untouched = torch.ones(1000, dtype=torch.bool)
    untouched[result.picked] = False
    assert torch.equal(result.labels[untouched], LABELS[untouched])
    if level == 0:
        assert torch.equal(result.labels, LABELS)


@pytest.mark.parametrize("level", [0.3, 1.0])
def test_label_shuffle_changes_about_one_minus_one_over_k_of_the_picked_labels(level):
    result = make_noise("labels.shuffle").corrupt(BIG, 10, level, gen(2))
    picked = result.picked.numel()
    # A picked example of class c gets its own class back with probability n_c / picked.
    keep = float((result.original.bincount(minlength=10).double() ** 2).sum()) / picked**2
    low, high = binomial_interval(picked, 1 - keep)
    assert abs(keep - 0.1) < 0.001
    assert low <= int((result.labels != BIG).sum()) <= high


def test_label_shuffle_at_one_is_a_random_permutation_of_all_labels_depending_on_the_seed():
    noise = make_noise("labels.shuffle")
    a, b = (noise.corrupt(BIG, 10, 1.0, gen(0)) for _ in range(2))
    other = noise.corrupt(BIG, 10, 1.0, gen(1))
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.labels, other.labels)
    assert torch.equal(a.labels.sort().values, BIG.sort().values)
    # Not a structured permutation: the new label is independent of the old one.
    table = torch.zeros(10, 10)
    table.index_put_((BIG, a.labels), torch.ones(20000), accumulate=True)
    assert stats.chi2_contingency(table.numpy()).pvalue > 1e-4


def test_label_shuffle_picks_are_nested_and_match_labels_uniform():
    noise = make_noise("labels.shuffle")
    low, high = (noise.corrupt(LABELS, 10, x, gen(5)) for x in (0.2, 0.6))
    other = noise.corrupt(LABELS, 10, 0.2, gen(6))
    uniform = make_noise("labels.uniform").corrupt(LABELS, 10, 0.2, gen(5))
    assert set(low.picked.tolist()) <= set(high.picked.tolist())
    assert set(low.picked.tolist()) != set(other.picked.tolist())
    assert torch.equal(low.picked, uniform.picked)


# --- labels.dilution --------------------------------------------------------------------


@pytest.mark.parametrize("copies", [0, 1, 3])
def test_dilution_appends_k_noisy_copies_of_every_clean_example(copies):
    noise = make_noise("labels.dilution")
    before = LABELS.clone()
    result = noise.corrupt(LABELS, 10, float(copies), gen())
    n = 1000
    assert torch.equal(LABELS, before)
    assert noise.size_factor(copies) == 1 + copies
    assert result.labels.shape == result.source.shape == ((1 + copies) * n,)
    assert torch.equal(result.labels[:n], LABELS)  # the clean examples come first, unchanged
    assert torch.equal(result.source[:n], torch.arange(n))
    assert (result.source.bincount(minlength=n) == 1 + copies).all()
    # Copy j of example i is example (1 + j)·N + i; every copy is picked.
    assert torch.equal(result.source, torch.arange(n).repeat(1 + copies))
    assert torch.equal(result.picked, torch.arange(n, (1 + copies) * n))
    assert torch.equal(result.original, LABELS[result.source[result.picked]])


def test_dilution_copy_labels_are_uniform_and_independent_of_the_true_label():
    result = make_noise("labels.dilution").corrupt(BIG, 10, 2.0, gen(3))
    copies = result.labels[result.picked]
    assert copies.numel() == 40000
    counts = copies.bincount(minlength=10)
    low, high = binomial_interval(40000, 0.1)
    assert ((low <= counts) & (counts <= high)).all(), counts
    assert stats.chisquare(counts.numpy()).pvalue > 1e-4
    assert low <= int((copies == result.original).sum()) <= high  # true label 1 time in K


def test_dilution_exclude_true_never_gives_a_copy_its_true_label():
    result = make_noise("labels.dilution", {"exclude_true": True}).corrupt(BIG, 10, 1.0, gen())
    copies = result.labels[result.picked]
    assert (copies != result.original).all()
    shift = (copies - result.original) % 10  # uniform over the 9 other classes
    counts = shift.bincount(minlength=10)[1:]
    assert stats.chisquare(counts.numpy()).pvalue > 1e-4


def test_dilution_levels_are_nested_and_depend_on_the_seed():
    noise = make_noise("labels.dilution")
    one, three = (noise.corrupt(LABELS, 10, k, gen(4)) for k in (1.0, 3.0))
    again = noise.corrupt(LABELS, 10, 3.0, gen(4))
    other = noise.corrupt(LABELS, 10, 3.0, gen(5))
    assert torch.equal(three.labels, again.labels)
    assert torch.equal(three.labels[:2000], one.labels)  # level 1's copies are level 3's first
    assert not torch.equal(three.labels, other.labels)


@pytest.mark.parametrize(("level", "message"), [(1.5, "whole number"), (101.0, r"\[0, 100\]")])
def test_dilution_level_must_be_a_whole_number_of_copies_up_to_100(level, message):
    with pytest.raises(StudyError, match=message) as err:
        make_noise("labels.dilution").corrupt(LABELS, 10, level, gen())
    assert "\n" not in str(err.value)


def test_only_dilution_goes_beyond_one_and_no_other_noise_changes_the_size():
    for name, cls in NOISES.items():
        assert cls.max_level == (100.0 if name == "labels.dilution" else 1.0), name
        if issubclass(cls, LabelNoise) and name != "labels.dilution":
            assert cls.model_construct().size_factor(1.0) == 1, name


# --- levels beyond [0, 1] in a study ----------------------------------------------------


def study_with(setups, levels=None):
    return {"name": "s", "seeds": [0], **({"levels": levels} if levels else {}), "setups": setups}


def test_dilution_levels_above_one_are_accepted_own_or_study_wide():
    mixed = study_with(
        [
            {"name": "dil", "noise": "labels.dilution", "levels": [0, 1, 2, 5]},
            {"name": "uni", "noise": "labels.uniform"},
        ],
        levels=[0.0, 0.5],
    )
    study = parse_study(mixed)
    assert study.levels_of(study.setups[0]) == [0.0, 1.0, 2.0, 5.0]
    assert sorted(r.level for r in plan(study) if r.setup == "dil") == [1.0, 2.0, 5.0]
    alone = parse_study(study_with([{"name": "d", "noise": "labels.dilution"}], [0, 2, 100]))
    assert [r.level for r in plan(alone)] == [0.0, 2.0, 100.0]


@pytest.mark.parametrize(
    ("setup", "levels", "expected"),
    [
        (
            {"name": "uni", "noise": "labels.uniform", "levels": [0, 2]},
            None,
            "field 'setups.0': setup 'uni' (labels.uniform), levels.1: level 2 is outside its "
            "range [0, 1]",
        ),
        (
            {"name": "uni", "noise": "labels.uniform"},
            [0.0, 1.5],
            "field 'setups': setup 'uni' (labels.uniform), study levels.1: level 1.5 is outside "
            "its range [0, 1]",
        ),
        (
            {"name": "px", "noise": "pixels.gaussian", "levels": [0.5, 3]},
            None,
            "setup 'px' (pixels.gaussian), levels.1: level 3 is outside its range [0, 1]",
        ),
        (
            {"name": "dil", "noise": "labels.dilution", "levels": [0, 1.5]},
            None,
            "setup 'dil' (labels.dilution), levels.1: level 1.5 is not a whole number",
        ),
        (
            {"name": "dil", "noise": "labels.dilution"},
            [0.0, 0.5],
            "setup 'dil' (labels.dilution), study levels.1: level 0.5 is not a whole number",
        ),
        (
            {"name": "dil", "noise": "labels.dilution", "levels": [0, 101]},
            None,
            "field 'setups.0.levels.1': Input should be less than or equal to 100",
        ),
    ],
)
def test_a_level_outside_the_noises_range_is_one_line_naming_the_setup(setup, levels, expected):
    with pytest.raises(StudyError) as err:
        parse_study(study_with([setup], levels))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_the_cli_rejects_a_level_outside_the_noises_range_with_one_line_and_exit_2(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('levels = [0, 2]\n[[setups]]\nname = "uni"\nnoise = "labels.uniform"\n')
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "setup 'uni' (labels.uniform)" in lines[0] and "[0, 1]" in lines[0]
    assert not (tmp_path / "out").exists()


def test_the_noise_zoo_preset_runs_every_registered_noise():
    study = load_preset("noise-zoo")
    assert {s.noise for s in study.setups} == set(NOISES)
    assert study.description and len(study.seeds) == 2 and study.train.epochs == 5
    runs = plan(study)
    assert len(runs) == len(study.setups) * 3 * 2 + 2
    dilution = [r for r in runs if r.noise == "labels.dilution"]
    assert sorted({r.level for r in dilution}) == [1.0, 2.0, 5.0]
    assert max(r.level for r in runs if r.noise != "labels.dilution") <= 1.0


# --- pixel and image noises: shared behaviour -------------------------------------------

INPUT_NOISES = ["pixels.gaussian", "pixels.saltpepper", "pixels.shuffle", "images.random"]
REDRAWN = [
    ("pixels.gaussian", {}),
    ("pixels.saltpepper", {}),
    ("pixels.shuffle", {"mode": "redraw"}),
    ("images.random", {}),
    ("pixels.replace", {}),
]
TRAIN = torch.randint(0, 256, (500, 784), dtype=torch.uint8, generator=gen(0, "train"))


def fitted(name, **params):
    noise = make_noise(name, params)
    noise.fit(TRAIN)
    return noise


@pytest.mark.parametrize(("name", "params"), [*REDRAWN, ("pixels.shuffle", {})])
def test_each_run_in_a_stack_uses_only_its_own_level_and_stream(name, params):
    noise = fitted(name, **params)
    x = torch.rand(3, 8, 784)
    before = x.clone()
    levels = torch.tensor([0.2, 0.6, 0.9])
    together = noise.apply(x, levels, [gen(s, "pixels") for s in (0, 1, 2)])
    alone = noise.apply(x[1:2], levels[1:2], [gen(1, "pixels")])
    assert torch.equal(together[1:2], alone)
    assert torch.equal(x, before)  # the input is not modified
    assert torch.equal(noise.apply(x, torch.zeros(3), [gen()] * 3), x)  # level 0: unchanged


@pytest.mark.parametrize(("name", "params"), REDRAWN)
def test_input_noise_is_redrawn_at_every_step(name, params):
    noise = fitted(name, **params)
    g = gen(0, "pixels")
    x = torch.rand(1, 64, 784)
    assert not torch.equal(
        noise.apply(x, torch.tensor([0.5]), [g]), noise.apply(x, torch.tensor([0.5]), [g])
    )


@pytest.mark.parametrize("name", INPUT_NOISES)
def test_parameters_are_validated(name):
    with pytest.raises(StudyError, match="'colour'"):
        make_noise(name, {"colour": 1})
    assert make_noise(name, {"fixed": True}).fixed and not make_noise(name).fixed
    assert make_noise(name).target == "pixels"


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("pixels.gaussian", {"sigma": 0}, "sigma"),
        ("pixels.gaussian", {"sigma": float("nan")}, "sigma"),
        ("pixels.saltpepper", {"salt": 1.5}, "salt"),
        ("pixels.shuffle", {"mode": "sometimes"}, "mode"),
        ("images.random", {"stats": "median"}, "stats"),
    ],
)
def test_bad_input_noise_parameters_name_the_parameter(name, params, field):
    with pytest.raises(StudyError, match=f"'{field}'"):
        make_noise(name, params)


def test_every_registered_noise_has_a_matching_base_class_and_target():
    for name, cls in NOISES.items():
        noise = cls(**({"matrix": MATRIX3} if name == "labels.matrix" else {}))
        base = LabelNoise if name.startswith("labels.") else PixelNoise
        assert isinstance(noise, base)
        assert noise.target == ("labels" if base is LabelNoise else "pixels")


# --- pixels.gaussian --------------------------------------------------------------------

SENTINEL = 0.5


@pytest.mark.parametrize("level", [0.1, 0.5, 1.0])
def test_gaussian_perturbs_a_binomial_share_of_pixels(level):
    x = torch.full((1, 64, 784), SENTINEL)
    out = fitted("pixels.gaussian").apply(x, torch.tensor([level]), [gen(0, "pixels")])
    low, high = binomial_interval(64 * 784, level)
    assert low <= int((out != SENTINEL).sum()) <= high


def test_gaussian_noise_is_normal_with_sigma_and_clipped():
    x = torch.full((1, 64, 784), SENTINEL)
    small = fitted("pixels.gaussian", sigma=0.05).apply(x, torch.tensor([1.0]), [gen()])
    z = ((small - SENTINEL) / 0.05).flatten().numpy()[:20000]
    assert stats.kstest(z, "norm").pvalue > 1e-4
    big = fitted("pixels.gaussian", sigma=2.0).apply(x, torch.tensor([1.0]), [gen()])
    assert big.min() == 0.0 and big.max() == 1.0
    clipped = int((big == 0).sum() + (big == 1).sum())
    low, high = binomial_interval(64 * 784, 2 * stats.norm.sf(0.25))
    assert low <= clipped <= high


# --- pixels.saltpepper ------------------------------------------------------------------


@pytest.mark.parametrize(("level", "salt"), [(0.1, 0.5), (0.4, 0.2), (0.9, 0.9)])
def test_saltpepper_rate_and_salt_share_are_binomial(level, salt):
    x = torch.full((1, 64, 784), SENTINEL)
    out = fitted("pixels.saltpepper", salt=salt).apply(x, torch.tensor([level]), [gen()])
    changed = out != SENTINEL
    low, high = binomial_interval(64 * 784, level)
    assert low <= int(changed.sum()) <= high
    assert set(out[changed].unique().tolist()) <= {0.0, 1.0}
    low, high = binomial_interval(int(changed.sum()), salt)
    assert low <= int((out == 1.0).sum()) <= high


def test_saltpepper_extremes_are_all_salt_or_all_pepper():
    x = torch.full((1, 16, 784), SENTINEL)
    salt = fitted("pixels.saltpepper", salt=1.0).apply(x, torch.tensor([1.0]), [gen()])
    pepper = fitted("pixels.saltpepper", salt=0.0).apply(x, torch.tensor([1.0]), [gen()])
    assert (salt == 1).all() and (pepper == 0).all()


# --- pixels.shuffle ---------------------------------------------------------------------

DISTINCT = torch.arange(784.0).div(784).expand(1, 16, 784)  # every position its own value


@pytest.mark.parametrize("mode", ["fixed", "redraw"])
@pytest.mark.parametrize("level", [0.05, 0.5, 1.0])
def test_shuffle_moves_exactly_round_x_f_positions_and_keeps_each_images_values(mode, level):
    out = fitted("pixels.shuffle", mode=mode).apply(DISTINCT, torch.tensor([level]), [gen()])
    assert ((out != DISTINCT).sum(-1) == round(level * 784)).all()
    assert torch.equal(out.sort(-1).values, DISTINCT)


def test_fixed_shuffle_is_one_permutation_for_every_image_and_step_but_depends_on_the_seed():
    noise = fitted("pixels.shuffle")
    g = gen(0, "pixels")
    first, second = (noise.apply(DISTINCT, torch.tensor([0.3]), [g]) for _ in range(2))
    assert torch.equal(first, second)
    assert (first == first[:, :1]).all()  # all 16 images permuted alike
    other = noise.apply(DISTINCT, torch.tensor([0.3]), [gen(1, "pixels")])
    assert not torch.equal(first, other)
    moved = {
        x: set(noise.permutation(784, x, g).ne(torch.arange(784)).nonzero().flatten().tolist())
        for x in (0.1, 0.4)
    }
    assert moved[0.1] <= moved[0.4]


def test_redrawn_shuffle_differs_between_images():
    out = fitted("pixels.shuffle", mode="redraw").apply(DISTINCT, torch.tensor([0.3]), [gen()])
    assert len({tuple(img.tolist()) for img in out[0]}) == 16


# --- images.random ----------------------------------------------------------------------


def structured_train() -> torch.Tensor:
    """Position p has mean 70 + p·115/783 and spread 15: per-pixel moments are recognisable, and
    all but a negligible share of values lie far from the clipping bounds."""
    g = gen(0, "structured")
    base = torch.linspace(70, 185, 784)
    return (base + 15 * torch.randn(4000, 784, generator=g)).round().clamp(0, 255).byte()


@pytest.mark.parametrize("level", [0.1, 0.5, 0.9])
def test_random_images_replace_a_binomial_share_of_whole_images(level):
    x = torch.full((1, 2000, 784), SENTINEL)
    out = fitted("images.random").apply(x, torch.tensor([level]), [gen()])
    changed = (out != SENTINEL).sum(-1)
    assert set(changed.unique().tolist()) <= {0, 784}  # whole images or nothing
    low, high = binomial_interval(2000, level)
    assert low <= int((changed > 0).sum()) <= high


@pytest.mark.parametrize("stats_kind", ["pixel", "global"])
def test_random_images_have_the_training_mean_and_variance(stats_kind):
    train = structured_train()
    noise = make_noise("images.random", {"stats": stats_kind})
    noise.fit(train)
    out = noise.apply(torch.zeros(1, 4000, 784), torch.tensor([1.0]), [gen()])[0] * 255
    data = train.double()
    if stats_kind == "pixel":
        assert torch.allclose(out.mean(0).double(), data.mean(0), atol=2.5)
        assert torch.allclose(out.std(0).double(), data.std(0), atol=2.0)
    else:
        assert out.mean().item() == pytest.approx(data.mean().item(), abs=1.0)
        assert out.std().item() == pytest.approx(data.std().item(), rel=0.02)
        assert torch.allclose(out.mean(0), out.mean(), atol=5.0)  # no per-position structure


def test_random_images_need_fit_first():
    with pytest.raises(RuntimeError, match="fit"):
        make_noise("images.random").apply(torch.rand(1, 2, 784), torch.tensor([0.5]), [gen()])


# --- fixed noise: fix() -----------------------------------------------------------------

FIXABLE = [
    ("pixels.gaussian", {}),
    ("pixels.saltpepper", {}),
    ("pixels.shuffle", {}),
    ("pixels.shuffle", {"mode": "redraw"}),
    ("images.random", {}),
    ("pixels.replace", {}),
    ("pixels.replace", {"values": "binary", "exact": True}),
]


@pytest.mark.parametrize(("name", "params"), FIXABLE)
def test_fix_is_a_pure_function_of_the_seed_and_leaves_the_training_set_alone(name, params):
    noise = fitted(name, fixed=True, **params)
    before = TRAIN.clone()
    a = noise.fix(TRAIN, 0.4, gen(0, "pixels"), chunk=128)
    b = noise.fix(TRAIN, 0.4, gen(0, "pixels"), chunk=128)
    c = noise.fix(TRAIN, 0.4, gen(1, "pixels"), chunk=128)
    assert torch.equal(TRAIN, before)
    assert a.dtype == torch.uint8 and a.shape == TRAIN.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, TRAIN)
    assert torch.equal(noise.fix(TRAIN, 0.0, gen(), chunk=128), TRAIN)


@pytest.mark.parametrize(
    ("name", "params", "p"),
    [
        ("pixels.saltpepper", {}, 0.3),
        ("pixels.replace", {"values": "binary"}, 0.3),
        # A perturbation changes the stored byte when |255·sigma·z| >= 0.5.
        ("pixels.gaussian", {}, 0.3 * 2 * stats.norm.sf(0.5 / (255 * 0.3))),
    ],
)
def test_fixed_pixel_noise_rate_is_inside_a_binomial_interval(name, params, p):
    train = torch.full((300, 784), 128, dtype=torch.uint8)
    out = fitted(name, **params).fix(train, 0.3, gen(0, "pixels"), chunk=100)
    low, high = binomial_interval(300 * 784, p)
    assert low <= int((out != 128).sum()) <= high


def test_fixed_random_images_replace_a_binomial_share_of_examples():
    train = torch.full((3000, 784), 128, dtype=torch.uint8)
    out = fitted("images.random").fix(train, 0.3, gen(0, "pixels"), chunk=1000)
    low, high = binomial_interval(3000, 0.3)
    assert low <= int((out != 128).any(-1).sum()) <= high


def test_fixed_shuffle_fix_matches_apply_at_every_step():
    noise = fitted("pixels.shuffle")
    fixed = noise.fix(TRAIN, 0.5, gen(3, "pixels"))
    applied = noise.apply(TRAIN[None, :8].float() / 255, torch.tensor([0.5]), [gen(3, "pixels")])
    assert torch.equal(fixed[:8], (applied[0] * 255).round().byte())


# --- the engine: the test set is never touched ------------------------------------------

ENGINE_SETUPS = [
    ("labels.pairflip", {}),
    ("labels.dilution", {}),
    ("labels.shuffle", {}),
    ("labels.matrix", {"matrix": torch.eye(10).roll(1, 1).tolist()}),
    ("labels.feature", {"reference_epochs": 1}),
    ("pixels.gaussian", {}),
    ("pixels.saltpepper", {}),
    ("pixels.shuffle", {}),
    ("pixels.shuffle", {"mode": "redraw"}),
    ("images.random", {}),
]


@pytest.mark.parametrize(("name", "params"), ENGINE_SETUPS)
def test_the_engine_trains_every_noise_and_never_touches_the_data(small_data, name, params):
    study = {
        "name": "types",
        "seeds": [0],
        "levels": [0.0, 2.0 if name == "labels.dilution" else 0.5],
        "model": {"hidden": [32]},
        "train": {"epochs": 1, "batch_size": 64},
        "setups": [{"name": "s", "noise": name, "params": params}],
    }
    test_x, test_y = small_data.test_x.clone(), small_data.test_y.clone()
    train_x, train_y = small_data.train_x.clone(), small_data.train_y.clone()
    clean, noisy = [train_pack([run], small_data)[0] for run in plan(parse_study(study))]
    assert torch.equal(small_data.train_x, train_x) and torch.equal(small_data.train_y, train_y)
    assert torch.equal(small_data.test_x, test_x) and torch.equal(small_data.test_y, test_y)
    assert clean.status == noisy.status == "done"
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    numbers = [[r.epochs[-1][k] for k in keys] for r in (clean, noisy)]
    assert numbers[0] != numbers[1]  # the same seed with the noise: it was trained with it
