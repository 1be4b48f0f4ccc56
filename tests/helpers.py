"""Helpers shared by the test modules (imported by name: pytest puts tests/ on sys.path)."""

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from noisebench.store import DB_NAME

# A one-seed, one-epoch label-noise study: the smallest real study worth running.
TINY_STUDY_TOML = """
name = "tiny"
seeds = [0]
levels = [0.0, 0.5]
[train]
epochs = 1
batch_size = 128
[[setups]]
name = "label noise"
noise = "labels.uniform"
"""


def copy_store(src: Path, dst: Path) -> Path:
    """A consistent copy of a study's results.sqlite (WAL included) in a new directory."""
    dst.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src / DB_NAME) as a, sqlite3.connect(dst / DB_NAME) as b:
        a.backup(b)
    return dst


def sql(directory: Path, statement: str, *args) -> None:
    """Run one SQL statement against a study's store (to alter numbers in tests)."""
    with sqlite3.connect(directory / DB_NAME) as db:
        db.execute(statement, args)


def stored_tables(directory: Path) -> tuple[list[tuple], list[tuple]]:
    """A study's `epochs` and `metrics` rows without wall-clock times (wall_s, train_s), in a
    stable order: what must be equal, bit for bit, between two runs of one study."""
    db = sqlite3.connect(f"file:{directory / DB_NAME}?mode=ro", uri=True)
    try:
        epochs = db.execute(
            "SELECT run_id, epoch, train_loss, train_acc, test_loss, test_acc, test_conf"
            " FROM epochs ORDER BY run_id, epoch"
        ).fetchall()
        metrics = db.execute(
            "SELECT run_id, epoch, name, value FROM metrics WHERE name != 'train_s'"
            " ORDER BY run_id, epoch, name"
        ).fetchall()
    finally:
        db.close()
    return epochs, metrics


def cli(*argv: str) -> list[str]:
    """The command line of `noisebench ARGV` in a fresh Python process."""
    return [sys.executable, "-m", "noisebench", *argv]


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, seconds: float = 300) -> None:
    """Poll `condition` until it holds; fail if `proc` ends first or `seconds` pass."""
    deadline = time.time() + seconds
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
