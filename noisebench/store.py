"""The results store: one SQLite file per study directory.

Tables: `meta` (study spec, dataset actually used, device, versions), `runs` (one row per
run with its status), `epochs` (the core metrics per run per epoch), `metrics` (any further
named metric of a run: per epoch, or after training as epoch 0) and `arrays` (small numpy
arrays: which labels were corrupted, example images). A finished run lands in one transaction.

Readers use `Store.open_existing(directory, readonly=True)`: it first checks the file
(`check_store`: one StoreError line naming the file and what is wrong), then opens it without
ever writing (SQLite's mode=ro, or immutable=1 where that would need to write).
"""

import contextlib
import io
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import StoreError, StudyError
from .study import CLEAN, MAX_LEVEL, Study, parse_study

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


def _db_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".sqlite" and not path.is_dir() else path / DB_NAME


def _in_wal_mode(path: Path) -> bool:
    """Whether the file's header says it is in WAL mode (read and write versions 2)."""
    with path.open("rb") as fh:
        header = fh.read(20)
    return len(header) == 20 and header[18] == 2


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that never writes, so reading needs neither write access nor leaves files.

    A store in rollback-journal mode (how writers leave it) opens with mode=ro. A store in WAL
    mode whose writer is gone (no -wal file) opens immutable. With a -wal file (a writer is
    running, or was killed) mode=ro reads the WAL too; where even that needs to write (on
    read-only media) the store opens immutable, without the WAL's last transactions.
    """
    uri = path.resolve().as_uri()
    if _in_wal_mode(path) and not Path(f"{path}-wal").exists():
        return sqlite3.connect(f"{uri}?immutable=1", uri=True)
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        return sqlite3.connect(f"{uri}?immutable=1", uri=True)


class Store:
    """Read and write one study's results.sqlite (`readonly`: read it, never write)."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = _db_path(path)
        self.readonly = readonly
        self.db = _connect_readonly(self.path) if readonly else sqlite3.connect(self.path)
        self.db.row_factory = sqlite3.Row
        if not readonly:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
        tables = self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        self.tables = {row["name"] for row in tables}

    @classmethod
    def open_existing(cls, directory: str | Path, readonly: bool = False) -> "Store":
        """The store in `directory` (or the .sqlite file itself), checked by `check_store`:
        a missing, damaged or foreign store is one StoreError line naming the file."""
        db = _db_path(directory)
        if not db.exists():
            raise StoreError(f"no results found: {db} does not exist")
        check_store(db)
        return cls(db, readonly)

    def close(self) -> None:
        """Close; a writer first leaves the file in rollback-journal mode (no -wal, -shm), so
        readers open it read-only without creating anything."""
        if not self.readonly:
            with contextlib.suppress(sqlite3.Error):  # a reader still open: stay in WAL mode
                self.db.execute("PRAGMA journal_mode=DELETE")
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
        if row is None:
            return None
        try:
            return _decode(row["data"])
        except (ValueError, OSError, EOFError):
            raise StoreError(
                f"{self.path}: array '{name}' of {owner} is not a readable array"
            ) from None

    def arrays_of(self, owner: str, prefix: str = "") -> dict[str, np.ndarray]:
        """Every array of `owner` whose name starts with `prefix`, by name."""
        rows = self.db.execute(
            "SELECT name FROM arrays WHERE owner = ? AND substr(name, 1, ?) = ?",
            (owner, len(prefix), prefix),
        )
        return {r["name"]: self.array(owner, r["name"]) for r in rows.fetchall()}

    def add_final(self, run_id: str, values: dict[str, float], arrays: dict[str, np.ndarray]):
        """Add metrics measured after a run finished (epoch 0) and arrays, in one transaction."""
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO metrics VALUES (?, 0, ?, ?)",
                [(run_id, k, v) for k, v in values.items()],
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO arrays VALUES (?, ?, ?)",
                [(run_id, name, _encode(a)) for name, a in arrays.items()],
            )

    def delete_arrays(self, owners: Iterable[str]) -> None:
        with self.db:
            self.db.executemany("DELETE FROM arrays WHERE owner = ?", [(o,) for o in owners])

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


# --- checking a store before anyone reads it ---------------------------------------------------

STORE_VERSION = 1  # meta "store_version"; stores written before it existed are version 1
RUN_STATUSES = ("pending", "done", "diverged")
COLUMNS = {
    "meta": ("key", "value"),
    "runs": ("run_id", "setup", "noise", "level", "seed", "config", "status"),
    "epochs": ("run_id", "epoch", *EPOCH_COLUMNS),
    "metrics": ("run_id", "epoch", "name", "value"),
    "arrays": ("owner", "name", "data"),
}
OPTIONAL_TABLES = ("metrics", "arrays")  # stores written before they existed lack them
SQLITE_HEADER = b"SQLite format 3\x00"
Count = Annotated[int, Field(ge=0)]


class StoredMeta(BaseModel):
    """The `meta` keys readers rely on, with their types; other keys pass unchecked."""

    model_config = ConfigDict(extra="allow", strict=True)

    study: dict[str, Any]
    study_name: str
    dataset: str
    store_version: Annotated[int, Field(ge=1, le=STORE_VERSION)] = 1
    dataset_fallback: bool = False
    dataset_requested: str | None = None
    dataset_source: str | None = None
    train_size: Count | None = None
    test_size: Count | None = None
    class_names: list[str] | None = Field(default=None, min_length=2)
    image_shape: list[Annotated[int, Field(gt=0)]] | None = Field(
        default=None, min_length=2, max_length=2
    )
    channels: Literal[1, 3] | None = None
    changed_share: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] | None = None
    background_share: Annotated[float, Field(ge=0.0, le=1.0)] | None = None  # train pixels == 0
    identity: str | None = None
    device: str | None = None
    versions: dict[str, str] | None = None


class EmptyStore(StoreError):
    """A store created by a run that stopped before it wrote its study."""


def check_store(path: Path) -> None:
    """Raise one StoreError line naming `path` unless it is a readable results store of this
    version: an SQLite file that passes SQLite's quick_check, with the tables and columns of
    SCHEMA, JSON in meta and config, the study a Study, numbers where numbers belong, epochs
    within the study's epochs, levels and seeds in range, and runs of the study's setups."""
    if not path.is_file():
        raise StoreError(f"{path} is not a file")
    with path.open("rb") as fh:
        header = fh.read(len(SQLITE_HEADER))
    if not header:
        raise StoreError(f"{path}: empty file, not a results store")
    if header != SQLITE_HEADER:
        raise StoreError(f"{path}: not an SQLite database (not a noisebench results store)")
    try:
        db = _connect_readonly(path)
    except sqlite3.OperationalError as exc:
        raise StoreError(f"{path}: cannot be opened ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: damaged SQLite file ({exc})") from None
    try:
        _check_contents(db, path)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: damaged SQLite file ({exc})") from None
    finally:
        db.close()


def _problem(path: Path, what: str) -> StoreError:
    return StoreError(f"{path}: {what}")


def _check_contents(db: sqlite3.Connection, path: Path) -> None:
    verdict = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    if verdict != "ok":
        raise _problem(path, f"damaged SQLite file ({' '.join(verdict.split())[:200]})")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table, columns in COLUMNS.items():
        if table not in tables:
            if table in OPTIONAL_TABLES:
                continue
            raise _problem(path, f"table '{table}' is missing (not a noisebench results store)")
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if missing := [c for c in columns if c not in have]:
            raise _problem(path, f"table '{table}' lacks column '{missing[0]}'")
    study = _check_meta(db, path)
    _check_runs(db, path, study)
    _check_numbers(db, path, study.train.epochs, "metrics" in tables)


def _check_meta(db: sqlite3.Connection, path: Path) -> Study:
    meta = {}
    for key, value in db.execute("SELECT key, value FROM meta"):
        try:
            meta[key] = json.loads(value)
        except (TypeError, ValueError, RecursionError):
            raise _problem(path, f"meta '{key}' is not valid JSON") from None
    if "study" not in meta:
        if db.execute("SELECT count(*) FROM runs").fetchone()[0] == 0:
            raise EmptyStore(f"{path}: holds no study yet (its run stopped before it began)")
        raise _problem(path, "meta 'study' is missing")
    try:
        StoredMeta.model_validate(meta)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if key == "store_version" and err["type"] == "less_than_equal":
            raise _problem(
                path,
                f"written by a newer noisebench (store version {meta[key]}; this one reads "
                f"{STORE_VERSION})",
            ) from None
        raise _problem(path, f"meta '{key}': {err['msg']}") from None
    try:
        return parse_study(meta["study"], "the stored study")
    except StudyError as exc:
        raise _problem(path, f"{exc} (written by another version of noisebench?)") from None


def _first(db: sqlite3.Connection, query: str, *args: Any) -> sqlite3.Row | None:
    return db.execute(query + " LIMIT 1", args).fetchone()


def _check_runs(db: sqlite3.Connection, path: Path, study: Study) -> None:
    statuses = ", ".join(f"'{s}'" for s in RUN_STATUSES)
    checks = [
        ("typeof(run_id) != 'text'", "a run id is not text"),
        ("typeof(setup) != 'text'", "a setup name is not text"),
        ("typeof(level) NOT IN ('real', 'integer')", "a level is not a number"),
        (f"level < 0 OR level > {MAX_LEVEL}", "a level is out of range"),
        ("typeof(seed) != 'integer' OR seed < 0", "a seed is not a whole number ≥ 0"),
        (f"status NOT IN ({statuses})", "a run status is unknown"),
        ("typeof(config) != 'text'", "a run config is not text"),
    ]
    for condition, what in checks:
        if row := _first(db, f"SELECT run_id FROM runs WHERE {condition}"):
            raise _problem(path, f"table 'runs': {what} (run {row[0]})")
    setups = {s.name for s in study.setups} | {CLEAN}
    for run_id, setup, config in db.execute("SELECT run_id, setup, config FROM runs"):
        if setup not in setups:
            raise _problem(path, f"table 'runs': run {run_id} has setup '{setup}' not in the study")
        try:
            parsed = json.loads(config)
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            raise _problem(path, f"table 'runs': the config of run {run_id} is not a JSON object")


def _check_numbers(db: sqlite3.Connection, path: Path, epochs: int, has_metrics: bool) -> None:
    """Epoch numbers within the study's epochs, and numbers (or NULL) in the numeric columns."""
    numeric = "typeof({0}) NOT IN ('real', 'integer', 'null')"
    in_runs = "run_id NOT IN (SELECT run_id FROM runs)"
    checks = [
        ("epochs", f"typeof(epoch) != 'integer' OR epoch < 1 OR epoch > {epochs}",
         f"an epoch number is not one of the study's epochs 1..{epochs}"),
        ("epochs", in_runs, "a row belongs to no run"),
    ]  # fmt: skip
    for column in EPOCH_COLUMNS:
        checks.append(("epochs", numeric.format(column), f"column '{column}' holds a non-number"))
    for column in ("train_acc", "test_acc", "test_conf"):
        checks.append(
            ("epochs", f"{column} < 0 OR {column} > 1", f"'{column}' lies outside [0, 1]")
        )
    if has_metrics:
        checks += [
            ("metrics", f"typeof(epoch) != 'integer' OR epoch < 0 OR epoch > {epochs}",
             f"an epoch number is not 0 (after training) or one of the study's epochs 1..{epochs}"),
            ("metrics", "typeof(name) != 'text'", "a metric name is not text"),
            ("metrics", numeric.format("value"), "a value is not a number"),
            ("metrics", in_runs, "a row belongs to no run"),
        ]  # fmt: skip
    for table, condition, what in checks:
        if row := _first(db, f"SELECT run_id FROM {table} WHERE {condition}"):
            raise _problem(path, f"table '{table}': {what} (run {row[0]})")
