"""Throughput benchmark: the pack engine against the pipelines it replaces, and the hardware.

    python bench/throughput.py [--json FILE] [--steps N] [--repeats N] [--threads N]

All four measurements train the same thing on the same data: full-size Fashion-MNIST, MLP
784-128-128-10 (ReLU), batch 64, SGD lr 0.01 momentum 0.9, 30 % pixel noise (pixels.replace,
values from the training set's pixel distribution), in fp32 on the CPU.

- engine: run-samples per second of noisebench's engine training a pack of 39 such runs
  (seeds 0-38), over a bounded number of steps after a warm-up. Also reported, not used in the
  ratios: the default study's own pack (seed000: 18 pixel-noise, 18 label-noise, 3 clean runs).
- idiomatic: one nn.Sequential at a time, the training set as a float tensor in memory,
  random mini-batches, the same noise drawn with torch.rand, torch.optim.SGD.
- seed_pipeline: the source study's pipeline: a torch Dataset whose __getitem__ applies the
  noise transform to one image, a DataLoader (batch 64, shuffle, num_workers=0).
- roofline: the measured fp32 throughput of the engine's own batched matmuls (the same
  shapes and calls, FLOP-weighted), divided by the FLOPs of one training sample, 6·params
  (forward 2·params, backward 4·params), gives the most samples/s the matmuls allow.

Every timing is the best of --repeats repetitions (other processes only ever slow a run down).
Results depend on what else the machine is doing: the load average is recorded with them.
"""

import argparse
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from noisebench import engine  # noqa: E402
from noisebench.data import load_dataset  # noqa: E402
from noisebench.study import load_preset, parse_study, plan  # noqa: E402

DATASET = "fashion-mnist"
LEVEL = 0.3
BATCH = 64
HIDDEN = (128, 128)
LR, MOMENTUM = 0.01, 0.9
PACK = 39

TARGETS = {  # name: (goal, description)
    "engine_vs_seed": (35.0, "engine ≥ 35× seed pipeline"),
    "engine_vs_idiomatic": (5.0, "engine ≥ 5× idiomatic"),
    "roofline_fraction": (0.60, "engine ≥ 60 % of roofline"),
}


def params_count(features: int, classes: int) -> int:
    sizes = [features, *HIDDEN, classes]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def empirical_cdf(train_x: torch.Tensor) -> torch.Tensor:
    counts = torch.bincount(train_x.reshape(-1).long(), minlength=256).double()
    cdf = (counts.cumsum(0) / counts.sum()).float()
    cdf[-1] = 1.0 + 1e-6  # every u in [0, 1) maps to a byte
    return cdf


def mlp(features: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(features, HIDDEN[0]),
        nn.ReLU(),
        nn.Linear(HIDDEN[0], HIDDEN[1]),
        nn.ReLU(),
        nn.Linear(HIDDEN[1], classes),
    )


def best_rate(step, samples_per_call: int, calls: int, warmup: int, repeats: int) -> dict:
    """Samples per second of `step()` (best of `repeats` runs of `calls` calls)."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(calls):
            step()
        rates.append(samples_per_call * calls / (time.perf_counter() - began))
    return {"samples_per_s": max(rates), "repeats": rates, "calls": calls}


# --- engine -----------------------------------------------------------------------------


def engine_runs(pack: int = PACK):
    study = parse_study(
        {
            "name": "bench",
            "seeds": list(range(pack)),
            "levels": [LEVEL],
            "setups": [{"name": "pixels", "noise": "pixels.replace", "params": {"values": "data"}}],
        }
    )
    return plan(study)


def bench_engine(data, runs, steps: int, repeats: int) -> dict:
    timing = engine.time_pack(runs, data, steps=steps, warmup=20, repeats=repeats)
    epoch_train = timing.steps_per_epoch * timing.step_s
    return {
        "samples_per_s": timing.samples_per_s,
        "runs": timing.runs,
        "shards": timing.shards,
        "steps": steps,
        "step_ms": timing.step_s * 1e3,
        "busiest_thread_cpu_ms": timing.cpu_step_s * 1e3,
        "noise_ms": timing.noise_s * 1e3,
        "noise_share": timing.noise_s / timing.step_s,
        "eval_s": timing.eval_s,
        "eval_share": timing.eval_s / (epoch_train + timing.eval_s),
    }


# --- idiomatic --------------------------------------------------------------------------


def bench_idiomatic(data, steps: int, repeats: int) -> dict:
    torch.manual_seed(0)
    x_all = data.train_x.float().div_(255)  # the whole training set in memory
    y_all = data.train_y
    cdf = empirical_cdf(data.train_x)
    model = mlp(x_all.shape[1], data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    n = len(y_all)
    order = torch.randperm(n)
    position = 0

    def step() -> None:
        nonlocal position, order
        if position + BATCH > n:
            order, position = torch.randperm(n), 0
        idx = order[position : position + BATCH]
        position += BATCH
        x = x_all[idx]
        u = torch.rand_like(x)
        values = torch.searchsorted(cdf, torch.rand_like(x), right=True).float().div_(255)
        x = torch.where(u < LEVEL, values, x)
        loss = F.cross_entropy(model(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return best_rate(step, BATCH, steps, warmup=50, repeats=repeats)


# --- seed pipeline ----------------------------------------------------------------------


class AddPixelNoise:
    """The source study's transform: replace each pixel with probability `level` by a value
    drawn from the training set's pixel distribution."""

    def __init__(self, level: float, cdf: torch.Tensor):
        self.level, self.cdf = level, cdf

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        mask = torch.rand(image.shape) < self.level
        values = torch.searchsorted(self.cdf, torch.rand(image.shape), right=True).float() / 255
        return torch.where(mask, values, image)


class NoisyImages(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i].float() / 255  # what ToTensor does to a uint8 image
        return self.transform(image), int(self.labels[i])


def bench_seed(data, batches: int, repeats: int) -> dict:
    torch.manual_seed(0)
    noise = AddPixelNoise(LEVEL, empirical_cdf(data.train_x))
    dataset = NoisyImages(data.train_x, data.train_y, noise)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=0)
    model = mlp(data.num_features, data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    batches_iter = iter(loader)

    def step() -> None:
        nonlocal batches_iter
        try:
            x, y = next(batches_iter)
        except StopIteration:
            batches_iter = iter(loader)
            x, y = next(batches_iter)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return best_rate(step, BATCH, batches, warmup=10, repeats=repeats)


# --- roofline ---------------------------------------------------------------------------


def matmul_calls(features: int, classes: int, runs: int) -> list[tuple[int, object]]:
    """(FLOPs, call) for every batched matmul of one engine step on `runs` runs."""
    sizes = [features, *HIDDEN, classes]
    calls = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        a = torch.rand(runs, BATCH, fan_in)
        w = torch.rand(runs, fan_in, fan_out) * 0.01
        b = torch.rand(runs, 1, fan_out)
        g = torch.rand(runs, BATCH, fan_out)
        buf = torch.zeros(runs, fan_in, fan_out)
        flops = 2 * runs * BATCH * fan_in * fan_out
        calls.append((flops, lambda a=a, w=w, b=b: torch.baddbmm(b, a, w)))  # forward
        calls.append((flops, lambda a=a, g=g, buf=buf: buf.baddbmm_(a.mT, g, beta=0.9)))
        if i > 0:  # gradient of the layer's input
            calls.append((flops, lambda g=g, w=w: torch.bmm(g, w.mT)))
    return calls


def matmul_seconds(calls, rounds: int = 20) -> float:
    began = time.perf_counter()
    for _ in range(rounds):
        for _, fn in calls:
            fn()
    return (time.perf_counter() - began) / rounds


def bench_roofline(features: int, classes: int, runs: int, repeats: int) -> dict:
    """FLOP-weighted fp32 throughput of the engine's batched matmuls at their shapes, measured
    both ways the machine can run them: one pack with torch's threads, and the engine's own
    layout (one thread per shard, shards in parallel). The faster one is the roofline."""
    threads = torch.get_num_threads()
    calls = matmul_calls(features, classes, runs)
    total_flops = sum(f for f, _ in calls)
    pooled = min(matmul_seconds(calls) for _ in range(repeats + 1))  # first round warms up

    shards = max(1, min(runs, threads))
    bounds = [round(k * runs / shards) for k in range(shards + 1)]
    sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    parts = [matmul_calls(features, classes, size) for size in sizes]
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(shards) as pool:
            sharded = math.inf
            for _ in range(repeats + 1):
                began = time.perf_counter()
                list(pool.map(matmul_seconds, parts))
                sharded = min(sharded, time.perf_counter() - began)
            sharded /= 20
    finally:
        torch.set_num_threads(threads)

    big = torch.rand(4096, features), torch.rand(features, 4096)
    began = time.perf_counter()
    for _ in range(5):
        torch.mm(*big)
    big_gflops = 5 * 2 * 4096 * features * 4096 / (time.perf_counter() - began) / 1e9
    gflops = total_flops / min(pooled, sharded) / 1e9
    params = params_count(features, classes)
    needed = total_flops / (runs * BATCH)  # what the engine really computes per sample
    return {
        "matmul_gflops": gflops,
        "matmul_gflops_torch_threads": total_flops / pooled / 1e9,
        "matmul_gflops_sharded": total_flops / sharded / 1e9,
        "big_sgemm_gflops": big_gflops,
        "params": params,
        "flops_per_sample": 6 * params,
        "samples_per_s": gflops * 1e9 / (6 * params),
        "engine_flops_per_sample": needed,
        "engine_matmul_samples_per_s": gflops * 1e9 / needed,
    }


# --- report -----------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--steps", type=int, default=200, help="engine steps per repetition")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (best is kept)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        console.print(
            f"[yellow]note: load average {load_before[0]:.2f} before the benchmark; other "
            "processes will slow it down[/yellow]"
        )
    data = load_dataset(DATASET)
    began = time.perf_counter()
    console.print(f"{DATASET}: {len(data.train_y):,} train / {len(data.test_y):,} test images")

    console.print("engine (39 runs, 30 % pixel noise)…")
    eng = bench_engine(data, engine_runs(), args.steps, args.repeats)
    console.print("engine (the seed000 study's pack)…")
    eng_study = bench_engine(data, plan(load_preset("seed000")), args.steps, args.repeats)
    console.print("idiomatic…")
    idiom = bench_idiomatic(data, 400, args.repeats)
    console.print("seed pipeline…")
    seed = bench_seed(data, 100, args.repeats)
    console.print("roofline…")
    roof = bench_roofline(data.num_features, data.num_classes, PACK, args.repeats)
    load_after = os.getloadavg()

    results = {
        "dataset": DATASET,
        "config": {
            "model": [data.num_features, *HIDDEN, data.num_classes],
            "batch": BATCH,
            "optimizer": f"SGD lr {LR} momentum {MOMENTUM}",
            "noise": f"pixels.replace values=data level {LEVEL}",
            "precision": "fp32",
        },
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "seconds": time.perf_counter() - began,
        "engine": eng,
        "engine_seed000_pack": eng_study,
        "idiomatic": idiom,
        "seed_pipeline": seed,
        "roofline": roof,
        "engine_vs_seed": eng["samples_per_s"] / seed["samples_per_s"],
        "engine_vs_idiomatic": eng["samples_per_s"] / idiom["samples_per_s"],
        "roofline_fraction": eng["samples_per_s"] / roof["samples_per_s"],
        "roofline_fraction_engine_flops": eng["samples_per_s"]
        / roof["engine_matmul_samples_per_s"],
        "noise_share": eng["noise_share"],
        "eval_share": eng["eval_share"],
    }
    results["targets"] = {
        name: {"goal": goal, "value": results[name], "met": results[name] >= goal}
        for name, (goal, _) in TARGETS.items()
    }

    table = Table(title=f"Training throughput, {DATASET}, {machine()['threads']} threads")
    table.add_column("pipeline")
    table.add_column("run-samples/s", justify="right")
    table.add_column("× seed", justify="right")
    table.add_column("what")
    rows = [
        ("seed_pipeline", seed["samples_per_s"], "Dataset + per-sample transform + DataLoader"),
        ("idiomatic", idiom["samples_per_s"], "one nn.Sequential, batches from memory"),
        (
            "engine",
            eng["samples_per_s"],
            f"pack of {eng['runs']} in {eng['shards']} shards, {eng['step_ms']:.2f} ms/step",
        ),
        (
            "engine (seed000 pack)",
            eng_study["samples_per_s"],
            f"pack of {eng_study['runs']} in {eng_study['shards']} shards, "
            f"{eng_study['step_ms']:.2f} ms/step",
        ),
        (
            "roofline",
            roof["samples_per_s"],
            f"{roof['matmul_gflops']:.0f} GFLOP/s ÷ 6·{roof['params']:,} FLOP/sample",
        ),
    ]
    for name, rate, what in rows:
        table.add_row(name, f"{rate:,.0f}", f"{rate / seed['samples_per_s']:.1f}", what)
    console.print(table)

    checks = Table(title="Targets")
    for column in ("target", "measured", "goal", "met"):
        checks.add_column(column)
    for name, (goal, text) in TARGETS.items():
        value = results[name]
        shown = f"{value:.0%}" if name == "roofline_fraction" else f"{value:.1f}×"
        wanted = f"{goal:.0%}" if name == "roofline_fraction" else f"{goal:.0f}×"
        checks.add_row(text, shown, wanted, "yes" if value >= goal else "[red]no[/red]")
    console.print(checks)
    console.print(
        f"step: {eng['step_ms']:.2f} ms, of which pixel noise {eng['noise_ms']:.2f} ms "
        f"({eng['noise_share']:.0%}); evaluation {eng['eval_s']:.2f} s per epoch "
        f"({eng['eval_share']:.1%} of an epoch). Matmuls need "
        f"{roof['engine_flops_per_sample']:,.0f} FLOP/sample (no input gradient in layer 1): "
        f"against that the engine reaches {results['roofline_fraction_engine_flops']:.0%}. "
        f"Load average {load_before[0]:.2f} → {load_after[0]:.2f}."
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
