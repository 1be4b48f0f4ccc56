"""The pack engine: packing is invisible, runs are reproducible, and nothing leaks between runs."""

import ast
import math
from pathlib import Path

import pytest
import reference
import torch

from noisebench import engine
from noisebench.engine import train_pack
from noisebench.study import parse_study, plan

STUDY = {
    "name": "engine",
    "seeds": [0, 1],
    "levels": [0.0, 0.4],
    "train": {"epochs": 2, "batch_size": 32},
    "setups": [
        {"name": "labels", "noise": "labels.uniform"},
        {"name": "pixels", "noise": "pixels.replace"},
    ],
}


def runs_of(model: dict | None = None, **train):
    study = dict(STUDY, train={**STUDY["train"], **train}, model=model or {})
    return plan(parse_study(study))


def metrics(result):
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    return [e[k] for e in result.epochs for k in keys]


def test_a_run_trained_in_a_pack_matches_the_same_run_trained_alone(small_data):
    runs = runs_of()
    assert len(runs) == 6
    packed = {r.run_id: r for r in train_pack(runs, small_data)}
    for run in (runs[0], runs[3], runs[5]):
        alone = train_pack([run], small_data)[0]
        assert metrics(alone) == pytest.approx(metrics(packed[run.run_id]), rel=1e-5, abs=1e-6)


def test_with_a_validation_split_a_run_is_the_same_in_a_pack_as_alone_bit_for_bit(
    small_data, monkeypatch
):
    """640 examples less a 10% hold-out leave 577: every epoch ends on a batch of one, and
    the 63 validation and 300 test images are measured in odd chunks. A matmul's result over
    such a shape once depended on the run's place in the shard (the alignment of its slab of
    the output, one batched gemm against a run's own): the numbers differed from epoch 2."""
    study = dict(
        STUDY,
        validation=0.1,
        analysis={"fgsm_eps": [0.1], "robustness_examples": 37, "label_issues": False},
        setups=STUDY["setups"][:1],
    )
    runs = plan(parse_study(study))
    assert engine.trainset.train_set_size(runs[0], small_data) == 577  # 18 batches of 32, and 1
    monkeypatch.setenv("NOISEBENCH_SHARDS", "1")  # the four runs in one shard

    def numbers(result) -> list:
        return [{k: v for k, v in e.items() if not k.endswith("_s")} for e in result.epochs] + [
            result.final
        ]

    packed = {r.run_id: numbers(r) for r in train_pack(runs[::-1], small_data)}
    for run in runs:
        alone = numbers(train_pack([run], small_data)[0])
        assert "val_loss" in alone[-2] and "fgsm@0.1" in alone[-1]
        assert alone == packed[run.run_id], f"seed {run.seed}, level {run.level}"


@pytest.mark.parametrize("batch", [1, 3, 37, 64])
def test_a_stacked_models_outputs_are_each_runs_own_bit_for_bit(small_data, batch):
    """Logits of four stacked runs, for batches whose [R, B, 10] slabs are not 16-byte
    multiples: each run's are those of the run built alone, in every form the engine uses
    (bytes in either layout, [0, 1] pixels per run or shared, and through autograd)."""
    from noisebench.engine.model import StackedMLP
    from noisebench.study import ModelSpec

    spec, sizes = ModelSpec(hidden=[128, 128]), (784, 10)
    seeds = [3, 1, 4, 1]
    pack = StackedMLP(spec, seeds, sizes, "cpu")
    x = small_data.train_x[:batch]
    x01 = torch.rand(len(seeds), batch, 784, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs = [
            (pack.logits_of_bytes(x), lambda m, _: m.logits_of_bytes(x)),
            (pack.logits_of_bytes(x, True), lambda m, _: m.logits_of_bytes(x, True)),
            (pack(x01), lambda m, r: m(x01[r : r + 1])),
            (pack(x01[0]), lambda m, _: m(x01[0])),
        ]
    with torch.enable_grad():
        pack_grad = pack(x01.clone().requires_grad_())
    for r, seed in enumerate(seeds):
        alone = StackedMLP(spec, [seed], sizes, "cpu")
        with torch.no_grad():
            for packed, of_alone in outputs:
                assert torch.equal(packed[r : r + 1], of_alone(alone, r)), (r, batch)
        with torch.enable_grad():
            own = alone(x01[r : r + 1].clone().requires_grad_())
        assert torch.equal(pack_grad[r : r + 1].detach(), own.detach())


def test_order_inside_a_pack_does_not_matter(small_data):
    runs = runs_of()
    forward = {r.run_id: metrics(r) for r in train_pack(runs, small_data)}
    backward = {r.run_id: metrics(r) for r in train_pack(runs[::-1], small_data)}
    for run_id, values in forward.items():
        assert backward[run_id] == pytest.approx(values, rel=1e-5, abs=1e-6)


def test_same_runs_twice_give_identical_numbers(small_data):
    runs = runs_of(epochs=1)
    first = [metrics(r) for r in train_pack(runs, small_data)]
    second = [metrics(r) for r in train_pack(runs, small_data)]
    assert first == second


def test_seeds_and_noise_change_the_numbers(small_data):
    results = {r.run_id: metrics(r)[-4:] for r in train_pack(runs_of(epochs=1), small_data)}
    assert len({tuple(v) for v in results.values()}) == len(results)


def test_training_learns_and_records_every_epoch(small_data):
    clean = [r for r in runs_of(epochs=3, lr=0.05) if r.noise is None]
    result = train_pack(clean, small_data)[0]
    assert [e["epoch"] for e in result.epochs] == [1, 2, 3]
    assert result.status == "done"
    assert result.epochs[-1]["test_acc"] > 0.6  # chance is 0.1
    assert result.epochs[-1]["train_loss"] < result.epochs[0]["train_loss"]


def test_label_noise_trains_on_the_corrupted_labels(small_data):
    noisy = [r for r in runs_of(epochs=1) if r.noise == "labels.uniform"][0]
    result = train_pack([noisy], small_data)[0]
    picked, labels = result.label_noise.picked, result.label_noise.labels
    assert picked.numel() == round(0.4 * len(small_data.train_y))
    assert torch.equal(result.label_noise.original, small_data.train_y[picked])
    recorded = result.epochs[0]
    on_noisy = reference.train_run(noisy, small_data, labels)[0]
    on_clean = reference.train_run(noisy, small_data)[0]
    assert recorded["train_loss"] == pytest.approx(on_noisy["train_loss"], rel=1e-5)
    assert recorded["train_acc"] == on_noisy["train_acc"] != on_clean["train_acc"]


def test_training_never_modifies_the_data(small_data):
    before = small_data.fingerprint()
    train_pack(runs_of(epochs=1), small_data)
    assert small_data.fingerprint() == before


def test_a_diverging_run_is_marked_and_the_rest_of_its_pack_goes_on(small_data, monkeypatch):
    runs = runs_of(epochs=2)[:2]
    healthy = train_pack([runs[1]], small_data)[0]
    original_init = engine.StackedMLP.__init__

    def poisoned_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        with torch.no_grad():
            self.weights[0][0, 0, 0] = math.inf  # only run 0 of the pack

    monkeypatch.setattr(engine.StackedMLP, "__init__", poisoned_init)
    bad, good = train_pack(runs, small_data)
    assert bad.status == "diverged" and len(bad.epochs) == 1
    assert good.status == "done"
    assert metrics(good) == pytest.approx(metrics(healthy), rel=1e-5, abs=1e-6)


def test_adam_and_other_activations_train(small_data):
    runs = runs_of(epochs=1, optimizer="adam", lr=0.001)
    study = dict(STUDY, model={"hidden": [32], "activation": "tanh"})
    runs += plan(parse_study(study))[:1]
    for result in train_pack(runs[:1], small_data) + train_pack(runs[-1:], small_data):
        assert result.status == "done" and result.epochs[-1]["test_acc"] > 0.5


@pytest.mark.parametrize(
    "options",
    [{}, {"model": {"batchnorm": True, "dropout": 0.2}, "schedule": "onecycle"}],
    ids=["defaults", "batchnorm-dropout-onecycle"],
)
def test_resuming_from_a_checkpoint_continues_bit_for_bit(small_data, tmp_path, options):
    runs = runs_of(epochs=3, **options)
    reference = [metrics(r) for r in train_pack(runs, small_data)]
    checkpoint = tmp_path / "pack.pt"

    class Stop(Exception):
        pass

    def stop_in_third_epoch(step: int, total: int) -> None:
        if step >= 2 * total // 3 + 1:
            raise Stop

    with pytest.raises(Stop):
        train_pack(runs, small_data, checkpoint=checkpoint, progress=stop_in_third_epoch)
    assert checkpoint.exists()
    resumed = [metrics(r) for r in train_pack(runs, small_data, checkpoint=checkpoint)]
    assert resumed == reference


def test_a_run_records_what_plain_torch_computes_for_the_same_training(small_data):
    """The default model trained by the engine and by a plain torch loop (tests/reference.py)
    from the same seed: every recorded epoch metric agrees to float32 rounding."""
    (run,) = [r for r in runs_of(epochs=3, lr=0.05) if r.noise is None][:1]
    recorded = train_pack([run], small_data)[0].epochs
    expected = reference.train_run(run, small_data)
    assert len(recorded) == len(expected) == 3
    for mine, theirs in zip(recorded, expected, strict=True):
        for key in ("train_loss", "test_loss", "test_conf"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5), key
        for key in ("train_acc", "test_acc"):
            assert mine[key] == theirs[key], key


PACKAGE = Path(__file__).resolve().parents[1] / "noisebench"
LATER_IN_THE_FLOW = {"store", "summary", "results", "report", "runner", "backends", "cli"}


def module_imports() -> dict[str, set[str]]:
    """noisebench's modules and the package modules each imports when it is loaded (module
    level, TYPE_CHECKING included; imports inside functions are left out)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("noisebench", *path.relative_to(PACKAGE).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        nodes = list(ast.parse(path.read_text()).body)
        while nodes:
            node = nodes.pop()
            if isinstance(node, ast.If | ast.Try):
                nodes += node.body + node.orelse
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # from a package, a submodule name imports that module, any other the package
                found |= {
                    f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names
                }
        graph[name] = {m for m in found if m in names and m != name}
    return graph


def part_of(module: str) -> str:
    """noisebench.engine.pack -> "engine"; the package itself -> ""."""
    return module.split(".")[1] if "." in module else ""


def test_the_engine_imports_nothing_later_in_the_flow_and_no_import_circle_runs_through_it():
    graph = module_imports()
    engine_modules = {m for m in graph if m.startswith("noisebench.engine")}
    assert {"noisebench.engine.trainer", "noisebench.engine.metrics"} <= engine_modules
    for module in engine_modules:
        later = {m for m in graph[module] if part_of(m) in LATER_IN_THE_FLOW}
        assert not later, f"{module} imports {later}"

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    circles = [m for m in engine_modules if reaches(m, m)]
    assert not circles, f"import circles through {circles}"
