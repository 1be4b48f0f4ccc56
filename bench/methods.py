"""What each training method costs: a pack's step time with the method against plain ce.

    python bench/methods.py [--dataset D] [--runs 12] [--steps 100] [--repeats 2] [--rounds 3]

Every pack trains the same thing: `--runs` runs (seeds 0, 1, ...) of the remedies preset's
model and recipe (MLP 784-128-10, Adam, batch 128) at 50 % symmetric label noise, all with one
method (co-teaching: runs/2 pairs, so the same number of networks). A step's time is the best
of `--repeats` in each of `--rounds` rounds through every method, every other round in reverse
order, so a drift in the machine's load favours no method (other processes only ever slow a
run down); the table gives each method's best wall time per step and the CPU time of the
busiest shard thread per step (less sensitive to the load), each relative to ce's. Forward
and backward correction are timed with T = "true": with T = "estimated" a step costs the same
once T is estimated (before, it is a ce step), plus one pass over the training set to
estimate it.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from noisebench.data import load_dataset  # noqa: E402
from noisebench.engine import time_pack  # noqa: E402
from noisebench.study import load_preset, method_label, parse_study, plan  # noqa: E402

METHODS = [
    "ce",
    "gce",
    "sce",
    "bootstrap",
    {"name": "bootstrap", "hard": True},
    "forward",
    "backward",
    "coteaching",
]


def runs_of(method, runs: int):
    preset = load_preset("remedies")
    pairs = isinstance(method, str) and method == "coteaching"
    study = parse_study(
        {
            "name": "bench-methods",
            "seeds": list(range(runs // 2 if pairs else runs)),
            "levels": [0.5],
            "methods": [method],
            "model": preset.model.model_dump(),
            "train": preset.train.model_dump(),
            "setups": [
                {"name": "sym", "noise": "labels.uniform", "params": {"exclude_true": True}}
            ],
        }
    )
    return plan(study)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist-sample")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    labels = [method_label(runs_of(m, 2)[0].method) for m in METHODS]
    wall = dict.fromkeys(labels, float("inf"))
    cpu = dict.fromkeys(labels, float("inf"))
    for round_ in range(args.rounds):
        # every other round backwards: a drift in the load favours no method
        for label, method in list(zip(labels, METHODS, strict=True))[:: 1 - 2 * (round_ % 2)]:
            timing = time_pack(runs_of(method, args.runs), data, args.steps, repeats=args.repeats)
            wall[label] = min(wall[label], timing.step_s)
            cpu[label] = min(cpu[label], timing.cpu_step_s)
    rows = [{"method": m, "step_s": wall[m], "cpu_step_s": cpu[m]} for m in labels]
    title = f"{args.runs} networks per pack on {args.dataset}: time per step (best of rounds)"
    table = Table(title=title)
    for col in ("method", "wall ms", "vs ce", "busiest thread CPU ms", "vs ce "):
        table.add_column(col, justify="left" if col == "method" else "right")
    for row in rows:
        row["vs_ce"] = row["step_s"] / wall["ce"]
        row["cpu_vs_ce"] = row["cpu_step_s"] / cpu["ce"]
        table.add_row(
            row["method"],
            f"{1000 * row['step_s']:.2f}",
            f"{row['vs_ce']:.2f}×",
            f"{1000 * row['cpu_step_s']:.2f}",
            f"{row['cpu_vs_ce']:.2f}×",
        )
    Console().print(table)
    Console().print(f"load average: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
