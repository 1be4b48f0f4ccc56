"""The command line: good runs print the table, bad input gets one line, exit 2, no files."""

import dataclasses
import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from noisebench import data
from noisebench.cli import app
from noisebench.store import Store

FASHION = Path("/usr/share/datasets/fashion-mnist")
SMALL_STUDY = """
name = "cli"
seeds = [0]
levels = [0.0, 0.5]
[train]
epochs = 1
batch_size = 128
[[setups]]
name = "label noise"
noise = "labels.uniform"
"""


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_fails(result, *fragments: str) -> None:
    """Exit code 2, one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def study_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def test_run_trains_and_prints_the_table(tmp_path, out):
    result = invoke(
        "run",
        study_file(tmp_path, SMALL_STUDY),
        "--out",
        str(out),
        "--dataset",
        "mnist-sample",
        "--no-report",
    )
    assert result.exit_code == 0, result.output
    assert "final test metrics" in result.stdout and "label noise" in result.stdout
    assert (out / "results.sqlite").exists() and (out / "results.csv").exists()
    shown = invoke("show", str(out))
    assert shown.exit_code == 0 and "mnist-sample" in shown.stdout


def test_epochs_and_seeds_options_override_the_study(tmp_path, out):
    result = invoke(
        "run",
        study_file(tmp_path, SMALL_STUDY),
        "--out",
        str(out),
        "--dataset",
        "mnist-sample",
        "--epochs",
        "2",
        "--seeds",
        "3,4",
        "--no-report",
    )
    assert result.exit_code == 0, result.output
    with Store(out) as store:
        runs = store.runs()
        assert sorted({r["seed"] for r in runs}) == [3, 4]
        assert {len([e for e in store.epochs() if e["run_id"] == r["run_id"]]) for r in runs} == {2}


def test_presets_and_datasets_are_listed():
    presets = invoke("presets")
    assert presets.exit_code == 0 and "seed000" in presets.stdout and "quick" in presets.stdout
    datasets = invoke("datasets")
    assert datasets.exit_code == 0
    for name in ("mnist", "fashion-mnist", "kmnist", "mnist-sample"):
        assert name in datasets.stdout


# --- bad input: one test each -------------------------------------------------------------


def test_unknown_preset(out):
    assert_fails(invoke("run", "--preset", "nope", "--out", str(out)), "unknown preset 'nope'")
    assert not out.exists()


def test_unknown_study_key(tmp_path, out):
    path = study_file(tmp_path, "colour = 'red'\n" + SMALL_STUDY)
    assert_fails(invoke("run", path, "--out", str(out)), "'colour'", "unknown key")
    assert not out.exists()


def test_level_outside_zero_one(tmp_path, out):
    path = study_file(tmp_path, SMALL_STUDY.replace("[0.0, 0.5]", "[0.0, 1.5]"))
    assert_fails(invoke("run", path, "--out", str(out)), "levels.1", "less than or equal to 1")
    assert not out.exists()


def test_unknown_noise(tmp_path, out):
    path = study_file(tmp_path, SMALL_STUDY.replace("labels.uniform", "labels.wobble"))
    assert_fails(invoke("run", path, "--out", str(out)), "unknown noise 'labels.wobble'")
    assert not out.exists()


def test_unknown_dataset(out):
    result = invoke("run", "--preset", "quick", "--dataset", "cifar", "--out", str(out))
    assert_fails(result, "unknown dataset 'cifar'")
    assert not out.exists()


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_epochs_not_positive(out, epochs):
    result = invoke("run", "--preset", "quick", "--epochs", epochs, "--out", str(out))
    assert_fails(result, "train.epochs", "greater than 0")
    assert not out.exists()


def test_empty_hidden_sizes(tmp_path, out):
    path = study_file(tmp_path, "[model]\nhidden = []\n" + SMALL_STUDY)
    assert_fails(invoke("run", path, "--out", str(out)), "model.hidden")
    assert not out.exists()


def test_bad_seeds_option(out):
    assert_fails(invoke("run", "--preset", "quick", "--seeds", "1,x", "--out", str(out)), "--seeds")


def test_corrupt_idx_file(tmp_path, out, tiny_idx_dir):
    (tiny_idx_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip at all")
    result = invoke(
        "run",
        "--preset",
        "quick",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(tiny_idx_dir),
        "--out",
        str(out),
    )
    assert_fails(result, "t10k-labels-idx1-ubyte.gz")
    assert not out.exists()


def test_truncated_idx_file(tmp_path, out, tiny_idx_dir):
    images = tiny_idx_dir / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[: len(raw) - 100]))
    result = invoke(
        "run",
        "--preset",
        "quick",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(tiny_idx_dir),
        "--out",
        str(out),
    )
    assert_fails(result, "train-images-idx3-ubyte.gz")
    assert not out.exists()


def test_checksum_mismatch(isolated_data_env, local_server, tiny_idx_dir, monkeypatch, out):
    url, served = local_server
    for name in data.IDX_FILES:
        (served / name).write_bytes((tiny_idx_dir / name).read_bytes())
    info = dataclasses.replace(data.DATASETS["kmnist"], mirrors=(url,))
    monkeypatch.setitem(data.DATASETS, "kmnist", info)
    monkeypatch.setattr(data, "_downloader", data.pooch.HTTPDownloader)
    result = invoke("run", "--preset", "quick", "--dataset", "kmnist", "--out", str(out))
    assert_fails(result, "checksum mismatch")
    assert not out.exists()


def test_named_dataset_absent_offline(isolated_data_env, out):
    result = invoke("run", "--preset", "quick", "--dataset", "kmnist", "--out", str(out))
    assert_fails(result, "'kmnist' is not available offline")
    assert not out.exists()


def test_output_path_that_cannot_be_a_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = invoke("run", "--preset", "quick", "--out", str(blocker / "sub"))
    assert_fails(result, "not writable")
    result = invoke("run", "--preset", "quick", "--out", str(blocker))
    assert_fails(result, "not a directory")


def test_unusable_device(out):
    assert_fails(invoke("run", "--preset", "quick", "--device", "tpu", "--out", str(out)), "tpu")
    assert not out.exists()


def test_show_on_a_directory_without_results(tmp_path):
    assert_fails(invoke("show", str(tmp_path)), "no results found")


def test_study_file_and_preset_together(tmp_path):
    path = study_file(tmp_path, SMALL_STUDY)
    assert_fails(invoke("run", path, "--preset", "quick"), "not both")


# --- real processes -----------------------------------------------------------------------


def test_python_dash_m_gives_exit_2_and_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "noisebench",
            "run",
            "--preset",
            "nope",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown preset 'nope' (known: quick, seed000)"
    ] or proc.stderr.startswith("error: unknown preset 'nope'")
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


def test_console_script_runs_a_study_into_runs_latest(tmp_path):
    script = Path(sys.executable).parent / "noisebench"
    study = study_file(tmp_path, SMALL_STUDY)
    proc = subprocess.run(
        [str(script), "run", study, "--dataset", "mnist-sample", "--no-report"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    latest = tmp_path / "runs" / "latest"
    assert latest.is_symlink() and (latest / "results.sqlite").exists()
    assert "final test metrics" in proc.stdout


def test_readme_quick_start_is_make_run_and_make_test():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in quick.splitlines() if line.strip().startswith("make ")]
    assert commands == ["make run", "make test"]


@pytest.mark.slow
def test_make_run_falls_back_offline_and_prints_the_table(tmp_path):
    """`make run`, exactly as the README says, on this offline machine (mnist not present)."""
    repo = Path(__file__).parents[1]
    env = {k: v for k, v in os.environ.items() if k != "NOISEBENCH_DATA"}
    env["NOISEBENCH_CACHE"] = str(tmp_path / "empty-cache")
    if data.locate("mnist") is not None:
        pytest.skip("full MNIST is present here, so no fallback happens")
    proc = subprocess.run(
        ["make", "run"], cwd=repo, env=env, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FALLING BACK to 'mnist-sample'" in proc.stderr
    assert "label noise" in proc.stdout and "pixel noise" in proc.stdout
    latest = repo / "runs" / "latest"
    with Store(latest) as store:
        meta = store.meta()
        statuses = {r["status"] for r in store.runs()}
    assert meta["dataset"] == "mnist-sample" and meta["dataset_fallback"] is True
    assert statuses == {"done"}
    assert (latest / "results.csv").exists()
