"""Nothing a user ran is lost or silently wrong: bad input, damaged stores, faults, kill -9,
determinism, safety.

The table BAD_INPUTS holds every bad input and injected fault: each ends with exit code 2 (130
for Ctrl-C), exactly one line on stderr and no traceback, and leaves the output directory as
it was ("unchanged": the same files with the same bytes) or, where work was done before the
fault, resumable ("resumable": `run --resume` then finishes the study with exactly the numbers
of an uninterrupted one).
"""

import dataclasses
import errno
import gzip
import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import write_idx, write_idx_dataset
from helpers import TINY_STUDY_TOML, cli, copy_store, wait_for
from typer.testing import CliRunner

from noisebench import data, memory, runner
from noisebench.cli import app
from noisebench.engine import pack
from noisebench.runner import LOCK_NAME, OutputClaim, run_study
from noisebench.store import Store
from noisebench.study import load_study

PACKAGE = Path(__file__).parents[1] / "noisebench"
STUDY = TINY_STUDY_TOML
GIB = 2**30
MACHINE_MEMORY = 16 * GIB  # what the memory checks are told this machine has free

# A study of two packs (one run each) of two epochs: a fault in the second pack comes after the
# first pack is stored and after a checkpoint.
FAULT_STUDY = """
name = "fault"
seeds = [0]
levels = [0.0, 1.0]
train_sizes = [2000]
max_pack = 1
[train]
epochs = 2
batch_size = 100
[analysis]
train_eval = 100
robustness_examples = 100
[[setups]]
name = "label noise"
noise = "labels.uniform"
"""

Make = Callable[..., list[str]]
CV = '[analysis]\nlabel_issues = "cv"\nfolds = {}\n'  # out-of-sample label issues, K folds


@dataclasses.dataclass(frozen=True)
class Case:
    make: Make  # prepares files and faults; returns the command line
    expected: str  # text of the one line on stderr
    exit_code: int = 2
    then: str = "unchanged"  # or "resumable"
    out: bool = True  # a `run` gets --out tmp_path/out unless it names one


# --- how cases are made -------------------------------------------------------------------------


def study(text: str = "", head: str = "") -> Make:
    """Write a study file (extra TOML before and after STUDY) and run it."""

    def make(tmp_path: Path, **_: object) -> list[str]:
        path = tmp_path / "study.toml"
        path.write_text(head + STUDY + text)
        return ["run", str(path)]

    return make


def args(*extra: str) -> Make:
    return lambda **_: ["run", "--preset", "quick", *extra]


def sample(*extra: str) -> Make:
    """The tiny study on mnist-sample with these options."""
    return lambda tmp_path, **_: [*study()(tmp_path), "--dataset", "mnist-sample", *extra]


def replaced(old: str, new: str, *extra: str) -> Make:
    def make(tmp_path: Path, **_: object) -> list[str]:
        assert old in STUDY
        path = tmp_path / "study.toml"
        path.write_text(STUDY.replace(old, new))
        return ["run", str(path), *extra]

    return make


def train(line: str) -> Make:
    return replaced("epochs = 1", f"epochs = 1\n{line}")


def on_sample(make: Make) -> Make:
    return lambda **kw: [*make(**kw), "--dataset", "mnist-sample"]


def with_memory(make: Make) -> Make:
    """`make`, on a machine said to have MACHINE_MEMORY free."""

    def patched(monkeypatch, **kw) -> list[str]:
        monkeypatch.setattr(memory, "available_bytes", lambda: MACHINE_MEMORY)
        return make(monkeypatch=monkeypatch, **kw)

    return patched


def idx_dir(breaker: Callable[[Path], None], *extra: str) -> Make:
    def make(tiny_idx_dir: Path, **_: object) -> list[str]:
        breaker(tiny_idx_dir)
        argv = ["run", "--preset", "quick", "--dataset", "fashion-mnist"]
        return [*argv, "--data-dir", str(tiny_idx_dir), *extra]

    return make


def idx_study(text: str, breaker: Callable[[Path], None] = lambda _: None) -> Make:
    """The tiny study, with extra TOML, on the (broken) synthetic IDX set."""

    def make(tmp_path: Path, tiny_idx_dir: Path, **_: object) -> list[str]:
        breaker(tiny_idx_dir)
        path = tmp_path / "study.toml"
        path.write_text(text + STUDY)
        return ["run", str(path), "--dataset", "fashion-mnist", "--data-dir", str(tiny_idx_dir)]

    return make


def labels(values: Callable[[int], np.ndarray]) -> Callable[[Path], None]:
    return lambda d: write_idx(d / "train-labels-idx1-ubyte.gz", values(50))


def one_image_per_split(directory: Path) -> None:
    write_idx_dataset(directory, n_train=1, n_test=1)


def truncate_idx(directory: Path) -> None:
    path = directory / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))


def wrong_checksum(tiny_idx_dir: Path, local_server, monkeypatch, **_) -> list[str]:
    url, served = local_server
    for name in data.IDX_FILES:
        (served / name).write_bytes((tiny_idx_dir / name).read_bytes())
    info = dataclasses.replace(data.DATASETS["kmnist"], mirrors=(url,))
    monkeypatch.setitem(data.DATASETS, "kmnist", info)
    monkeypatch.setattr(data.downloads, "_downloader", data.downloads.pooch.HTTPDownloader)
    return ["run", "--preset", "quick", "--dataset", "kmnist"]


def other_study_in_out(out: Path, stores: dict[str, Path], **_: object) -> list[str]:
    copy_store(stores["tiny"], out)
    return ["run", "--preset", "quick", "--dataset", "mnist-sample"]


def out_is_file(out: Path, **_: object) -> list[str]:
    out.write_text("not a directory")
    return ["run", "--preset", "quick", "--dataset", "mnist-sample"]


def out_holds_other_files(out: Path, **kw: object) -> list[str]:
    out.mkdir()
    (out / "thesis.tex").write_text("months of work")
    (out / "results.csv").write_text("someone else's numbers")
    return sample()(**kw, out=out)


def long_out_name(tmp_path: Path, **_: object) -> list[str]:
    return [*sample()(tmp_path=tmp_path), "--out", str(tmp_path / ("x" * 300))]


def resume_without_latest(tmp_path: Path, monkeypatch, **_: object) -> list[str]:
    monkeypatch.chdir(tmp_path)  # no runs/latest here
    return [*study()(tmp_path), "--resume"]


# --- damaged and foreign stores -----------------------------------------------------------------


def damaged(command: str, damage: Callable[[Path], None]) -> Make:
    """A copy of the finished tiny study in `out`, damaged, then read by `command`: show,
    report, or run (the same study again into it)."""

    def make(tmp_path: Path, out: Path, stores: dict[str, Path], **_: object) -> list[str]:
        copy_store(stores["tiny"], out)
        damage(out / "results.sqlite")
        if command == "run":
            return [*study()(tmp_path), "--dataset", "mnist-sample", "--out", str(out)]
        return [command, str(out)]

    return make


def sql(*statements: str) -> Callable[[Path], None]:
    def damage(db_path: Path) -> None:
        with sqlite3.connect(db_path) as db:
            for statement in statements:
                db.execute(statement)
        db.close()

    return damage


def cut(db_path: Path) -> None:
    db_path.write_bytes(db_path.read_bytes()[: db_path.stat().st_size // 2])


def random_bytes(db_path: Path) -> None:
    db_path.write_bytes(np.random.default_rng(0).bytes(40_000))


def empty(db_path: Path) -> None:
    db_path.write_bytes(b"")


def foreign(db_path: Path) -> None:
    db_path.unlink()
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE photos (id INTEGER, path TEXT)")
    db.close()


def store_is_a_directory(db_path: Path) -> None:
    db_path.unlink()
    db_path.mkdir()


def future_study(db_path: Path) -> None:
    with sqlite3.connect(db_path) as db:
        (text,) = db.execute("SELECT value FROM meta WHERE key = 'study'").fetchone()
        future = text.replace('"train": {', '"train": {"warmup": 3, ', 1)
        db.execute("UPDATE meta SET value = ? WHERE key = 'study'", (future,))
    db.close()


# --- faults -------------------------------------------------------------------------------------


def fault_study(tmp_path: Path, **_: object) -> list[str]:
    path = tmp_path / "fault.toml"
    path.write_text(FAULT_STUDY)
    return ["run", str(path), "--dataset", "mnist-sample", "--no-report"]


def fault(inject: Callable[[pytest.MonkeyPatch], None]) -> Make:
    def make(monkeypatch, **kw) -> list[str]:
        inject(monkeypatch)
        return fault_study(**kw)

    return make


def on_call(number: int, action: Callable[[], None], original: Callable) -> Callable:
    """`original`, except that call `number` (1-based) first does `action`."""
    calls = []

    def wrapper(*a, **kw):
        calls.append(1)
        if len(calls) == number:
            action()
        return original(*a, **kw)

    return wrapper


def enospc(path: str = "") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def sqlite_full_on_second_run(monkeypatch) -> None:
    """SQLite's own "database or disk is full" while the second pack's run is stored: the
    store may not grow by a page."""
    finish = Store.finish_run

    def finish_run(self, *a, **kw):
        if self.db.execute("SELECT count(*) FROM runs WHERE status = 'done'").fetchone()[0]:
            pages = self.db.execute("PRAGMA page_count").fetchone()[0]
            self.db.execute(f"PRAGMA max_page_count = {pages}")
        return finish(self, *a, **kw)

    monkeypatch.setattr(Store, "finish_run", finish_run)


def checkpoint_disk_full(monkeypatch) -> None:
    """The second checkpoint (the second pack's first epoch) finds the disk full."""
    opened = Path.open
    calls = []

    def open_(self, mode="r", *a, **kw):
        if self.suffix == ".tmp" and self.parent.name == "checkpoints" and "w" in mode:
            calls.append(self)
            if len(calls) == 2:
                raise enospc(str(self))
        return opened(self, mode, *a, **kw)

    monkeypatch.setattr(Path, "open", open_)


def csv_disk_full(monkeypatch) -> None:
    def export_csv(_self, path, **_):
        raise enospc(str(path))

    monkeypatch.setattr(Store, "export_csv", export_csv)


def interrupt(monkeypatch, target: object, name: str, number: int = 1) -> None:
    def stop() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(target, name, on_call(number, stop, getattr(target, name)))


def ctrl_c_after_first_checkpoint(monkeypatch) -> None:
    save = pack._save_atomic

    def save_then_stop(state, path):
        save(state, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(pack, "_save_atomic", save_then_stop)


def failing_first_pack(monkeypatch) -> None:
    from noisebench.backends import local
    from noisebench.errors import NoisebenchError

    def train_pack(*_, **__):
        raise NoisebenchError("the engine refused the first pack")

    monkeypatch.setattr(local, "train_pack", train_pack)


def another_run_holds_out(out: Path, **kw) -> list[str]:
    claim = OutputClaim(out)
    claim.__enter__()  # released at the end of the test by the `claims` list
    kw["claims"].append(claim)
    return fault_study(**kw)


def report_disk_full(out: Path, stores: dict[str, Path], monkeypatch, **_) -> list[str]:
    from matplotlib.figure import Figure

    copy_store(stores["tiny"], out)

    def savefig(_self, fname, *_, **__):
        raise enospc(str(fname))

    monkeypatch.setattr(Figure, "savefig", savefig)
    return ["report", str(out)]


def report_interrupted(out: Path, stores: dict[str, Path], monkeypatch, **_) -> list[str]:
    from matplotlib.figure import Figure

    copy_store(stores["tiny"], out)
    interrupt(monkeypatch, Figure, "savefig", number=2)
    return ["report", str(out)]


def nested(depth: int) -> Make:
    def make(tmp_path: Path, **_: object) -> list[str]:
        path = tmp_path / "deep.toml"
        path.write_text(STUDY + "deep = " + "[" * depth + "]" * depth + "\n")
        return ["run", str(path)]

    return make


def big_file(tmp_path: Path, **_: object) -> list[str]:
    path = tmp_path / "big.toml"
    path.write_text(STUDY + "#" * (2 << 20) + "\n")
    return ["run", str(path)]


BAD_INPUTS = {
    # --- the study: unknown keys and values, strict types, finite numbers, ranges ----------------
    "unknown preset": Case(args("--preset", "nope"), "unknown preset 'nope'"),
    "unknown option": Case(args("--epoch", "3"), "No such option: --epoch"),
    "option value not a number": Case(args("--epochs", "x"), "Invalid value for '--epochs'"),
    "unknown command": Case(lambda **_: ["shw"], "No such command 'shw'. Did you mean 'show'?"),
    "an extra argument": Case(lambda **_: ["show", "a", "b"], "unexpected extra argument"),
    "unknown top-level key": Case(study(head="colour = 'red'\n"), "'colour': unknown key"),
    "unknown train key": Case(train("warmup = 3"), "train.warmup"),
    "unknown setup key": Case(study("weight = 2\n"), "setups.0.weight"),
    "level above one": Case(replaced("[0.0, 0.5]", "[0.0, 1.5]"), "levels.1"),
    "level below zero": Case(replaced("[0.0, 0.5]", "[-0.2]"), "levels.0"),
    "level of wrong type": Case(replaced("[0.0, 0.5]", '["high"]'), "levels.0"),
    "duplicate levels": Case(replaced("[0.0, 0.5]", "[0.0, 0.5, 0.5]"), "levels must be unique"),
    "duplicate levels of a setup": Case(
        study("levels = [0.2, 0.2]\n"), "'setups.0.levels': levels must be unique"
    ),
    "1,001 levels": Case(
        replaced("[0.0, 0.5]", str([i / 1000 for i in range(1001)])), "at most 1000 items"
    ),
    "200,000 runs": Case(
        replaced(
            "seeds = [0]\nlevels = [0.0, 0.5]",
            f"seeds = {list(range(1000))}\nlevels = {[i / 200 for i in range(200)]}",
        ),
        "the study has 200,000 runs, more than 100,000",
    ),
    # --- training methods (study.Method) ----------------------------------------------------------
    "unknown method": Case(study(head="methods = ['mixup']\n"), "'methods.0.name': Input should"),
    "gce q above one": Case(
        study(head="methods = [{name = 'gce', q = 1.5}]\n"), "gce's q must lie in (0, 1], not 1.5"
    ),
    "gce q zero": Case(study(head="methods = [{name = 'gce', q = 0.0}]\n"), "(0, 1], not 0"),
    "sce negative alpha": Case(
        study(head="methods = [{name = 'sce', alpha = -0.1}]\n"), "alpha must not be negative"
    ),
    "sce negative beta": Case(
        study(head="methods = [{name = 'sce', beta = -1.0}]\n"), "beta must not be negative"
    ),
    "bootstrap beta above one": Case(
        study(head="methods = [{name = 'bootstrap', beta = 1.2}]\n"), "beta must lie in [0, 1]"
    ),
    "a parameter of another method": Case(
        study(head="methods = [{name = 'gce', beta = 0.5}]\n"), "'gce' takes no parameter 'beta'"
    ),
    "T not row-stochastic": Case(
        study(head="methods = [{name = 'forward', T = [[0.5, 0.4], [0.0, 1.0]]}]\n"),
        "T is not row-stochastic: row 0 sums to 0.9",
    ),
    "T not square": Case(
        study(head="methods = [{name = 'backward', T = [[0.5, 0.5], [1.0]]}]\n"),
        "T must be square: row 1 has 1 entries, not 2",
    ),
    "T of the wrong size for the data": Case(
        on_sample(study(head="methods = [{name = 'forward', T = [[0.5, 0.5], [0.5, 0.5]]}]\n")),
        "method forward: T is 2×2, but the dataset has 10 classes",
    ),
    "backward correction with a singular T": Case(
        on_sample(replaced("levels = [0.0, 0.5]", "levels = [0.0, 1.0]\nmethods = ['backward']")),
        "method backward: the T of setup 'label noise' at level 1 is singular",
    ),
    "co-teaching forgetting every example": Case(
        on_sample(replaced("levels = [0.0, 0.5]", "levels = [0.0, 1.0]\nmethods = ['coteaching']")),
        "method coteaching: setup 'label noise' at level 1 gives a forget rate ≥ 1",
    ),
    "T estimated after the last epoch": Case(
        study(head="methods = [{name = 'forward', T = 'estimated'}]\n"),
        "method forward estimates T after 5 epochs, but training has 1: lower estimate_after",
    ),
    "early-stop without validation": Case(
        study(head="methods = ['ce', 'early-stop']\n"), "'early-stop' needs a validation share"
    ),
    "duplicate methods": Case(
        study(head="methods = ['gce', {name = 'gce', q = 0.7}]\n"), "methods must be unique"
    ),
    "epochs zero in study": Case(replaced("epochs = 1", "epochs = 0"), "train.epochs"),
    "epochs 10**21": Case(replaced("epochs = 1", f"epochs = {10**21}"), "less than or equal"),
    "epochs true": Case(
        replaced("epochs = 1", "epochs = true"), "'train.epochs': Input should be a valid integer"
    ),
    "epochs 2.0": Case(replaced("epochs = 1", "epochs = 2.0"), "train.epochs"),
    "epochs negative option": Case(args("--epochs", "-3"), "train.epochs"),
    "epochs option over the limit": Case(args("--epochs", "10001"), "train.epochs"),
    "batch size zero": Case(replaced("batch_size = 128", "batch_size = 0"), "train.batch_size"),
    "batch size 1.5": Case(replaced("batch_size = 128", "batch_size = 1.5"), "train.batch_size"),
    "negative learning rate": Case(train("lr = -0.1"), "train.lr"),
    "learning rate inf": Case(train("lr = inf"), "'train.lr': Input should be a finite number"),
    "learning rate nan": Case(train("lr = nan"), "'train.lr': Input should be a finite number"),
    "learning rate as text": Case(train('lr = "0.1"'), "train.lr"),
    "one fold": Case(
        study(CV.format(1)), "'analysis.folds': Input should be greater than or equal to 2"
    ),
    "label issues neither in-sample nor cv": Case(
        study('[analysis]\nlabel_issues = "oos"\n'), "analysis.label_issues"
    ),
    "cv without label noise": Case(
        replaced('"labels.uniform"', '"pixels.gaussian"\n' + CV.format(5)),
        'analysis.label_issues = "cv" needs a setup with label noise',
    ),
    "cv of a diluted training set": Case(
        replaced('"labels.uniform"', '"labels.dilution"\nlevels = [1.0]\n' + CV.format(5)),
        "cannot split setup 'label noise' (labels.dilution) into folds",
    ),
    "more folds than the smallest class has examples": Case(
        lambda tmp_path, **_: [
            *study(CV.format(6), head="train_sizes = [50]\n")(tmp_path),
            *("--dataset", "mnist-sample"),
        ],
        "analysis.folds = 6 is more than the 5 examples of the smallest class",
    ),
    "weight decay inf": Case(train("weight_decay = inf"), "train.weight_decay"),
    "gamma inf": Case(train('schedule = "step"\ngamma = inf'), "train.gamma"),
    "momentum of one": Case(train("momentum = 1.0"), "train.momentum"),
    "unknown schedule": Case(train('schedule = "linear"'), "train.schedule"),
    "min_delta inf": Case(
        study(head="validation = 0.1\nearly_stopping = { patience = 2, min_delta = inf }\n"),
        "early_stopping.min_delta",
    ),
    "seeds as text": Case(replaced("seeds = [0]", 'seeds = ["0"]'), "seeds.0"),
    "seed 2**63": Case(replaced("seeds = [0]", f"seeds = [{2**63}]"), "seeds.0"),
    "negative seed option": Case(args("--seeds", "-1"), "seeds.0"),
    "duplicate seeds": Case(replaced("seeds = [0]", "seeds = [1, 1]"), "seeds must be unique"),
    "no seeds": Case(replaced("seeds = [0]", "seeds = []"), "seeds"),
    "bad seeds option": Case(args("--seeds", "1,x"), "--seeds"),
    "empty hidden sizes": Case(study(head="[model]\nhidden = []\n"), "model.hidden"),
    "zero-width layer": Case(study(head="[model]\nhidden = [128, 0]\n"), "model.hidden.1"),
    "a layer of 10**8 units": Case(
        study(head="[model]\nhidden = [100000000]\n"),
        "'model.hidden.0': Input should be less than or equal to 65536",
    ),
    "unknown activation": Case(study(head="[model]\nactivation = 'gelu'\n"), "model.activation"),
    "dropout of one": Case(study(head="[model]\ndropout = 1.0\n"), "model.dropout"),
    "batchnorm 1": Case(study(head="[model]\nbatchnorm = 1\n"), "model.batchnorm"),
    "image size 100,000": Case(
        study(head="[data]\nimage_size = [100000, 100000]\n"), "data.image_size.0"
    ),
    "image size of true": Case(study(head="[data]\nimage_size = [true, 28]\n"), "data.image_size"),
    "max_pack zero": Case(study(head="max_pack = 0\n"), "max_pack"),
    "duplicate fgsm sizes": Case(
        study(head="[analysis]\nfgsm_eps = [0.1, 0.1]\n"), "fgsm_eps must be unique"
    ),
    "blank setup name": Case(
        replaced('name = "label noise"', 'name = "   "'), "setup name is blank"
    ),
    "setup name with a newline": Case(
        replaced('name = "label noise"', 'name = "a\\nb"'), "control character"
    ),
    "5,000-character setup name": Case(
        replaced('name = "label noise"', f'name = "{"n" * 5000}"'), "setups.0.name"
    ),
    "200 kB description": Case(study(head=f'description = "{"d" * 200_000}"\n'), "description"),
    "duplicate setups": Case(
        study('[[setups]]\nname = "label noise"\nnoise = "pixels.replace"\n'),
        "duplicate setup name 'label noise'",
    ),
    "unknown noise": Case(
        replaced("labels.uniform", "labels.wobble"), "unknown noise 'labels.wobble'"
    ),
    "bad noise parameter": Case(study('params = { exclude_true = "maybe" }\n'), "exclude_true"),
    "noise flag as 1": Case(study("params = { exclude_true = 1 }\n"), "exclude_true"),
    "gaussian sigma inf": Case(
        replaced('"labels.uniform"', '"pixels.gaussian"\nparams = { sigma = inf }'), "sigma"
    ),
    "noisy copies not whole": Case(
        study('[[setups]]\nname = "d"\nnoise = "labels.dilution"\nlevels = [1.5]\n'),
        "not a whole number",
    ),
    "early stopping without validation": Case(
        study(head="early_stopping = { patience = 2 }\n"), "early_stopping needs a validation share"
    ),
    "validation share of one half": Case(study(head="validation = 0.5\n"), "validation"),
    "unknown train size word": Case(
        study(head='train_sizes = ["most"]\n'), "field 'train_sizes.0': Input should be"
    ),
    # --- the study file itself -------------------------------------------------------------------
    "invalid TOML": Case(study("levels = [0.1,\n"), "not valid TOML"),
    "TOML nested 100,000 deep": Case(nested(100_000), "nested too deeply"),
    "study file of 2 MiB": Case(big_file, "larger than 1 MiB"),
    "missing study file": Case(
        lambda tmp_path, **_: ["run", str(tmp_path / "nope.toml")], "study file not found"
    ),
    "study path is a directory": Case(
        lambda tmp_path, **_: ["run", str(tmp_path)], "is a directory, not a study file"
    ),
    "study file and preset": Case(
        lambda tmp_path, **_: study()(tmp_path) + ["--preset", "quick"], "not both"
    ),
    # --- what can only be checked against the data, before anything is written -------------------
    "train size beyond a class": Case(
        on_sample(study(head="train_sizes = [9000]\n")),
        "train size 9000 needs 900 examples of class",
    ),
    "pair-flip mapping out of range": Case(
        on_sample(
            replaced('"labels.uniform"', '"labels.pairflip"\nparams = { mapping = [1, 2, 0] }')
        ),
        "mapping has 3 entries with values up to 2, but the dataset has 10 classes",
    ),
    "transition matrix of the wrong size": Case(
        on_sample(
            replaced('"labels.uniform"', '"labels.matrix"\nparams = { matrix = [[0, 1], [1, 0]] }')
        ),
        "labels.matrix is 2×2, but the dataset has 10 classes",
    ),
    "hidden layers beyond the memory": Case(
        with_memory(on_sample(study(head="model = { hidden = [65536, 65536] }\n"))),
        "a pack of 2 runs of a 784-65536-65536-10 MLP needs at least",
    ),
    "images beyond the memory": Case(
        with_memory(on_sample(study(head="data = { image_size = [4096, 4096], channels = 3 }\n"))),
        "5,000 images of 3×4096×4096",
    ),
    "validation share that holds out nothing": Case(
        idx_study("validation = 0.1\n"), "holds out no example of the 50-example training set"
    ),
    # --- data ------------------------------------------------------------------------------------
    "unknown dataset": Case(args("--dataset", "cifar"), "unknown dataset 'cifar'"),
    "corrupt IDX": Case(
        idx_dir(lambda d: (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")),
        "t10k-labels-idx1-ubyte.gz",
    ),
    "truncated IDX": Case(idx_dir(truncate_idx), "train-images-idx3-ubyte.gz"),
    "label out of range": Case(idx_dir(labels(lambda n: np.full(n, 12))), "label 12"),
    "IDX set missing a class": Case(
        idx_dir(labels(lambda n: np.arange(n) % 9)), "images of 9 of the 10 classes (none of"
    ),
    "IDX set of one class": Case(
        idx_dir(labels(lambda n: np.zeros(n))), "images of 1 of the 10 classes"
    ),
    "IDX set of one image per split": Case(
        idx_dir(one_image_per_split), "images of 1 of the 10 classes"
    ),
    "wrong checksum": Case(wrong_checksum, "checksum mismatch"),
    "named dataset absent offline": Case(args("--dataset", "kmnist"), "not available offline"),
    "data directory that does not exist": Case(
        args("--data-dir", "/nonexistent"), "data directory /nonexistent does not exist"
    ),
    "data directory without the default dataset": Case(
        lambda tmp_path, **_: ["run", "--preset", "quick", "--data-dir", str(tmp_path)],
        "dataset 'mnist' not found in",
    ),
    "empty data directory option": Case(args("--data-dir", ""), "--data-dir is empty"),
    # --- the output directory --------------------------------------------------------------------
    "output under a file": Case(
        lambda tmp_path, **_: ["run", "--preset", "quick", "--out", str(tmp_path / "f" / "sub")],
        "not writable",
    ),
    "output is a file": Case(out_is_file, "not a directory"),
    "output holds another study": Case(other_study_in_out, "different study"),
    "output holds other files": Case(
        out_holds_other_files, "is not empty and holds no noisebench study (it has results.csv"
    ),
    "output name of 300 characters": Case(long_out_name, "file systems allow at most 255"),
    "empty output option": Case(sample("--out", ""), "--out is empty"),
    "resume without --out or runs/latest": Case(
        resume_without_latest, "there is no runs/latest", out=False
    ),
    "unknown device": Case(args("--device", "tpu"), "tpu"),
    "unknown backend": Case(
        args("--backend", "slurm", "--dataset", "mnist-sample"), "unknown backend 'slurm'"
    ),
    # --- damaged and foreign stores: show, report, run --out -------------------------------------
    "show without results": Case(lambda out, **_: ["show", str(out)], "no results found"),
    "show: truncated store": Case(damaged("show", cut), "results.sqlite: damaged SQLite file"),
    "show: random bytes": Case(damaged("show", random_bytes), "not an SQLite database"),
    "show: empty file": Case(damaged("show", empty), "results.sqlite: empty file"),
    "show: store is a directory": Case(damaged("show", store_is_a_directory), "is not a file"),
    "show: foreign SQLite file": Case(damaged("show", foreign), "table 'meta' is missing"),
    "show: epochs table dropped": Case(
        damaged("show", sql("DROP TABLE epochs")), "table 'epochs' is missing"
    ),
    "report: runs table dropped": Case(
        damaged("report", sql("DROP TABLE runs")), "table 'runs' is missing"
    ),
    "show: text in an accuracy column": Case(
        damaged("show", sql("UPDATE epochs SET test_acc = 'high'")),
        "column 'test_acc' holds a non-number",
    ),
    "report: text in the level column": Case(
        damaged("report", sql("UPDATE runs SET level = 'half'")), "a level is not a number"
    ),
    "show: accuracy of 7.5": Case(
        damaged("show", sql("UPDATE epochs SET test_acc = 7.5")), "'test_acc' lies outside [0, 1]"
    ),
    "show: bad JSON in meta": Case(
        damaged("show", sql("UPDATE meta SET value = '{\"name\": ' WHERE key = 'study'")),
        "meta 'study' is not valid JSON",
    ),
    "report: bad JSON in a run config": Case(
        damaged("report", sql("UPDATE runs SET config = '[1, 2'")), "is not a JSON object"
    ),
    "show: a study from another version": Case(
        damaged("show", future_study), "train.warmup': unknown key (written by another version"
    ),
    "show: a store from a newer version": Case(
        damaged("show", sql("INSERT OR REPLACE INTO meta VALUES ('store_version', '99')")),
        "written by a newer noisebench (store version 99",
    ),
    "show: meta without the study": Case(
        damaged("show", sql("DELETE FROM meta WHERE key = 'study'")), "meta 'study' is missing"
    ),
    "show: meta with a wrong type": Case(
        damaged("show", sql("UPDATE meta SET value = '7' WHERE key = 'dataset'")),
        "meta 'dataset': Input should be a valid string",
    ),
    "report: epoch number 1e9": Case(
        damaged("report", sql("UPDATE epochs SET epoch = 1000000000")),
        "an epoch number is not one of the study's epochs 1..1",
    ),
    "report: metric epoch as text": Case(
        damaged("report", sql("UPDATE metrics SET epoch = 'last'")), "table 'metrics'"
    ),
    "report: a run of an unknown setup": Case(
        damaged("report", sql("UPDATE runs SET setup = 'ghost' WHERE level > 0")),
        "has setup 'ghost' not in the study",
    ),
    "report: a damaged array": Case(
        damaged("report", sql("UPDATE arrays SET data = x'00ff'")), "is not a readable array"
    ),
    "run --out into a truncated store": Case(damaged("run", cut), "damaged SQLite file"),
    "run --out into random bytes": Case(damaged("run", random_bytes), "not an SQLite database"),
    "run --out into a store without runs": Case(
        damaged("run", sql("DROP TABLE runs")), "table 'runs' is missing"
    ),
    # --- faults ----------------------------------------------------------------------------------
    "disk full in SQLite": Case(
        fault(sqlite_full_on_second_run), "disk full: no space left on", then="resumable"
    ),
    "disk full writing a checkpoint": Case(
        fault(checkpoint_disk_full), "disk full: no space left on", then="resumable"
    ),
    "disk full writing the CSV tables": Case(
        fault(csv_disk_full), "disk full: no space left on", then="resumable"
    ),
    "disk full writing the report": Case(report_disk_full, "disk full: no space left on"),
    "a failure before any run finished": Case(
        fault(failing_first_pack), "the engine refused the first pack"
    ),
    "another run writes into --out": Case(
        another_run_holds_out, "another noisebench run is writing into"
    ),
    "Ctrl-C while the data loads": Case(
        fault(lambda mp: interrupt(mp, runner, "resolve_data")),
        "interrupted",
        exit_code=130,
    ),
    "Ctrl-C while the store is created": Case(
        fault(lambda mp: interrupt(mp, Store, "set_meta")), "interrupted", exit_code=130
    ),
    "Ctrl-C mid-training": Case(
        fault(ctrl_c_after_first_checkpoint), "interrupted", exit_code=130, then="resumable"
    ),
    "Ctrl-C during the report": Case(report_interrupted, "interrupted", exit_code=130),
}


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """Finished studies to copy: "tiny" (STUDY), "fault" (FAULT_STUDY, the reference numbers)."""
    root = tmp_path_factory.mktemp("stores")
    out = {}
    for name, text in (("tiny", STUDY), ("fault", FAULT_STUDY)):
        path = root / f"{name}.toml"
        path.write_text(text)
        run_study(load_study(path), root / name, dataset="mnist-sample")
        out[name] = root / name
    return out


def snapshot(directory: Path) -> dict[str, str] | None:
    """Every file under `directory` (relative path -> sha256 of its bytes; "dir" for folders)."""
    if not directory.exists():
        return None
    if directory.is_file():
        return {".": hashlib.sha256(directory.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(directory)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
    }


@pytest.mark.usefixtures("isolated_data_env")
@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_or_fault_gets_one_line_and_leaves_the_output_as_it_was_or_resumable(
    case, tmp_path, tiny_idx_dir, local_server, monkeypatch, stores
):
    spec = BAD_INPUTS[case]
    (tmp_path / "f").write_text("a file, not a directory")
    out = tmp_path / "out"
    claims: list[OutputClaim] = []
    argv = spec.make(
        tmp_path=tmp_path,
        tiny_idx_dir=tiny_idx_dir,
        local_server=local_server,
        monkeypatch=monkeypatch,
        out=out,
        stores=stores,
        claims=claims,
    )
    if argv[0] == "run" and spec.out and "--out" not in argv:
        argv += ["--out", str(out)]
    before = snapshot(out)
    try:
        result = CliRunner().invoke(app, argv)
        after = snapshot(out)
    finally:
        for claim in claims:
            claim.__exit__(None)
    assert result.exit_code == spec.exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    if spec.exit_code == 2:
        assert lines[0].startswith("error: ")
    assert spec.expected in lines[0]
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    if spec.then == "unchanged":
        assert after == before
        return
    assert not any(name.startswith(".report-") for name in after)
    monkeypatch.undo()  # the fault is gone: the study resumes and matches an uninterrupted one
    resumed = CliRunner().invoke(app, [*argv, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert numbers(out / "results.sqlite") == numbers(stores["fault"] / "results.sqlite")
    assert not (out / "checkpoints").exists() and not (out / LOCK_NAME).exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],
        lambda b: np.random.default_rng(1).bytes(len(b)),
        lambda _: b"",
    ],
    ids=["truncated", "random bytes", "zero bytes"],
)
def test_a_corrupt_checkpoint_is_one_warning_and_its_pack_trains_again(
    damage, tmp_path, monkeypatch, stores
):
    out = tmp_path / "out"
    argv = [*fault_study(tmp_path), "--out", str(out)]
    ctrl_c_after_first_checkpoint(monkeypatch)
    assert CliRunner().invoke(app, argv).exit_code == 130
    monkeypatch.undo()
    (checkpoint,) = (out / "checkpoints").glob("*.pt")
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))

    resumed = CliRunner().invoke(app, [*argv, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    warnings = [line for line in resumed.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and str(checkpoint) in warnings[0]
    assert "does not load" in warnings[0] and "trains again from the first epoch" in warnings[0]
    assert numbers(out / "results.sqlite") == numbers(stores["fault"] / "results.sqlite")


def cli_process(*argv: str, **kwargs) -> subprocess.Popen:
    """`python -m noisebench ARGV` in a new process that takes Ctrl-C as a terminal would."""
    return subprocess.Popen(
        [sys.executable, "-m", "noisebench", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


LONG_STUDY = FAULT_STUDY.replace("epochs = 2", "epochs = 40").replace("fault", "long")


@pytest.mark.timeout(600)
def test_a_second_run_into_a_busy_out_is_refused_and_ctrl_c_leaves_a_store_that_resumes(
    tmp_path,
):
    study_path, out = tmp_path / "long.toml", tmp_path / "out"
    study_path.write_text(LONG_STUDY)
    argv = ["run", str(study_path), "--out", str(out), "--dataset", "mnist-sample", "--no-report"]
    first = cli_process(*argv)
    wait_for(lambda: any((out / "checkpoints").glob("*.pt")), first)  # an epoch is stored
    first.send_signal(signal.SIGSTOP)  # paused, it holds the lock however fast it would train

    second = subprocess.run(
        [sys.executable, "-m", "noisebench", *argv], capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"error: another noisebench run is writing into {out}; wait for it to finish or choose "
        "another --out"
    ]
    assert first.poll() is None  # refused while the first still trains

    first.send_signal(signal.SIGINT)  # delivered as it resumes
    first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130
    assert stderr.strip().splitlines()[-1] == (
        "interrupted: finished runs are stored; rerun with --resume"
    )
    assert "Traceback" not in stderr
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    assert not (out / LOCK_NAME).exists()

    resumed = CliRunner().invoke(app, [*argv, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert [row[3] for row in numbers(out / "results.sqlite")[::40]] == ["done", "done"]


@pytest.mark.parametrize("delay", [0.5, 1.5, 3.0])  # Python itself starts in about 0.1 s
def test_ctrl_c_during_start_up_exits_130_in_one_line_and_writes_nothing(tmp_path, delay):
    study_path, out = tmp_path / "long.toml", tmp_path / "out"
    study_path.write_text(LONG_STUDY)
    proc = cli_process("run", str(study_path), "--dataset", "mnist-sample", "--out", str(out))
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted"), stderr
    if not (out / "checkpoints").exists():  # nothing trained yet: nothing written
        assert not out.exists()


def test_a_report_killed_midway_leaves_no_staging_folder_behind(tmp_path, stores):
    out = copy_store(stores["tiny"], tmp_path / "out")
    proc = cli_process("report", str(out))
    wait_for(lambda: any(out.glob(".report-*/figures/*.png")), proc)
    proc.kill()
    proc.wait()
    assert list(out.glob(".report-*"))  # what the kill left

    again = CliRunner().invoke(app, ["report", str(out)])
    assert again.exit_code == 0, again.output
    assert not list(out.glob(".report-*")) and (out / "report.html").exists()


def namespace_shell(script: str, **kwargs) -> subprocess.CompletedProcess:
    """`script` in sh inside a private mount namespace (as root there), where tmpfs and
    read-only mounts can be made without touching the machine's."""
    if not _can_mount():
        pytest.skip("no mount namespace here (unshare -rm)")
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def _can_mount() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.timeout(600)
def test_a_real_full_disk_is_one_line_and_the_study_resumes_once_there_is_space(tmp_path, stores):
    mount, study_path = tmp_path / "small-disk", tmp_path / "fault.toml"
    mount.mkdir()
    study_path.write_text(FAULT_STUDY)
    run = f"{sys.executable} -m noisebench run {study_path} --out {mount}/out"
    run += " --dataset mnist-sample --no-report"
    script = f"""
        mount -t tmpfs -o size=800k tmpfs {mount} || exit 99
        {run} 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc
        mount -o remount,size=100m {mount}
        {run} --resume 2> {tmp_path}/resume.err; echo $? > {tmp_path}/resume.rc
        cp {mount}/out/results.sqlite {tmp_path}/resumed.sqlite
    """
    done = namespace_shell(script)
    assert done.returncode == 0, done.stderr
    full = (tmp_path / "full.err").read_text().strip().splitlines()
    assert (tmp_path / "full.rc").read_text().strip() == "2"
    assert len(full) == 1 and full[0].startswith(f"error: disk full: no space left on {mount}")
    assert (tmp_path / "resume.rc").read_text().strip() == "0", (
        tmp_path / "resume.err"
    ).read_text()
    resumed = numbers(tmp_path / "resumed.sqlite")
    assert resumed == numbers(stores["fault"] / "results.sqlite")


def test_show_works_on_read_only_media_and_run_there_is_one_line(tmp_path, stores):
    out = copy_store(stores["tiny"], tmp_path / "out")
    (tmp_path / "tiny.toml").write_text(STUDY)
    before = snapshot(out)
    noisebench = f"{sys.executable} -m noisebench"
    script = f"""
        mount --bind {out} {out} && mount -o remount,bind,ro {out} || exit 99
        {noisebench} show {out} || exit 98
        {noisebench} run {tmp_path / "tiny.toml"} --out {out} --dataset mnist-sample
    """
    done = namespace_shell(script)
    assert "tiny on mnist-sample" in done.stdout and "label noise" in done.stdout
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: output directory {out} is not writable"]
    assert snapshot(out) == before


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
