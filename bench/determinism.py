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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the study, settings and reader the test suite pins
from helpers import stored_tables  # noqa: E402
from test_determinism import SETTINGS, STUDY  # noqa: E402


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
            name, setting = list(SETTINGS.items())[i % len(SETTINGS)]
            out = Path(tmp) / f"out-{i}"
            if i < args.processes:
                subprocess.run(
                    command(study, out), env=environment(setting), check=True, capture_output=True
                )
            else:
                name = f"kill -9 + resume, {name}"
                killed_and_resumed(study, out, setting)
            result = tuple(map(tuple, stored_tables(out)))  # hashable, to count distinct ones
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
