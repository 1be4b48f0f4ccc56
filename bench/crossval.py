"""K-fold cross-validation of noisy runs: the K fold models trained as one pack against the same
K models trained one after another the idiomatic way.

    python bench/crossval.py [--dataset mnist-sample] [--folds 5] [--seeds 1] [--epochs 3]
                             [--json FILE]

Both train the same thing: for each seed, the K fold models of a run with 50 % uniform label
noise (analysis.label_issues = "cv"): MLP 784-128-128-10 (ReLU), batch 64, SGD lr 0.01
momentum 0.9, each on the run's noisy training set less its own fold (the same folds, from
noisebench's split), for the same epochs; then each predicts class probabilities for its
held-out fold, and cleanlab runs on the joined out-of-sample probabilities (timed apart).

- pack: noisebench's engine, `train_pack` on the K x seeds fold models (end to end: building
  the pack, every epoch with its test evaluation, the held-out probabilities).
- idiomatic: one nn.Sequential at a time with torch.optim.SGD, the fold's images as a float
  tensor in memory, a fresh random permutation per epoch, evaluated on the test set after
  every epoch like the engine, then softmax on the held-out fold; with torch's default
  threads, and again with one thread (on a loaded machine OpenMP's threads wait at barriers
  for cores other processes hold, so one thread can be the faster baseline).

Wall-clock seconds, best of --repeats; the machine's load average is recorded with them (other
processes only slow a run down, so on a shared machine both numbers are upper bounds).
"""

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from noisebench.data import load_dataset  # noqa: E402
from noisebench.engine import label_issues, train_pack  # noqa: E402
from noisebench.engine.trainset import (  # noqa: E402
    fold_rows,
    fold_split,
    run_train_set,
)
from noisebench.study import fold_runs, parse_study, plan  # noqa: E402

LEVEL = 0.5


def study(folds: int, seeds: int, epochs: int):
    return parse_study(
        {
            "name": "crossval-bench",
            "seeds": list(range(seeds)),
            "levels": [LEVEL],
            "train": {"epochs": epochs},
            "analysis": {"label_issues": "cv", "folds": folds, "fgsm_eps": [], "train_eval": 0},
            "setups": [{"name": "uniform", "noise": "labels.uniform"}],
        }
    )


def time_pack(spec, data) -> tuple[float, list]:
    folds = fold_runs(spec, plan(spec))
    began = time.perf_counter()
    results = train_pack(folds, data, analysis=spec.analysis)
    return time.perf_counter() - began, results


def mlp(features: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(features, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, classes)
    )


def train_one(x, y, test_x, test_y, held_x, epochs: int, seed: int) -> torch.Tensor:
    """One fold model, the usual way; its softmax on the held-out images."""
    torch.manual_seed(seed)
    model = mlp(x.shape[1], int(test_y.max()) + 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():  # the engine evaluates every run on the test set every epoch
            (model(test_x).argmax(1) == test_y).float().mean()
    with torch.no_grad():
        return torch.softmax(model(held_x), 1)


def time_idiomatic(spec, data, threads: int) -> float:
    folds = spec.analysis.folds
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    test_x, test_y = data.test_x.float() / 255, data.test_y
    began = time.perf_counter()
    for run in plan(spec):
        train = run_train_set(run, data, None)
        x = data.train_x.float() / 255
        split = fold_split(train.labels, folds, data.num_classes, run.seed)
        for k in range(folds):
            trained, held = fold_rows(split, k, folds, run.seed)
            train_one(
                x[trained], train.labels[trained], test_x, test_y, x[held], spec.train.epochs, k
            )
    elapsed = time.perf_counter() - began
    torch.set_num_threads(default)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist-sample")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pack-only", action="store_true", help="time the pack alone")
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    spec = study(args.folds, args.seeds, args.epochs)
    timed = [time_pack(spec, data) for _ in range(args.repeats)]
    pack_s, results = min(timed, key=lambda t: t[0])[0], timed[-1][1]
    threads = torch.get_num_threads()
    idiomatic_s = one_thread_s = math.nan
    if not args.pack_only:
        idiomatic_s = min(time_idiomatic(spec, data, threads) for _ in range(args.repeats))
        one_thread_s = min(time_idiomatic(spec, data, 1) for _ in range(args.repeats))
    # cleanlab on one run's joined out-of-sample probabilities
    parts = [r.arrays for r in results[: args.folds]]
    n = sum(len(p["fold/positions"]) for p in parts)
    probs, given, true = (
        np.zeros((n, data.num_classes), np.float32),
        np.zeros(n, int),
        np.zeros(n, int),
    )
    for p in parts:
        at = p["fold/positions"]
        probs[at], given[at], true[at] = p["fold/probs"], p["fold/given"], p["fold/true"]
    began = time.perf_counter()
    found, _ = label_issues.find_issues(probs, given, true, data.num_classes)
    cleanlab_s = time.perf_counter() - began
    out = {
        "dataset": data.name,
        "train_examples": len(data.train_y),
        "folds": args.folds,
        "seeds": args.seeds,
        "models": args.folds * args.seeds,
        "epochs": args.epochs,
        "pack_s": round(pack_s, 2),
        "idiomatic_s": round(idiomatic_s, 2),
        "ratio": round(idiomatic_s / pack_s, 2),
        "idiomatic_threads": threads,
        "idiomatic_1_thread_s": round(one_thread_s, 2),  # no OpenMP barriers to wait at
        "ratio_1_thread": round(one_thread_s / pack_s, 2),
        "goal": f"pack >= {args.folds}x idiomatic",
        "cleanlab_s_per_run": round(cleanlab_s, 2),
        "cv_precision": round(found["precision"], 3),
        "base_rate": round(found["base_rate"], 3),
        "cpus": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    out = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
