"""Cross-process determinism check: train one small pack in N fresh processes, count results.

    python bench/determinism.py [--processes 40]

Trains a 4-run pack (label and pixel noise, two seeds each; mnist-sample, batch 128, 2 epochs)
in each process and
prints how many distinct metric tuples came out; 1 means every process agreed to the bit.
"""

import argparse
import collections
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = {
    "name": "determinism",
    "seeds": [0, 1],
    "levels": [0.5],
    "train": {"epochs": 2, "batch_size": 128, "lr": 0.05},
    "setups": [
        {"name": "label noise", "noise": "labels.uniform"},
        {"name": "pixel noise", "noise": "pixels.replace"},
    ],
}


def child() -> None:
    sys.path.insert(0, str(ROOT))
    from noisebench.data import load_dataset
    from noisebench.engine import train_pack
    from noisebench.study import parse_study, plan

    runs = [r for r in plan(parse_study(STUDY)) if r.noise]
    results = train_pack(runs, load_dataset("mnist-sample"))
    keys = ("train_loss", "test_loss", "test_acc")
    print(json.dumps([[e[k] for e in r.epochs for k in keys] for r in results]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=40)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return 0
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(args.processes):
        out = subprocess.run(
            [sys.executable, __file__, "--child"], capture_output=True, text=True, check=True
        )
        seen[out.stdout.strip().splitlines()[-1]] += 1
    for result, count in seen.most_common():
        print(f"{count:4d} × {result}")
    print(f"{len(seen)} distinct result(s) from {args.processes} processes")
    return 0 if len(seen) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
