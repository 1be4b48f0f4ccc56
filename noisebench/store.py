"""The results store: one SQLite file per study directory.

Tables: `meta` (study spec, dataset actually used, device, versions), `runs` (one row per
run with its status), `epochs` (the core metrics per run per epoch), `metrics` (any further
named metric of a run: per epoch, or after training as epoch 0) and `arrays` (small numpy
arrays: which labels were corrupted, example images). A finished run lands in one transaction.
"""

import io
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import NoisebenchError

DB_NAME = "results.sqlite"
EPOCH_COLUMNS = ("train_loss", "train_acc", "test_loss", "test_acc", "test_conf", "wall_s")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    setup TEXT NOT NULL,
    noise TEXT,
    level REAL NOT NULL,
    seed INTEGER NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    pack_size INTEGER,
    started_at REAL,
    finished_at REAL,
    wall_s REAL
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    epoch INTEGER NOT NULL,
    train_loss REAL, train_acc REAL, test_loss REAL, test_acc REAL, test_conf REAL,
    wall_s REAL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    epoch INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, epoch, name)
);
CREATE TABLE IF NOT EXISTS arrays (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (owner, name)
);
"""


def _encode(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _decode(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


class Store:
    """Read and write one study's results.sqlite (`readonly`: read it, never write)."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        if self.path.is_dir() or self.path.suffix != ".sqlite":
            self.path = self.path / DB_NAME
        if readonly:  # nothing written, so a study on read-only media can still be read
            self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        else:
            self.db = sqlite3.connect(self.path)
        self.db.row_factory = sqlite3.Row
        if not readonly:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
        tables = self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        self.tables = {row["name"] for row in tables}

    @classmethod
    def open_existing(cls, directory: str | Path, readonly: bool = False) -> "Store":
        path = Path(directory)
        db = path if path.suffix == ".sqlite" else path / DB_NAME
        if not db.is_file():
            raise NoisebenchError(f"no results found: {db} does not exist")
        return cls(db, readonly)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- meta -------------------------------------------------------------------------
    def set_meta(self, **values: Any) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    def meta(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in self.db.execute("SELECT * FROM meta")}

    # --- runs -------------------------------------------------------------------------
    def add_pending(self, runs: Iterable[tuple[str, str, str | None, float, int, dict]]) -> None:
        """Register planned runs (id, setup, noise, level, seed, config); known ids are kept."""
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO runs (run_id, setup, noise, level, seed, config)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(i, s, n, lv, sd, json.dumps(c, sort_keys=True)) for i, s, n, lv, sd, c in runs],
            )

    def finished_ids(self) -> set[str]:
        rows = self.db.execute("SELECT run_id FROM runs WHERE status IN ('done', 'diverged')")
        return {r["run_id"] for r in rows}

    def finish_run(
        self,
        run_id: str,
        status: str,
        epochs: list[dict[str, float]],
        arrays: dict[str, np.ndarray],
        started_at: float,
        pack_size: int,
        final: dict[str, float] | None = None,
    ) -> None:
        """Store a finished run, its epochs, metrics and arrays, all in one transaction.

        Epoch keys beyond EPOCH_COLUMNS go to `metrics` under their epoch; `final` (metrics
        measured after training) goes there as epoch 0."""
        now = time.time()
        named = [
            (run_id, e["epoch"], k, v)
            for e in epochs
            for k, v in e.items()
            if k != "epoch" and k not in EPOCH_COLUMNS
        ]
        named += [(run_id, 0, k, v) for k, v in (final or {}).items()]
        with self.db:
            self.db.execute("DELETE FROM epochs WHERE run_id = ?", (run_id,))
            self.db.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            self.db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)", named)
            self.db.executemany(
                f"INSERT INTO epochs (run_id, epoch, {', '.join(EPOCH_COLUMNS)})"
                f" VALUES (?, ?{', ?' * len(EPOCH_COLUMNS)})",
                [(run_id, e["epoch"], *(e[c] for c in EPOCH_COLUMNS)) for e in epochs],
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO arrays VALUES (?, ?, ?)",
                [(run_id, name, _encode(a)) for name, a in arrays.items()],
            )
            self.db.execute(
                "UPDATE runs SET status = ?, pack_size = ?, started_at = ?, finished_at = ?,"
                " wall_s = ? WHERE run_id = ?",
                (status, pack_size, started_at, now, now - started_at, run_id),
            )

    def runs(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY setup, level, seed")
        return [dict(r) | {"config": json.loads(r["config"])} for r in rows]

    def epochs(self) -> list[dict[str, Any]]:
        """The tidy table: one row per run × epoch, with the run's setup, level and seed."""
        rows = self.db.execute(
            "SELECT r.setup, r.noise, r.level, r.seed, r.status, e.*"
            " FROM epochs e JOIN runs r USING (run_id) ORDER BY r.setup, r.level, r.seed, e.epoch"
        )
        return [dict(r) for r in rows]

    def metrics(self, name_like: str = "%") -> list[dict[str, Any]]:
        """Named metrics as a tidy table (setup, noise, level, seed, status, run_id, epoch,
        name, value); epoch 0 holds those measured after training. `name_like` is a SQL
        LIKE pattern ("fgsm%")."""
        if "metrics" not in self.tables:  # a store written before named metrics existed
            return []
        rows = self.db.execute(
            "SELECT r.setup, r.noise, r.level, r.seed, r.status, m.*"
            " FROM metrics m JOIN runs r USING (run_id) WHERE m.name LIKE ?"
            " ORDER BY r.setup, r.level, r.seed, m.name, m.epoch",
            (name_like,),
        )
        return [dict(r) for r in rows]

    # --- arrays -----------------------------------------------------------------------
    def put_array(self, owner: str, name: str, array: np.ndarray) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO arrays VALUES (?, ?, ?)", (owner, name, _encode(array))
            )

    def array(self, owner: str, name: str) -> np.ndarray | None:
        row = self.db.execute(
            "SELECT data FROM arrays WHERE owner = ? AND name = ?", (owner, name)
        ).fetchone()
        return None if row is None else _decode(row["data"])

    def export_csv(self, path: str | Path, metrics: bool = False) -> Path:
        """Write the tidy per-run-per-epoch table (or with `metrics` the named metrics) as CSV."""
        import csv

        rows = self.metrics() if metrics else self.epochs()
        run_columns = ["setup", "noise", "level", "seed", "status", "run_id", "epoch"]
        columns = [*run_columns, *(("name", "value") if metrics else EPOCH_COLUMNS)]
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)
        return path
