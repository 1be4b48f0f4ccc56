"""On CPU, one study gives the same numbers bit for bit in every fresh process on this machine:
whatever the torch thread count and NOISEBENCH_SHARDS, and after kill -9 + --resume.

(bench/determinism.py runs the same study the same ways and prints the count per setting.)
"""

import collections
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import cli, stored_tables, wait_for

# Two packs (max_pack = 3) of six runs: clean, label noise and pixel noise, two seeds each,
# every measurement on (calibration, fits, FGSM, random signs, label issues).
STUDY = """
name = "determinism"
seeds = [0, 1]
levels = [0.0, 0.5]
max_pack = 3
[model]
hidden = [32]
[train]
epochs = 2
batch_size = 128
lr = 0.05
[analysis]
train_eval = 1000
robustness_examples = 200
[[setups]]
name = "label noise"
noise = "labels.uniform"
[[setups]]
name = "pixel noise"
noise = "pixels.replace"
params = { values = "data" }
"""
# Settings under which the numbers must not change; shards follow the torch threads unless
# NOISEBENCH_SHARDS says otherwise, and a pack's ops are single-threaded under all of them.
SETTINGS = {
    "default": {},
    "1 thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "2 threads": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
    "1 shard": {"NOISEBENCH_SHARDS": "1"},
    "1 shard, 2 threads": {"NOISEBENCH_SHARDS": "1", "OMP_NUM_THREADS": "2"},
    "2 shards, 1 thread": {"NOISEBENCH_SHARDS": "2", "OMP_NUM_THREADS": "1"},
}
PROCESSES = 20


def environment(setting: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NOISEBENCH_SHARDS"):
        env.pop(name, None)
    return env | SETTINGS[setting]


def command(study: Path, out: Path) -> list[str]:
    return cli("run", str(study), "--out", str(out), "--dataset", "mnist-sample", "--no-report")


@pytest.mark.timeout(900)
def test_a_study_gives_one_result_in_20_fresh_processes_and_after_kill_9_and_resume(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(STUDY)
    names = list(SETTINGS)
    settings = [names[i % len(names)] for i in range(PROCESSES)]
    outs = [tmp_path / f"out-{i}" for i in range(PROCESSES)]

    def fresh(i: int) -> None:
        subprocess.run(
            command(study, outs[i]),
            env=environment(settings[i]),
            check=True,
            capture_output=True,
            timeout=600,
        )

    with ThreadPoolExecutor(2) as pool:  # two at a time: they compete for the cores
        list(pool.map(fresh, range(PROCESSES)))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        command(study, killed),
        env=environment("default"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: any((killed / "checkpoints").glob("*.pt")), proc)  # a pack is mid-way
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any((killed / "checkpoints").glob("*.pt"))  # resumed from its checkpoint below
    subprocess.run(
        [*command(study, killed), "--resume"],
        env=environment("1 shard, 2 threads"),  # a checkpoint resumes in any shard layout
        check=True,
        capture_output=True,
        timeout=600,
    )

    results = collections.defaultdict(list)
    for out, setting in [*zip(outs, settings, strict=True), (killed, "kill -9 + resume")]:
        epochs, metrics = stored_tables(out)
        results[(tuple(epochs), tuple(metrics))].append(setting)
    (epochs, metrics), *_ = results
    assert len(epochs) == 6 * 2  # six runs, two epochs
    measured = {name for _, _, name, _ in metrics}
    assert {"test_ece", "fit_noisy", "fgsm@0.1", "randsign@0.1", "issues_recall"} <= measured
    assert len(results) == 1, [collections.Counter(found) for found in results.values()]
