"""Study files are validated field by field; plans share the clean baseline; packs group runs."""

from pathlib import Path

import pytest

from noisebench.errors import StudyError
from noisebench.study import (
    CLEAN,
    Study,
    load_preset,
    load_study,
    packs,
    parse_study,
    plan,
    preset_names,
)

MINIMAL = {"name": "s", "setups": [{"name": "labels", "noise": "labels.uniform"}]}


def with_changes(**changes):
    return {**MINIMAL, **changes}


def test_shipped_presets_include_the_default_and_the_quick_study():
    assert {"seed000", "quick"} <= set(preset_names())


def test_default_study_is_39_runs_with_one_shared_clean_baseline_per_seed():
    study = load_preset("seed000")
    runs = plan(study)
    assert len(runs) == 2 * 6 * 3 + 3
    clean = [r for r in runs if r.setup == CLEAN]
    assert sorted(r.seed for r in clean) == [0, 1, 2]
    assert all(r.noise is None and r.level == 0 for r in clean)
    assert study.train.lr == 0.01 and study.train.momentum == 0.9
    assert study.train.batch_size == 64 and study.train.epochs == 10
    assert study.model.hidden == [128, 128] and study.model.activation == "relu"


def test_run_ids_are_unique_and_stable():
    runs = plan(load_preset("seed000"))
    assert len({r.run_id for r in runs}) == len(runs)
    assert [r.run_id for r in plan(load_preset("seed000"))] == [r.run_id for r in runs]


def test_packs_group_compatible_runs_and_respect_the_size_limit():
    study = load_preset("seed000")
    runs = plan(study)
    assert [len(p) for p in packs(runs, 64)] == [39]
    assert [len(p) for p in packs(runs, 16)] == [16, 16, 7]
    other = parse_study(with_changes(train={"batch_size": 32}))
    assert len(packs(runs + plan(other), 64)) == 2


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"colour": "blue"}, "colour", "unknown key"),
        ({"levels": [0.1, 1.5]}, "setups", "study levels.1: level 1.5 is outside its range [0, 1]"),
        ({"levels": [0.1, 150]}, "levels.1", "less than or equal to 100"),
        ({"levels": [-0.1]}, "levels.0", "greater than or equal to 0"),
        ({"train": {"epochs": 0}}, "train.epochs", "greater than 0"),
        ({"train": {"batch_size": -4}}, "train.batch_size", "greater than 0"),
        ({"train": {"lr": "fast"}}, "train.lr", "valid number"),
        ({"model": {"hidden": []}}, "model.hidden", "at least 1"),
        ({"model": {"activation": "gelu"}}, "model.activation", "relu"),
        ({"seeds": [1, 1]}, "seeds", "unique"),
        ({"seeds": []}, "seeds", "at least 1"),
        ({"seeds": ["0"]}, "seeds.0", "valid integer"),
        ({"seeds": [2**63]}, "seeds.0", "less than 9223372036854775808"),
        ({"levels": [0.5, 0.5]}, "levels", "levels must be unique"),
        ({"train": {"epochs": True}}, "train.epochs", "valid integer"),
        ({"train": {"epochs": 10**21}}, "train.epochs", "less than or equal to 10000"),
        ({"train": {"lr": float("inf")}}, "train.lr", "finite number"),
        ({"train": {"weight_decay": float("inf")}}, "train.weight_decay", "finite number"),
        ({"train": {"gamma": float("nan")}}, "train.gamma", "finite number"),
        ({"data": {"image_size": [28, 5000]}}, "data.image_size.1", "less than or equal to 4096"),
        ({"description": "d" * 5000}, "description", "at most 4000 characters"),
    ],
)
def test_bad_study_values_are_rejected_naming_the_field(changes, field, message):
    with pytest.raises(StudyError) as err:
        parse_study(with_changes(**changes))
    text = str(err.value)
    assert f"field '{field}'" in text and message in text and "\n" not in text


def test_setups_must_have_known_noise_unique_names_and_not_the_reserved_name():
    with pytest.raises(StudyError, match="unknown noise 'pixels.blur'"):
        parse_study(with_changes(setups=[{"name": "a", "noise": "pixels.blur"}]))
    twice = [{"name": "a", "noise": "labels.uniform"}, {"name": "a", "noise": "pixels.replace"}]
    with pytest.raises(StudyError, match="duplicate setup name 'a'"):
        parse_study(with_changes(setups=twice))
    with pytest.raises(StudyError, match="reserved"):
        parse_study(with_changes(setups=[{"name": CLEAN, "noise": "labels.uniform"}]))


def test_study_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("levels = [0.1,\n")
    with pytest.raises(StudyError, match="bad.toml: not valid TOML"):
        load_study(bad)
    with pytest.raises(StudyError, match="study file not found"):
        load_study(tmp_path / "missing.toml")


def test_study_file_name_defaults_to_its_stem(tmp_path):
    path = tmp_path / "my-study.toml"
    path.write_text('[[setups]]\nname = "l"\nnoise = "labels.uniform"\nlevels = [0, 0.2]\n')
    study = load_study(path)
    assert study.name == "my-study"
    assert len(plan(study)) == 2 * 3


def test_digest_tracks_everything_that_changes_numbers():
    a = parse_study(MINIMAL)
    assert a.digest() == parse_study(MINIMAL).digest()
    assert a.digest() != parse_study(with_changes(seeds=[5])).digest()
    assert a.digest() != parse_study(with_changes(train={"lr": 0.1})).digest()


def test_every_example_study_file_loads_and_plans():
    examples = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))
    assert examples
    for path in examples:
        assert Study.from_toml(path).plan(), path


def test_a_setup_may_train_on_its_own_sizes():
    study = parse_study(
        {
            "name": "sizes",
            "seeds": [0],
            "levels": [0.0, 1.0],
            "train_sizes": ["all"],
            "setups": [
                {"name": "permuted", "noise": "labels.shuffle", "train_sizes": [1000]},
                {"name": "whole", "noise": "labels.shuffle", "levels": [0.0]},
            ],
        }
    )
    runs = {(r.setup, r.level, r.train_size) for r in plan(study)}
    assert runs == {("clean", 0.0, 1000), ("permuted", 1.0, 1000), ("clean", 0.0, None)}
    with pytest.raises(StudyError, match="setups.0.train_sizes"):
        parse_study(
            {
                "name": "x",
                "setups": [{"name": "p", "noise": "labels.uniform", "train_sizes": [5, 5]}],
            }
        )


def test_the_main_views_show_each_setup_at_its_own_largest_size():
    from noisebench.summary import main_train_size, main_views

    study = parse_study(
        {
            "name": "views",
            "levels": [0.0, 1.0],
            "train_sizes": ["all"],
            "setups": [
                {"name": "permuted", "noise": "labels.shuffle", "train_sizes": [300, 1000]},
                {"name": "whole", "noise": "labels.shuffle", "levels": [0.0]},
            ],
        }
    )
    assert main_train_size(study, "permuted") == 1000 and main_train_size(study) is None
    assert main_views(study, "permuted", 1.0, 1000) == ["permuted"]
    assert main_views(study, "permuted", 1.0, 300) == []
    assert main_views(study, "clean", 0.0, 1000) == ["permuted"]
    assert main_views(study, "clean", 0.0, None) == ["whole"]


def test_setup_names_must_be_readable_and_short():
    for name, message in [
        ("  ", "setup name is blank"),
        ("tab\there", "control character"),
        ("n" * 101, "at most 100 characters"),
    ]:
        with pytest.raises(StudyError, match=message):
            parse_study(with_changes(setups=[{"name": name, "noise": "labels.uniform"}]))


def test_the_study_and_its_json_round_trip_keep_their_strict_types():
    study = parse_study(with_changes(data={"image_size": [32, 24]}, levels=[0, 0.5]))
    assert study.data.image_size == (32, 24) and study.levels == [0.0, 0.5]
    again = parse_study(study.model_dump(mode="json"))  # as the store keeps it
    assert again == study and again.digest() == study.digest()


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "examples").glob("*.toml")), ids=lambda p: p.name
)
def test_every_example_study_file_is_valid_and_trains_on_the_whole_set(path):
    from noisebench.study import load_study

    study = load_study(path)
    assert "all" in study.train_sizes  # the full-size versions of presets
