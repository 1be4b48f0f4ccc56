"""Nothing a user ran is lost or silently wrong: bad input, kill -9, determinism, safety."""

import dataclasses
import gzip
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import TINY_STUDY_TOML
from typer.testing import CliRunner

from noisebench import data
from noisebench.cli import app
from noisebench.runner import run_study
from noisebench.study import load_study, parse_study

PACKAGE = Path(__file__).parents[1] / "noisebench"
STUDY = TINY_STUDY_TOML

# --- bad input ------------------------------------------------------------------------------


def study(text: str = "", head: str = "") -> Callable[..., list[str]]:
    """A case that writes a study file (extra TOML before and after STUDY) and runs it."""

    def make(tmp_path: Path, **_: object) -> list[str]:
        path = tmp_path / "study.toml"
        path.write_text(head + STUDY + text)
        return ["run", str(path)]

    return make


def args(*extra: str) -> Callable[..., list[str]]:
    return lambda tmp_path, **_: ["run", "--preset", "quick", *extra]


def replaced(old: str, new: str) -> Callable[..., list[str]]:
    def make(tmp_path: Path, **_: object) -> list[str]:
        path = tmp_path / "study.toml"
        path.write_text(STUDY.replace(old, new))
        return ["run", str(path)]

    return make


def idx_dir(breaker: Callable[[Path], None]) -> Callable[..., list[str]]:
    def make(tmp_path: Path, tiny_idx_dir: Path, **_: object) -> list[str]:
        breaker(tiny_idx_dir)
        return [
            "run",
            "--preset",
            "quick",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(tiny_idx_dir),
        ]

    return make


def truncate(directory: Path) -> None:
    path = directory / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))


def wrong_checksum(tmp_path: Path, tiny_idx_dir: Path, local_server, monkeypatch, **_) -> list[str]:
    url, served = local_server
    for name in data.IDX_FILES:
        (served / name).write_bytes((tiny_idx_dir / name).read_bytes())
    info = dataclasses.replace(data.DATASETS["kmnist"], mirrors=(url,))
    monkeypatch.setitem(data.DATASETS, "kmnist", info)
    monkeypatch.setattr(data.downloads, "_downloader", data.downloads.pooch.HTTPDownloader)
    return ["run", "--preset", "quick", "--dataset", "kmnist"]


def other_study_in_out(tmp_path: Path, out: Path, **_: object) -> list[str]:
    run_study(
        parse_study(
            {
                "name": "first",
                "seeds": [0],
                "levels": [0.0],
                "train": {"epochs": 1, "batch_size": 256},
                "setups": [{"name": "l", "noise": "labels.uniform"}],
            }
        ),
        out,
        dataset="mnist-sample",
    )
    return ["run", "--preset", "quick", "--dataset", "mnist-sample"]


def out_is_file(tmp_path: Path, out: Path, **_: object) -> list[str]:
    out.write_text("not a directory")
    return ["run", "--preset", "quick", "--dataset", "mnist-sample"]


BAD_INPUTS = {
    "unknown preset": (args("--preset", "nope"), "unknown preset 'nope'"),
    "unknown top-level key": (study(head="colour = 'red'\n"), "'colour': unknown key"),
    "unknown train key": (replaced("epochs = 1", "epochs = 1\nwarmup = 3"), "train.warmup"),
    "unknown setup key": (study("weight = 2\n"), "setups.0.weight"),
    "level above one": (replaced("[0.0, 0.5]", "[0.0, 1.5]"), "levels.1"),
    "level below zero": (replaced("[0.0, 0.5]", "[-0.2]"), "levels.0"),
    "level of wrong type": (replaced("[0.0, 0.5]", '["high"]'), "levels.0"),
    "epochs zero in study": (replaced("epochs = 1", "epochs = 0"), "train.epochs"),
    "epochs negative option": (args("--epochs", "-3"), "train.epochs"),
    "batch size zero": (replaced("batch_size = 128", "batch_size = 0"), "train.batch_size"),
    "negative learning rate": (replaced("epochs = 1", "epochs = 1\nlr = -0.1"), "train.lr"),
    "momentum of one": (replaced("epochs = 1", "epochs = 1\nmomentum = 1.0"), "train.momentum"),
    "empty hidden sizes": (study(head="[model]\nhidden = []\n"), "model.hidden"),
    "zero-width layer": (study(head="[model]\nhidden = [128, 0]\n"), "model.hidden.1"),
    "unknown activation": (study(head="[model]\nactivation = 'gelu'\n"), "model.activation"),
    "duplicate setups": (
        study('[[setups]]\nname = "label noise"\nnoise = "pixels.replace"\n'),
        "duplicate setup name 'label noise'",
    ),
    "duplicate seeds": (replaced("seeds = [0]", "seeds = [1, 1]"), "seeds"),
    "no seeds": (replaced("seeds = [0]", "seeds = []"), "seeds"),
    "unknown noise": (replaced("labels.uniform", "labels.wobble"), "unknown noise 'labels.wobble'"),
    "bad noise parameter": (study('params = { exclude_true = "maybe" }\n'), "exclude_true"),
    "invalid TOML": (study("levels = [0.1,\n"), "not valid TOML"),
    "missing study file": (
        lambda tmp_path, **_: ["run", str(tmp_path / "nope.toml")],
        "study file not found",
    ),
    "study file and preset": (
        lambda tmp_path, **_: study()(tmp_path) + ["--preset", "quick"],
        "not both",
    ),
    "unknown dataset": (args("--dataset", "cifar"), "unknown dataset 'cifar'"),
    "corrupt IDX": (
        idx_dir(lambda d: (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")),
        "t10k-labels-idx1-ubyte.gz",
    ),
    "truncated IDX": (idx_dir(truncate), "train-images-idx3-ubyte.gz"),
    "label out of range": (
        idx_dir(
            lambda d: __import__("conftest").write_idx(d / "train-labels-idx1-ubyte.gz", [12] * 50)
        ),
        "label",
    ),
    "wrong checksum": (wrong_checksum, "checksum mismatch"),
    "named dataset absent offline": (args("--dataset", "kmnist"), "not available offline"),
    "output under a file": (
        lambda tmp_path, **_: ["run", "--preset", "quick", "--out", str(tmp_path / "f" / "sub")],
        "not writable",
    ),
    "output is a file": (out_is_file, "not a directory"),
    "output holds another study": (other_study_in_out, "different study"),
    "bad seeds option": (args("--seeds", "1,x"), "--seeds"),
    "unknown device": (args("--device", "tpu"), "tpu"),
    "unknown backend": (
        args("--backend", "slurm", "--dataset", "mnist-sample"),
        "unknown backend 'slurm'",
    ),
    "show without results": (lambda tmp_path, **_: ["show", str(tmp_path)], "no results found"),
    "train size beyond a class": (
        lambda tmp_path, **kw: (
            study(head="train_sizes = [9000]\n")(tmp_path, **kw) + ["--dataset", "mnist-sample"]
        ),
        "train size 9000 needs 900 examples of class",
    ),
    "early stopping without validation": (
        study(head="early_stopping = { patience = 2 }\n"),
        "early_stopping needs a validation share",
    ),
    "validation share of one half": (study(head="validation = 0.5\n"), "validation"),
    "unknown train size word": (study(head='train_sizes = ["most"]\n'), "train_sizes.0"),
    "dropout of one": (study(head="[model]\ndropout = 1.0\n"), "model.dropout"),
    "unknown schedule": (
        replaced("epochs = 1", 'epochs = 1\nschedule = "linear"'),
        "train.schedule",
    ),
    "noisy copies not whole": (
        study('[[setups]]\nname = "d"\nnoise = "labels.dilution"\nlevels = [1.5]\n'),
        "not a whole number",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_gets_one_line_exit_2_and_writes_nothing(
    case, tmp_path, tiny_idx_dir, isolated_data_env, local_server, monkeypatch
):
    make, expected = BAD_INPUTS[case]
    (tmp_path / "f").write_text("a file, not a directory")
    out = tmp_path / "out"
    argv = make(
        tmp_path=tmp_path,
        tiny_idx_dir=tiny_idx_dir,
        local_server=local_server,
        monkeypatch=monkeypatch,
        out=out,
    )
    if argv[0] == "run" and "--out" not in argv:
        argv += ["--out", str(out)]
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    mtime = (out / "results.sqlite").stat().st_mtime if (out / "results.sqlite").exists() else None
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    after = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    assert after == before  # nothing written
    if mtime is not None:
        assert (out / "results.sqlite").stat().st_mtime == mtime


def test_there_are_at_least_25_bad_input_cases():
    assert len(BAD_INPUTS) >= 25


# --- kill -9 and resume ----------------------------------------------------------------------

KILL_STUDY = """
name = "kill"
seeds = [0, 1]
levels = [0.0, 0.3, 0.6, 0.9]
max_pack = 1
[train]
epochs = 3
batch_size = 64
[[setups]]
name = "label noise"
noise = "labels.uniform"
"""


def numbers(db_path: Path) -> list[tuple]:
    """Every stored metric except wall-clock times, in a stable order."""
    db = sqlite3.connect(db_path)
    rows = db.execute(
        "SELECT r.setup, r.level, r.seed, r.status, e.epoch, e.train_loss, e.train_acc,"
        " e.test_loss, e.test_acc, e.test_conf FROM epochs e JOIN runs r USING (run_id)"
        " ORDER BY r.setup, r.level, r.seed, e.epoch"
    ).fetchall()
    db.close()
    return rows


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "noisebench", *argv]


def done_runs(db_path: Path) -> dict[str, float]:
    if not db_path.exists():
        return {}
    db = sqlite3.connect(db_path, timeout=10)
    try:
        rows = db.execute("SELECT run_id, finished_at FROM runs WHERE status = 'done'").fetchall()
    except sqlite3.OperationalError:
        rows = []
    db.close()
    return dict(rows)


@pytest.mark.timeout(600)
def test_kill_9_then_resume_loses_nothing_and_matches_an_uninterrupted_study(tmp_path):
    path = tmp_path / "kill.toml"
    path.write_text(KILL_STUDY)
    common = ["--dataset", "mnist-sample", "--no-report"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        cli("run", str(path), "--out", str(killed), *common),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while len(done_runs(killed / "results.sqlite")) < 2 and time.time() < deadline:
        assert proc.poll() is None, "the study finished before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = done_runs(killed / "results.sqlite")
    assert 2 <= len(before) < 8

    subprocess.run(
        cli("run", str(path), "--out", str(killed), "--resume", *common),
        check=True,
        capture_output=True,
        timeout=300,
    )
    after = done_runs(killed / "results.sqlite")
    assert len(after) == 8
    assert all(after[run_id] == stamp for run_id, stamp in before.items())  # not retrained
    db = sqlite3.connect(killed / "results.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()

    clean = tmp_path / "clean"
    subprocess.run(
        cli("run", str(path), "--out", str(clean), *common),
        check=True,
        capture_output=True,
        timeout=300,
    )
    resumed, uninterrupted = numbers(killed / "results.sqlite"), numbers(clean / "results.sqlite")
    assert len(resumed) == 8 * 3 and resumed == uninterrupted  # bit for bit


TWICE_STUDY = """
name = "twice"
seeds = [0, 1]
levels = [0.0, 0.5]
[train]
epochs = 2
batch_size = 128
[[setups]]
name = "p"
noise = "pixels.replace"
[[setups]]
name = "l"
noise = "labels.uniform"
"""


def test_the_same_study_twice_gives_identical_numbers_in_one_process_and_across_processes(
    tmp_path,
):
    path = tmp_path / "twice.toml"
    path.write_text(TWICE_STUDY)
    spec = load_study(path)
    run_study(spec, tmp_path / "a", dataset="mnist-sample")
    run_study(spec, tmp_path / "b", dataset="mnist-sample")
    for name in ("c", "d"):  # fresh processes: other addresses, other thread start-up
        subprocess.run(
            cli(
                "run",
                str(path),
                "--out",
                str(tmp_path / name),
                "--dataset",
                "mnist-sample",
                "--no-report",
            ),
            check=True,
            capture_output=True,
            timeout=300,
        )
    first, *others = (numbers(tmp_path / name / "results.sqlite") for name in "abcd")
    assert len(first) == 6 * 2  # 2 seeds x 3 runs x 2 epochs
    assert all(other == first for other in others)


# --- safety ----------------------------------------------------------------------------------


def sources() -> list[tuple[Path, str]]:
    return [(p, p.read_text()) for p in PACKAGE.rglob("*.py")]


def test_nothing_is_unpickled():
    for path, text in sources():
        assert not re.search(r"^\s*import pickle|^\s*from pickle", text, re.M), path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line}"
            if "np.load(" in line:
                assert "allow_pickle=False" in line, f"{path}: {line}"
