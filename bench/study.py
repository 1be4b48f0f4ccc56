"""Study benchmark: the default study end to end on full-size data, and how its cost scales.

    python bench/study.py [--json FILE] [--skip-full] [--skip-scaling] [--threads N]

- full: the default `seed000` study (39 runs × 10 epochs × 60,000 Fashion-MNIST images) through
  `noisebench.runner.run_study` into a temporary directory: wall time, peak RSS, the time spent
  training packs, and the clean runs' final test accuracy.
- scaling: short configurations of the same recipe, each doubled and quadrupled along one axis:
  runs (seeds 1, 2, 4 → 13, 26, 52 runs), epochs (1, 2, 4) and training samples (15,000,
  30,000, 60,000). Cost is linear when the training time grows by ×2 and ×4 ("÷ factor"
  near 1; below 1 where fixed costs such as the per-epoch evaluation are shared).

Every measurement runs in a fresh Python process (so its peak RSS is its own); `train_s` is the
time spent inside the engine's train_pack, `wall_s` everything from the study spec to the
stored results (loading data, noise examples, the SQLite store, ...).
"""

import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET = "fashion-mnist"
TARGET_WALL_S = 120.0
TARGET_RSS_MB = 2048.0
SCALING_BASE = {"seeds": 1, "epochs": 1, "samples": 15_000}


def write_idx(path: Path, array) -> None:
    import numpy as np

    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))


def child(config: dict) -> dict:
    """Run one study in this process and measure it (called in a subprocess)."""
    import resource

    sys.path.insert(0, str(ROOT))
    import torch

    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    from noisebench import engine
    from noisebench.backends import local
    from noisebench.data import load_dataset
    from noisebench.study import load_preset, parse_study

    began = time.perf_counter()
    train_s = 0.0
    original = local.train_pack

    def timed(*args, **kwargs):
        nonlocal train_s
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            train_s += time.perf_counter() - start

    local.train_pack = timed
    engine.train_pack = timed
    from noisebench.runner import run_study

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = None
        if config["name"] == "full":
            study = load_preset("seed000")
        else:
            preset = load_preset("seed000").model_dump()
            preset.update(name="scaling", seeds=list(range(config["seeds"])))
            preset["train"]["epochs"] = config["epochs"]
            study = parse_study(preset)
            if config["samples"] < 60_000:  # a training subset, written as IDX files
                data = load_dataset(DATASET)
                data_dir = Path(tmp) / "data"
                data_dir.mkdir()
                n = config["samples"]
                for name, array in (
                    ("train-images-idx3", data.train_x[:n].view(-1, 28, 28)),
                    ("train-labels-idx1", data.train_y[:n]),
                    ("t10k-images-idx3", data.test_x.view(-1, 28, 28)),
                    ("t10k-labels-idx1", data.test_y),
                ):
                    write_idx(data_dir / f"{name}-ubyte.gz", array.numpy())
        out = run_study(study, Path(tmp) / "out", dataset=DATASET, data_dir=data_dir)
        wall = time.perf_counter() - began
        accuracy = final_clean_accuracy(out / "results.csv", study.train.epochs)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from noisebench.study import plan

    runs = len(plan(study))
    return {
        **config,
        "runs": runs,
        "wall_s": wall,
        "train_s": train_s,
        "peak_rss_mb": rss_mb,
        "clean_test_acc": accuracy,
        "threads": torch.get_num_threads(),
    }


def final_clean_accuracy(csv_path: Path, epochs: int) -> float | None:
    import csv

    with csv_path.open() as fh:
        rows = [
            r for r in csv.DictReader(fh) if r["setup"] == "clean" and int(r["epoch"]) == epochs
        ]
    return sum(float(r["test_acc"]) for r in rows) / len(rows) if rows else None


def measure(config: dict) -> dict:
    """Run `config` in a fresh interpreter and return its measurements."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{config['name']} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scaling_configs() -> list[dict]:
    configs = [{"name": "base", "axis": "base", "factor": 1, **SCALING_BASE}]
    for axis in ("seeds", "epochs", "samples"):
        for factor in (2, 4):
            config = {**SCALING_BASE, axis: SCALING_BASE[axis] * factor}
            configs.append({"name": f"{axis}×{factor}", "axis": axis, "factor": factor, **config})
    return configs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--skip-full", action="store_true", help="skip the full default study")
    parser.add_argument("--skip-scaling", action="store_true", help="skip the scaling table")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per scaling configuration (fastest kept)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    from rich.console import Console
    from rich.table import Table

    console = Console()
    results: dict = {"dataset": DATASET, "load_average_before": os.getloadavg()}
    if results["load_average_before"][0] > 0.5:
        console.print(
            f"[yellow]note: load average {results['load_average_before'][0]:.2f}: other "
            "processes will slow the measurements down[/yellow]"
        )
    if not args.skip_full:
        console.print("full default study (seed000, 39 runs × 10 epochs × 60,000)…")
        full = measure({"name": "full", "threads": args.threads})
        results["full"] = full
        results["targets"] = {
            "wall_s": {"goal": TARGET_WALL_S, "value": full["wall_s"]},
            "peak_rss_mb": {"goal": TARGET_RSS_MB, "value": full["peak_rss_mb"]},
        }
        for target in results["targets"].values():
            target["met"] = target["value"] <= target["goal"]
        table = Table(title="Default study (seed000) on full-size Fashion-MNIST")
        for column in ("runs", "wall s", "training s", "peak RSS", "clean test acc", "targets"):
            table.add_column(column, justify="right")
        met = all(t["met"] for t in results["targets"].values())
        table.add_row(
            str(full["runs"]),
            f"{full['wall_s']:.1f}",
            f"{full['train_s']:.1f}",
            f"{full['peak_rss_mb']:.0f} MB",
            f"{full['clean_test_acc']:.4f}",
            ("met" if met else "[red]missed[/red]")
            + f" (≤ {TARGET_WALL_S:.0f} s, ≤ {TARGET_RSS_MB / 1024:.0f} GB)",
        )
        console.print(table)
    if not args.skip_scaling:
        rows = []
        for config in scaling_configs():
            console.print(f"scaling: {config['name']}…")
            tries = [measure({**config, "threads": args.threads}) for _ in range(args.repeats)]
            best = min(tries, key=lambda r: r["train_s"])
            best["train_s_all"] = [r["train_s"] for r in tries]
            rows.append(best)
        base = rows[0]
        table = Table(title="Scaling (short configurations; linear: train time ×2 and ×4)")
        columns = ("config", "runs", "epochs", "samples", "wall s", "train s", "× base", "÷ factor")
        for column in columns:
            table.add_column(column, justify="right")
        for row in rows:
            row["train_ratio"] = row["train_s"] / base["train_s"]
            row["per_unit"] = row["train_ratio"] / row["factor"]
            table.add_row(
                row["name"],
                str(row["runs"]),
                str(row["epochs"]),
                f"{row['samples']:,}",
                f"{row['wall_s']:.1f}",
                f"{row['train_s']:.2f}",
                f"{row['train_ratio']:.2f}",
                f"{row['per_unit']:.2f}",
            )
        console.print(table)
        results["scaling"] = rows
    results["load_average_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
