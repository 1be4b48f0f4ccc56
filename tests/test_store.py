"""The results store: a run lands in one transaction, readers get a checked store, and reading
never writes."""

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_STUDY_TOML, copy_store
from typer.testing import CliRunner

from noisebench import Results
from noisebench.cli import app
from noisebench.errors import StoreError
from noisebench.runner import run_study
from noisebench.store import DB_NAME, EPOCH_COLUMNS, STORE_VERSION, Store, check_store
from noisebench.study import load_study


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    (root / "tiny.toml").write_text(TINY_STUDY_TOML)
    return run_study(load_study(root / "tiny.toml"), root / "tiny", dataset="mnist-sample")


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def header_byte(path: Path, offset: int) -> int:
    return path.read_bytes()[offset]


def test_finish_run_twice_stores_the_run_once(tmp_path):
    """What a retried or resumed pack relies on: storing a run again replaces it."""
    with Store(tmp_path) as store:
        store.add_pending([("r1", "s", "labels.uniform", 0.5, 0, {})])

        def epochs(n: int, acc: float) -> list[dict]:
            return [{"epoch": e, **dict.fromkeys(EPOCH_COLUMNS, acc)} for e in range(1, n + 1)]

        first = {"label_picked": np.arange(3, dtype=np.int32)}
        store.finish_run("r1", "done", epochs(3, 0.1), first, time.time(), 2)
        second = {"label_picked": np.arange(5, dtype=np.int32)}
        store.finish_run("r1", "done", epochs(2, 0.7), second, time.time(), 2)
        rows = store.db.execute("SELECT run_id, epoch, test_acc FROM epochs").fetchall()
        assert [tuple(r) for r in rows] == [("r1", 1, 0.7), ("r1", 2, 0.7)]
        assert len(store.runs()) == 1 and store.runs()[0]["status"] == "done"
        np.testing.assert_array_equal(store.array("r1", "label_picked"), np.arange(5))


def test_a_written_store_is_left_as_one_file_in_rollback_journal_mode(finished):
    db = finished / DB_NAME
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
    assert header_byte(db, 18) == 1 and header_byte(db, 19) == 1  # legacy (not WAL) mode
    with Store.open_existing(finished, readonly=True) as store:
        assert store.meta()["store_version"] == STORE_VERSION


def test_show_and_the_results_api_leave_every_file_as_it_was(finished, tmp_path):
    out = copy_store(finished, tmp_path / "copy")
    before = files(out)
    assert CliRunner().invoke(app, ["show", str(out)]).exit_code == 0
    results = Results(out)
    assert len(results.to_frame()) == 2 and len(results.summary()) == 2
    assert files(out) == before


def test_a_store_in_wal_mode_whose_writer_is_gone_is_read_without_creating_files(
    finished, tmp_path
):
    out = copy_store(finished, tmp_path / "wal")
    with sqlite3.connect(out / DB_NAME) as db:
        db.execute("PRAGMA journal_mode=WAL")  # as stores written before this version were
    db.close()
    assert header_byte(out / DB_NAME, 18) == 2
    before = files(out)
    shown = CliRunner().invoke(app, ["show", str(out)])
    assert shown.exit_code == 0 and "label noise" in shown.stdout
    assert files(out) == before


def test_a_store_being_written_is_read_with_its_latest_rows(finished, tmp_path):
    out = copy_store(finished, tmp_path / "live")
    writer = Store(out)  # a run in progress: WAL mode, -wal and -shm present
    try:
        writer.set_meta(study_name="renamed while running")
        assert Path(f"{out / DB_NAME}-wal").exists()
        with Store.open_existing(out, readonly=True) as reader:
            assert reader.meta()["study_name"] == "renamed while running"
    finally:
        writer.close()


def test_check_store_accepts_a_finished_study_and_names_the_file_and_problem(finished, tmp_path):
    check_store(finished / DB_NAME)  # no error
    out = copy_store(finished, tmp_path / "bad")
    with sqlite3.connect(out / DB_NAME) as db:
        db.execute("UPDATE epochs SET test_loss = 'x'")
    db.close()
    with pytest.raises(StoreError) as err:
        check_store(out / DB_NAME)
    assert str(err.value).startswith(f"{out / DB_NAME}: table 'epochs': column 'test_loss'")
    with pytest.raises(StoreError, match="column 'test_loss' holds a non-number"):
        Results(out)


def test_a_damaged_array_is_one_line_when_it_is_read(finished, tmp_path):
    out = copy_store(finished, tmp_path / "array")
    with sqlite3.connect(out / DB_NAME) as db:
        db.execute("UPDATE arrays SET data = x'0102'")
    db.close()
    with Store.open_existing(out, readonly=True) as store:
        owner, name = store.db.execute("SELECT owner, name FROM arrays").fetchone()
        with pytest.raises(StoreError, match=f"array '{name}' of {owner} is not a readable array"):
            store.array(owner, name)
