"""The command line: good runs print the table, bad input gets one line, exit 2, no files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY_STUDY_TOML
from typer.testing import CliRunner

from noisebench import data
from noisebench.cli import app
from noisebench.store import Store

SMALL_STUDY = TINY_STUDY_TOML


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


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


# --- bad input: the whole table of cases is in test_reliability.py ------------------------


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
