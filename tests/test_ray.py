"""The ray backend on a real Ray instance on 127.0.0.1 (no mocks): the same stored results as
the local backend, resume across backends, a killed worker retried without duplicates."""

import dataclasses
import logging
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import stored_tables

ray = pytest.importorskip("ray")

from noisebench.backends import PackJob  # noqa: E402
from noisebench.backends.ray import TASK_NAME, RayBackend  # noqa: E402
from noisebench.errors import NoisebenchError  # noqa: E402
from noisebench.runner import run_study  # noqa: E402
from noisebench.store import Store  # noqa: E402
from noisebench.study import parse_study, plan  # noqa: E402

pytestmark = pytest.mark.timeout(240)

STUDY = {
    "name": "onray",
    "seeds": [0, 1],
    "levels": [0.0, 0.4, 0.8],
    "train": {"epochs": 1, "batch_size": 128, "lr": 0.05},
    "max_pack": 2,  # 10 runs -> 5 packs
    "setups": [
        {"name": "label noise", "noise": "labels.uniform"},
        {"name": "pixel noise", "noise": "pixels.replace"},
    ],
}
STUDY_TOML = """
name = "onray"
seeds = [0, 1]
levels = [0.0, 0.4, 0.8]
max_pack = 2
[train]
epochs = 1
batch_size = 128
lr = 0.05
[[setups]]
name = "label noise"
noise = "labels.uniform"
[[setups]]
name = "pixel noise"
noise = "pixels.replace"
"""


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU Ray instance on 127.0.0.1 shared by this module's tests; yields its address.

    Token authentication with a throwaway token in the environment (inherited by the
    subprocesses below), so nothing is written to ~/.ray.
    """
    with pytest.MonkeyPatch.context() as mp:
        # Ray turns token mode on itself (and sets RAY_AUTH_MODE) for a new local instance.
        mp.delenv("RAY_AUTH_MODE", raising=False)
        mp.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
        mp.delenv("RAY_ADDRESS", raising=False)
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def local_result(tmp_path_factory) -> Path:
    return run_study(parse_study(STUDY), tmp_path_factory.mktemp("local"), dataset="mnist-sample")


def stored(directory: Path) -> dict:
    """What a study stores besides its numbers: runs with status and pack size, arrays."""
    with Store(directory) as store:
        runs = {r["run_id"]: (r["status"], r["pack_size"]) for r in store.runs()}
        arrays = {
            (owner, name): store.array(owner, name)
            for owner, name in store.db.execute("SELECT owner, name FROM arrays ORDER BY 1, 2")
        }
    return {"runs": runs, "arrays": arrays}


def assert_same(a: Path, b: Path, same_packs: bool = True) -> None:
    """The same runs, statuses and label-noise arrays, and the same epochs and metrics bit
    for bit: a pack's ops are single-threaded on CPU, in a one-CPU Ray task as locally."""
    x, y = stored(a), stored(b)
    if same_packs:
        assert x["runs"] == y["runs"]
    else:  # resumed runs are packed anew, so only their status must agree
        assert {k: s for k, (s, _) in x["runs"].items()} == {
            k: s for k, (s, _) in y["runs"].items()
        }
    assert stored_tables(a) == stored_tables(b)
    assert x["arrays"].keys() == y["arrays"].keys()
    for key, array in x["arrays"].items():
        np.testing.assert_array_equal(array, y["arrays"][key])


@pytest.mark.usefixtures("cluster")
def test_a_study_on_ray_stores_what_local_stores(local_result, tmp_path):
    seen: list[tuple[int, int, str]] = []
    run_study(
        parse_study(STUDY),
        tmp_path,
        dataset="mnist-sample",
        backend="ray",
        progress=lambda done, total, text: seen.append((done, total, text)),
    )
    assert_same(tmp_path, local_result)
    with Store(tmp_path) as store:
        assert len(store.runs()) == 10 and {r["status"] for r in store.runs()} == {"done"}
        assert len(store.epochs()) == 10
    assert seen[-1][0] == seen[-1][1] and seen[-1][2] == "runs 10/10"
    assert not (tmp_path / "checkpoints").exists()
    assert ray.is_initialized()  # a connection the backend did not make is left open


@pytest.mark.usefixtures("cluster")
def test_resume_works_across_backends(local_result, tmp_path):
    """A study interrupted under the local backend is finished by the ray backend."""
    out = tmp_path / "study"
    shutil.copytree(local_result, out)
    with sqlite3.connect(out / "results.sqlite") as db:
        lost = [r for (r,) in db.execute("SELECT run_id FROM runs ORDER BY run_id LIMIT 5")]
        marks = ",".join("?" * len(lost))
        db.execute(f"UPDATE runs SET status = 'pending' WHERE run_id IN ({marks})", lost)
        db.execute(f"DELETE FROM epochs WHERE run_id IN ({marks})", lost)
    run_study(parse_study(STUDY), out, dataset="mnist-sample", backend="ray")
    assert_same(out, local_result, same_packs=False)


def test_the_cli_connects_to_a_running_cluster_by_address(cluster, local_result, tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(STUDY_TOML)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "noisebench", "run", str(study), "--dataset", "mnist-sample"]
        + ["--out", str(out), "--no-report", "--backend", "ray", "--ray-address", cluster],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same(out, local_result)
    # The CLI only disconnected: the cluster it used is still up and running tasks.
    assert ray.get(ray.remote(lambda: 42).remote(), timeout=60) == 42


def _ancestors(pid: int, depth: int = 4) -> list[int]:
    chain = []
    for _ in range(depth):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def _our_pack_workers() -> list[int]:
    """Ray workers of this test's instance currently running a pack (title ray::<TASK_NAME>)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(f"ray::{TASK_NAME}".encode()) and os.getpid() in _ancestors(
            int(entry.name)
        ):
            found.append(int(entry.name))
    return found


@pytest.mark.usefixtures("cluster")
def test_a_worker_killed_mid_pack_is_retried_and_no_run_is_stored_twice(tmp_path):
    epochs = 6
    study = parse_study(
        {**STUDY, "levels": [0.0, 0.5], "train": {**STUDY["train"], "epochs": epochs}}
    )
    out = tmp_path / "ray"
    checkpoints = out / "checkpoints"
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        # Wait until a pack is mid-way (it wrote an epoch checkpoint), then kill its worker.
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            workers = _our_pack_workers()
            if workers and checkpoints.is_dir() and any(checkpoints.glob("pack-*.pt")):
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        run_study(study, out, dataset="mnist-sample", backend="ray")
    finally:
        stop.set()
        thread.join(10)
    assert killed, "no pack worker was found to kill"

    expected = {r.run_id for r in plan(study)}
    with sqlite3.connect(out / "results.sqlite") as db:
        runs = db.execute("SELECT run_id, status FROM runs").fetchall()
        per_run = dict(db.execute("SELECT run_id, COUNT(*) FROM epochs GROUP BY run_id"))
        epoch_numbers = db.execute(
            "SELECT COUNT(DISTINCT run_id || '/' || epoch), COUNT(*) FROM epochs"
        ).fetchone()
    assert sorted(r for r, _ in runs) == sorted(expected)  # every run exactly once
    assert {s for _, s in runs} == {"done"}
    assert per_run == {r: epochs for r in expected}
    assert epoch_numbers == (len(expected) * epochs,) * 2
    assert not checkpoints.exists()

    # The retried pack resumed from its checkpoint: the same numbers as a local study.
    assert_same(out, run_study(study, tmp_path / "local", dataset="mnist-sample"))


@pytest.mark.usefixtures("cluster")
def test_a_pack_that_raises_is_reported_after_the_other_packs_are_yielded(small_data):
    runs = plan(parse_study({**STUDY, "levels": [0.0], "seeds": [0]}))
    broken = [dataclasses.replace(runs[0], noise="labels.nope", level=0.5, seed=7)]
    jobs = [PackJob(0, broken, None), PackJob(1, runs, None)]
    outcomes = []
    with pytest.raises(NoisebenchError, match="labels.nope"):
        for outcome in RayBackend().train(jobs, small_data, torch.device("cpu"), lambda *_: None):
            outcomes.append(outcome)
    assert [o.job.index for o in outcomes] == [1]
    assert outcomes[0].results[0].status == "done" and len(outcomes[0].results[0].epochs) == 1


@pytest.mark.usefixtures("cluster")
def test_cuda_on_a_cluster_without_gpus_is_one_line():
    with pytest.raises(NoisebenchError, match="the Ray cluster has 0"):
        RayBackend()._check_resources(torch.device("cuda"))


def test_an_unreachable_address_is_one_line_before_anything_is_written(tmp_path):
    from typer.testing import CliRunner

    from noisebench.cli import app

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    argv = ["run", "--preset", "quick", "--backend", "ray", "--ray-address", address]
    result = CliRunner().invoke(app, [*argv, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"cannot reach the Ray cluster at {address}" in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


SELF_STARTED = """
import os, sys
from pathlib import Path
import ray
from noisebench.runner import run_study
from noisebench.study import parse_study
run_study(parse_study({study!r}), Path(sys.argv[1]), dataset="mnist-sample", backend="ray")
children = [
    p.name for p in Path("/proc").iterdir()
    if p.name.isdigit() and (p / "stat").exists()
    and (p / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(os.getpid())
]
print("initialized", ray.is_initialized(), "children", len(children))
"""


def test_without_an_address_a_private_instance_is_started_and_shut_down(tmp_path):
    """No cluster given: the backend starts its own instance and leaves nothing behind."""
    study = {**STUDY, "seeds": [0], "levels": [0.0, 0.4]}  # 3 runs, 2 packs
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    proc = subprocess.run(
        [sys.executable, "-c", SELF_STARTED.format(study=study), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "initialized False children 0" in proc.stdout
    with Store(tmp_path / "out") as store:
        assert len(store.runs()) == 3 and {r["status"] for r in store.runs()} == {"done"}
