"""The command line: good runs print the table, bad input gets one line, exit 2, no files."""

import csv
import dataclasses
import hashlib
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import TINY_STUDY_TOML
from typer.testing import CliRunner

from noisebench import data
from noisebench.cli import app
from noisebench.store import Store

REPO = Path(__file__).parents[1]

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
    shipped = sorted(path.stem for path in (REPO / "noisebench" / "presets").glob("*.toml"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: unknown preset 'nope' (known: {', '.join(shipped)})"
    ]
    assert not (tmp_path / "o").exists()


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
    """`make run`, exactly as the README says, on this offline machine (mnist not present), in
    a copy of the repository (its .venv linked), so the test writes nothing into this one."""
    repo = tmp_path / "repo"
    shutil.copytree(
        REPO,
        repo,
        ignore=shutil.ignore_patterns(".venv", ".git", "runs", "*.egg-info"),
        symlinks=True,
    )
    (repo / ".venv").symlink_to(REPO / ".venv")
    # The environment is set up already: make must not reinstall the package from the copy.
    installed = (REPO / ".venv" / ".installed").stat().st_mtime
    os.utime(repo / "pyproject.toml", (installed - 1, installed - 1))
    env = {k: v for k, v in os.environ.items() if k != "NOISEBENCH_DATA"}
    env["NOISEBENCH_CACHE"] = str(tmp_path / "empty-cache")
    if data.locate("mnist") is not None:
        pytest.skip("full MNIST is present here, so no fallback happens")
    proc = subprocess.run(
        ["make", "run"], cwd=repo, env=env, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pip install" not in proc.stdout
    assert "FALLING BACK to 'mnist-sample'" in proc.stderr
    assert "label noise" in proc.stdout and "pixel noise" in proc.stdout
    latest = repo / "runs" / "latest"
    with Store(latest) as store:
        meta = store.meta()
        statuses = {r["status"] for r in store.runs()}
    assert meta["dataset"] == "mnist-sample" and meta["dataset_fallback"] is True
    assert statuses == {"done"}
    assert (latest / "results.csv").exists()


# --- resuming, downloading, the CSV tables, divergence, Ray absent -------------------------


def done_at(directory: Path) -> dict[str, float | None]:
    with sqlite3.connect(directory / "results.sqlite") as db:
        rows = db.execute("SELECT run_id, finished_at FROM runs").fetchall()
    db.close()
    return dict(rows)


def test_resume_without_out_continues_runs_latest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = study_file(tmp_path, SMALL_STUDY)
    first = invoke("run", study, "--dataset", "mnist-sample", "--no-report")
    assert first.exit_code == 0, first.output
    latest = (tmp_path / "runs" / "latest").resolve()
    finished = done_at(latest)
    lost = sorted(finished)[0]  # as if the study had been interrupted before this run
    with sqlite3.connect(latest / "results.sqlite") as db:
        db.execute(
            "UPDATE runs SET status = 'pending', finished_at = NULL WHERE run_id = ?", (lost,)
        )
        db.execute("DELETE FROM epochs WHERE run_id = ?", (lost,))
    db.close()

    resumed = invoke("run", study, "--dataset", "mnist-sample", "--no-report", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert [p.name for p in (tmp_path / "runs").iterdir() if not p.is_symlink()] == [latest.name]
    again = done_at(latest)
    assert again[lost] is not None  # retrained ...
    assert {k: v for k, v in again.items() if k != lost} == {  # ... and nothing else
        k: v for k, v in finished.items() if k != lost
    }


def test_datasets_download_fetches_into_the_cache_and_lists_it(
    isolated_data_env, local_server, idx_dataset_writer, monkeypatch
):
    url, served = local_server
    idx_dataset_writer(served)
    md5 = {f: hashlib.md5((served / f).read_bytes()).hexdigest() for f in data.IDX_FILES}
    info = dataclasses.replace(data.DATASETS["kmnist"], mirrors=(url,), md5=md5)
    monkeypatch.setitem(data.DATASETS, "kmnist", info)
    monkeypatch.setattr(data.downloads, "_downloader", data.downloads.pooch.HTTPDownloader)

    result = invoke("datasets", "--download", "kmnist")
    cached = isolated_data_env / "cache" / "kmnist"
    assert result.exit_code == 0, result.output
    assert f"downloaded kmnist to {cached}" in " ".join(result.stderr.split())
    for name in data.IDX_FILES:
        assert (cached / name).read_bytes() == (served / name).read_bytes()
    row = next(line for line in result.stdout.splitlines() if "kmnist" in line)
    assert "cache" in row


@pytest.mark.usefixtures("isolated_data_env")
def test_datasets_download_offline_is_one_line():
    result = invoke("datasets", "--download", "kmnist")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: could not download dataset 'kmnist': ConnectionError: test is offline: "
        f"{data.DATASETS['kmnist'].mirrors[0]}train-images-idx3-ubyte.gz"
    ]


def test_the_csv_tables_hold_exactly_the_stored_rows(tmp_path, out):
    result = invoke(
        "run", study_file(tmp_path, SMALL_STUDY), "--out", str(out), "--dataset", "mnist-sample",
        "--no-report",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with sqlite3.connect(out / "results.sqlite") as db:
        metrics = db.execute(
            "SELECT r.setup, r.level, r.seed, r.status, m.run_id, m.epoch, m.name, m.value"
            " FROM metrics m JOIN runs r USING (run_id)"
        ).fetchall()
        epochs = db.execute(
            "SELECT r.setup, r.level, r.seed, e.run_id, e.epoch, e.test_acc, e.train_loss"
            " FROM epochs e JOIN runs r USING (run_id)"
        ).fetchall()
    db.close()
    with (out / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(metrics) > 20
    written = {(r["run_id"], int(r["epoch"]), r["name"]): r for r in rows}
    for setup, level, seed, status, run_id, epoch, name, value in metrics:
        row = written[(run_id, epoch, name)]
        assert (row["setup"], float(row["level"]), int(row["seed"]), row["status"]) == (
            setup, level, seed, status,
        )  # fmt: skip
        assert (row["value"] == "" and value is None) or math.isclose(float(row["value"]), value)
    assert {name for *_, name, _ in metrics} >= {"train_s", "fgsm@0.1", "attacked_acc"}
    with (out / "results.csv").open(newline="") as fh:
        table = {(r["run_id"], int(r["epoch"])): r for r in csv.DictReader(fh)}
    assert len(table) == len(epochs)
    for setup, _, _, run_id, epoch, test_acc, train_loss in epochs:
        row = table[(run_id, epoch)]
        assert row["setup"] == setup and float(row["test_acc"]) == test_acc
        assert float(row["train_loss"]) == train_loss


def test_a_run_whose_loss_explodes_is_diverged_and_show_says_so(tmp_path, out):
    study = SMALL_STUDY.replace("epochs = 1", "epochs = 2\nlr = 10.0\nmomentum = 0.0")
    result = invoke(
        "run", study_file(tmp_path, study), "--out", str(out), "--dataset", "mnist-sample",
        "--seeds", "0", "--no-report",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with Store.open_existing(out, readonly=True) as store:
        runs = store.runs()
        losses = [e["train_loss"] for e in store.epochs()]
    assert {r["status"] for r in runs} == {"diverged"}
    # finite but far above 100 ln 10 = 230: diverged by the bound, not by a NaN
    assert all(math.isfinite(x) and x > 100 * math.log(10) for x in losses)
    shown = invoke("show", str(out))
    assert "2 run(s) DIVERGED" in " ".join(shown.stdout.split())


def test_a_sane_learning_rate_is_not_diverged(tmp_path, out):
    result = invoke(
        "run", study_file(tmp_path, SMALL_STUDY), "--out", str(out), "--dataset", "mnist-sample",
        "--no-report",
    )  # fmt: skip
    assert result.exit_code == 0
    with Store.open_existing(out, readonly=True) as store:
        assert {r["status"] for r in store.runs()} == {"done"}
    assert "DIVERGED" not in invoke("show", str(out)).stdout


RAY_BLOCKED = textwrap.dedent(
    """
    import sys

    class NoRay:
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NoRay())
    sys.argv = ["noisebench", *sys.argv[1:]]
    from noisebench.__main__ import main

    main()
    """
)


def test_without_ray_installed_the_ray_backend_asks_for_the_extra(tmp_path):
    """In a process where `import ray` fails as on an install without the extra."""
    out = tmp_path / "o"
    argv = ["run", "--preset", "quick", "--backend", "ray", "--dataset", "mnist-sample"]
    proc = subprocess.run(
        [sys.executable, "-c", RAY_BLOCKED, *argv, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: the ray backend needs the extra: pip install 'noisebench[ray]'"
    ]
    assert not out.exists()
