"""Cross-process determinism check: one small study in N fresh processes, count the results.

    python bench/determinism.py [--processes 20] [--kills 2] [--preset quick]

Every child is a fresh `noisebench run` of the same study on mnist-sample (by default STUDY:
label and pixel noise, two seeds, two epochs, every measurement), under one of SETTINGS in
turn: torch threads 1 or 2 and NOISEBENCH_SHARDS 1 or 2, where the engine promises the same
numbers. With --kills K, K more studies are killed (SIGKILL) once a pack has checkpointed an
epoch and finished with --resume. A result is the stored `epochs` and `metrics` tables without
wall-clock times; the script prints how many distinct results came out and under which
settings: 1 means every process agreed to the bit.
"""

import argparse
import collections
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
# (name, environment): thread and shard settings under which the numbers must be the same
SETTINGS = [
    ("default", {}),
    ("1 thread", {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}),
    ("2 threads", {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}),
    ("1 shard", {"NOISEBENCH_SHARDS": "1"}),
    ("1 shard, 2 threads", {"NOISEBENCH_SHARDS": "1", "OMP_NUM_THREADS": "2"}),
    ("2 shards, 1 thread", {"NOISEBENCH_SHARDS": "2", "OMP_NUM_THREADS": "1"}),
]
WALL_CLOCK = ("wall_s", "train_s")  # times, not results


def stored_tables(directory: Path) -> tuple[tuple, tuple]:
    """The study's `epochs` and `metrics` rows, without wall-clock times, in a stable order."""
    db = sqlite3.connect(f"file:{directory / 'results.sqlite'}?mode=ro", uri=True)
    try:
        epochs = db.execute(
            "SELECT run_id, epoch, train_loss, train_acc, test_loss, test_acc, test_conf"
            " FROM epochs ORDER BY run_id, epoch"
        ).fetchall()
        metrics = db.execute(
            "SELECT run_id, epoch, name, value FROM metrics WHERE name NOT IN (?, ?)"
            " ORDER BY run_id, epoch, name",
            WALL_CLOCK,
        ).fetchall()
    finally:
        db.close()
    return tuple(epochs), tuple(metrics)


def command(study: list[str], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "noisebench", "run", *study, "--out", str(out)] + [
        "--dataset",
        "mnist-sample",
        "--no-report",
        *extra,
    ]


def environment(setting: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.pop("NOISEBENCH_SHARDS", None)
    return env | {"PYTHONPATH": str(ROOT)} | setting


def killed_and_resumed(study: list[str], out: Path, setting: dict[str, str]) -> None:
    """Run the study, SIGKILL it once a pack has checkpointed an epoch, then --resume it."""
    env = environment(setting)
    proc = subprocess.Popen(
        command(study, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while not any((out / "checkpoints").glob("*.pt")):
        if proc.poll() is not None:
            raise SystemExit("the study finished before a checkpoint could be seen")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(command(study, out, "--resume"), env=env, check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=20, help="fresh uninterrupted runs")
    parser.add_argument("--kills", type=int, default=2, help="kill -9 + --resume runs")
    parser.add_argument("--preset", help="run this preset instead of the script's study")
    args = parser.parse_args()
    seen: dict[tuple, list[str]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        study = ["--preset", args.preset] if args.preset else [str(Path(tmp) / "study.toml")]
        (Path(tmp) / "study.toml").write_text(STUDY)
        for i in range(args.processes + args.kills):
            name, setting = SETTINGS[i % len(SETTINGS)]
            out = Path(tmp) / f"out-{i}"
            if i < args.processes:
                subprocess.run(
                    command(study, out), env=environment(setting), check=True, capture_output=True
                )
            else:
                name = f"kill -9 + resume, {name}"
                killed_and_resumed(study, out, setting)
            result = stored_tables(out)
            seen[result].append(name)
            print(f"{i + 1:3d}: result {list(seen).index(result) + 1} ({name})")
    for number, names in enumerate(seen.values(), 1):
        settings = ", ".join(f"{n} ×{c}" for n, c in collections.Counter(names).items())
        print(f"result {number} in {len(names)} processes: {settings}")
    total = args.processes + args.kills
    print(f"{len(seen)} distinct result(s) from {total} processes")
    return 0 if len(seen) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
