"""Helpers shared by the test modules (imported by name: pytest puts tests/ on sys.path)."""

import sqlite3
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
