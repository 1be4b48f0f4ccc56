"""The hand-written training step and its options (batchnorm, dropout, MSE loss, Adam, weight
decay, learning-rate schedules): gradients equal torch autograd's and updates torch.optim's (in
float64), a run's numbers do not depend on its pack, and options change nothing when off."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noisebench import seeding
from noisebench.engine import StackedMLP, evaluate, parameter_count, train_pack
from noisebench.engine.backward import LOSSES
from noisebench.engine.optimizer import Optimizer, Slots
from noisebench.engine.trainer import Trainer
from noisebench.study import ModelSpec, TrainSpec, parse_study, plan

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
EVERY_OPTION = {"batchnorm": True, "dropout": 0.2, "loss": "mse"}


class Mask(nn.Module):
    """Dropout with a given mask (the engine's, drawn again from the run's generator)."""

    def __init__(self):
        super().__init__()
        self.mask: torch.Tensor | None = None

    def forward(self, x):
        return x if self.mask is None else x * self.mask


def torch_net(spec: ModelSpec, features: int, classes: int) -> nn.Sequential:
    """The equivalent torch.nn model of one run: Linear, [BatchNorm1d], activation, [Mask]."""
    sizes = [features, *spec.hidden, classes]
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(spec.hidden):
            if spec.batchnorm:
                layers.append(nn.BatchNorm1d(fan_out))
            layers.append(ACTIVATIONS[spec.activation]())
            if spec.dropout:
                layers.append(Mask())
    return nn.Sequential(*layers)


def of_type(net: nn.Sequential, kind: type) -> list:
    return [m for m in net if isinstance(m, kind)]


@torch.no_grad()
def run_as_torch_net(model: StackedMLP, r: int, spec: ModelSpec, sizes) -> nn.Sequential:
    """Run r of `model` as its torch.nn model, with the same parameters and statistics."""
    net = torch_net(spec, *sizes).to(model.weights[0].dtype)
    for lin, w, b in zip(of_type(net, nn.Linear), model.weights, model.biases, strict=True):
        lin.weight.copy_(w[r].T)
        lin.bias.copy_(b[r, 0])
    for i, bn in enumerate(of_type(net, nn.BatchNorm1d)):
        bn.weight.copy_(model.scales[i][r, 0])
        bn.bias.copy_(model.shifts[i][r, 0])
        bn.running_mean.copy_(model.running_means[i][r, 0])
        bn.running_var.copy_(model.running_vars[i][r, 0])
    return net


def grads_by_slot(net: nn.Sequential, slots: Slots) -> dict[int, torch.Tensor]:
    """The net's gradients at the optimizer's slot of each parameter, in the engine's shapes."""
    lins, bns = of_type(net, nn.Linear), of_type(net, nn.BatchNorm1d)
    return {
        **{slots.weights[i]: lin.weight.grad.T for i, lin in enumerate(lins)},
        **{slots.biases[i]: lin.bias.grad[None] for i, lin in enumerate(lins)},
        **{slots.scales[i]: bn.weight.grad[None] for i, bn in enumerate(bns)},
        **{slots.shifts[i]: bn.bias.grad[None] for i, bn in enumerate(bns)},
    }


class ReferenceMasks:
    """Run `seed`'s dropout masks as the engine draws them: per step one uniform draw of
    b·ΣH numbers from its own generator, layer by layer [b, H], dropped below p."""

    def __init__(self, seed: int, spec: ModelSpec):
        self.gen = seeding.generator(seed, "dropout")
        self.spec = spec

    def set_next(self, net: nn.Sequential, b: int) -> None:
        p, widths = self.spec.dropout, self.spec.hidden
        if not p:
            return
        u = torch.rand(b * sum(widths), generator=self.gen)
        start = 0
        for mask, width in zip(of_type(net, Mask), widths, strict=True):
            mask.mask = (u[start : start + b * width].view(b, width) >= p).double() / (1 - p)
            start += b * width


# Each loss of the engine (backward.LOSSES) as torch computes it: its mean over a batch of
# logits [b, C] with labels [b]. A loss added to the engine needs its line here.
OBJECTIVES = {
    "cross-entropy": F.cross_entropy,
    "mse": lambda z, y: F.mse_loss(torch.sigmoid(z), F.one_hot(y, z.shape[1]).to(z.dtype)),
}


def objective(spec: ModelSpec, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return OBJECTIVES[spec.loss](out, y)


def in_float64(model: StackedMLP) -> StackedMLP:
    """The model with every tensor in float64 (the trainer computes in its weights' dtype)."""
    for name, value in vars(model).items():
        if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            setattr(model, name, [t.detach().double() for t in value])
    return model


def engine(data, model_spec, train_spec, seeds, total_steps=None, dtype=torch.float32):
    """A stacked model of `seeds`, its optimizer and its trainer on data's training set."""
    model = StackedMLP(model_spec, seeds, (data.num_features, data.num_classes), "cpu")
    if dtype == torch.float64:
        model = in_float64(model)
    opt = Optimizer(model, train_spec, total_steps=total_steps)
    labels = data.train_y.expand(len(seeds), -1)
    trainer = Trainer(model, opt, LOSSES[model_spec.loss], data.train_x, labels, [], seeds)
    return model, opt, trainer


@torch.no_grad()
def train(trainer: Trainer, steps: list[torch.Tensor]) -> torch.Tensor:
    """Train on each batch of `steps` ([R, b] indices); the summed loss of each run."""
    sums = torch.zeros(len(steps[0]), dtype=torch.float64)
    for idx in steps:
        trainer.step(idx, sums, torch.zeros_like(sums))
    return sums


def batches(data, runs: int, b: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    n = len(data.train_y)
    return [
        torch.stack([torch.randperm(n, generator=gen)[:b] for _ in range(runs)])
        for _ in range(steps)
    ]


SMALL = {"hidden": [32, 16]}
EXACT = {"rtol": 1e-9, "atol": 1e-12}  # float64 rounding, far below any error in a formula


@pytest.mark.parametrize(
    "options",
    [
        {},
        {**SMALL, "activation": "sigmoid"},
        {**SMALL, "batchnorm": True},
        {**SMALL, "dropout": 0.3, "activation": "tanh"},
        {**SMALL, "loss": "mse", "activation": "sigmoid"},
        {**SMALL, **EVERY_OPTION},
        {**SMALL, **EVERY_OPTION, "activation": "tanh"},
    ],
    ids=["default-model", "sigmoid", "batchnorm", "dropout", "mse", "all", "all-tanh"],
)
def test_one_step_gradients_equal_torch_autograd_in_float64(small_data, options):
    model_spec = ModelSpec(**options)
    train_spec = TrainSpec(momentum=0.5)  # after one step, the momentum buffer is the gradient
    seeds, b = [3, 7], 50
    model, opt, trainer = engine(small_data, model_spec, train_spec, seeds, dtype=torch.float64)
    sizes = (small_data.num_features, small_data.num_classes)
    nets = [run_as_torch_net(model, r, model_spec, sizes) for r in range(len(seeds))]
    (idx,) = batches(small_data, len(seeds), b, 1)
    loss_sum = torch.zeros(len(seeds), dtype=torch.float64)
    correct = torch.zeros_like(loss_sum)
    with torch.no_grad():
        trainer.step(idx, loss_sum, correct)

    for r, (net, seed) in enumerate(zip(nets, seeds, strict=True)):
        ReferenceMasks(seed, model_spec).set_next(net, b)
        x = small_data.train_x[idx[r]].double() / 255
        y = small_data.train_y[idx[r]]
        out = net(x)
        loss = objective(model_spec, out, y)
        loss.backward()
        assert loss_sum[r].item() == pytest.approx(loss.item() * b, rel=1e-12)
        assert correct[r].item() == (out.argmax(1) == y).sum().item()
        expected = grads_by_slot(net, opt.slots)
        assert sorted(expected) == list(range(len(model.parameters())))
        for slot, theirs in expected.items():
            torch.testing.assert_close(opt.state["momentum"][slot][r], theirs, **EXACT)
        for i, bn in enumerate(of_type(net, nn.BatchNorm1d)):  # running statistics moved
            torch.testing.assert_close(model.running_means[i][r, 0], bn.running_mean, **EXACT)
            torch.testing.assert_close(model.running_vars[i][r, 0], bn.running_var, **EXACT)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_each_loss_and_its_gradient_equal_torch_on_every_run(loss):
    """A loss of the engine against its torch objective (`objective`) and autograd: the
    summed loss of each run, and d(mean loss)/d(logits), on logits [R, C, b] in float64."""
    runs, classes, b = 3, 10, 17
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(runs, classes, b, generator=gen, dtype=torch.float64) * 3
    labels = torch.randint(0, classes, (runs, 1, b), generator=gen)
    loss_sum = torch.full((runs,), 0.5, dtype=torch.float64)  # sums are added to it
    grad = LOSSES[loss](logits.clone(), labels, loss_sum)
    spec = ModelSpec(loss=loss)
    for r in range(runs):
        z = logits[r].T.clone().requires_grad_()  # [b, C], as torch takes it
        mean = objective(spec, z, labels[r, 0])
        mean.backward()
        assert loss_sum[r].item() == pytest.approx(0.5 + mean.item() * b, rel=1e-12)
        torch.testing.assert_close(grad[r], z.grad.T, **EXACT)


def test_the_optimizer_slots_name_every_parameter_once(small_data):
    """Slots say where each weight, bias, scale and shift sits in the optimizer's lists."""
    for spec in (ModelSpec(hidden=[32, 16]), ModelSpec(hidden=[32, 16, 8], batchnorm=True)):
        model, opt, _ = engine(small_data, spec, TrainSpec(), [0, 1])
        slots = opt.slots
        for kind in ("weights", "biases", "scales", "shifts"):
            named = [opt.params[slot] for slot in getattr(slots, kind)]
            assert len(named) == len(getattr(model, kind))
            assert all(a is b for a, b in zip(named, getattr(model, kind), strict=True))
        every = [*slots.weights, *slots.biases, *slots.scales, *slots.shifts]
        assert sorted(every) == list(range(len(opt.params)))
        assert len(slots.scales) == (len(spec.hidden) if spec.batchnorm else 0)


@pytest.mark.parametrize(
    "options, recipe",
    [
        ({}, {"optimizer": "adam", "lr": 0.01, "weight_decay": 1e-3}),
        ({}, {"lr": 0.05, "weight_decay": 1e-3}),
        ({**SMALL, **EVERY_OPTION}, {"schedule": "onecycle", "lr": 0.1, "weight_decay": 1e-3}),
        ({**SMALL, **EVERY_OPTION}, {"schedule": "cosine", "lr": 0.1, "momentum": 0.0}),
        (
            {**SMALL, "dropout": 0.3},
            {"schedule": "step", "optimizer": "adam", "lr": 0.01, "gamma": 0.3},
        ),
        ({**SMALL, "loss": "mse"}, {"schedule": "onecycle", "optimizer": "adam", "lr": 0.01}),
    ],
    ids=[
        "adam-weight-decay",
        "sgd-weight-decay",
        "sgd-onecycle",
        "sgd-cosine",
        "adam-step",
        "adam-onecycle",
    ],
)
def test_training_equals_torch_modules_optimizers_and_schedulers_in_float64(
    small_data, options, recipe
):
    """Several steps of one run against torch.nn + torch.optim + torch.optim.lr_scheduler.
    (Adam is compared without batchnorm: the Linear bias before it has a zero gradient up to
    rounding, which Adam's normalisation would blow up into different noise.)"""
    epochs, per_epoch, b = 4, 3, 40
    model_spec = ModelSpec(**options)
    spec = TrainSpec(epochs=epochs, step_size=1, **recipe)
    total = epochs * per_epoch
    seed = 5
    model, _, trainer = engine(
        small_data, model_spec, spec, [seed], total_steps=total, dtype=torch.float64
    )
    sizes = (small_data.num_features, small_data.num_classes)
    net = run_as_torch_net(model, 0, model_spec, sizes)
    if spec.optimizer == "sgd":
        opt = torch.optim.SGD(
            net.parameters(), spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    else:
        opt = torch.optim.Adam(net.parameters(), spec.lr, weight_decay=spec.weight_decay)
    scheduler = {
        "constant": lambda: None,
        "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(opt, spec.lr, total_steps=total),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total),
        "step": lambda: torch.optim.lr_scheduler.StepLR(opt, spec.step_size, spec.gamma),
    }[spec.schedule]()
    masks = ReferenceMasks(seed, model_spec)
    for step, idx in enumerate(batches(small_data, 1, b, total)):
        train(trainer, [idx])
        masks.set_next(net, b)
        opt.zero_grad()
        x, y = small_data.train_x[idx[0]].double() / 255, small_data.train_y[idx[0]]
        objective(model_spec, net(x), y).backward()
        opt.step()
        if scheduler is not None and (spec.schedule != "step" or (step + 1) % per_epoch == 0):
            scheduler.step()
    lins, bns = of_type(net, nn.Linear), of_type(net, nn.BatchNorm1d)
    for lin, w, bias in zip(lins, model.weights, model.biases, strict=True):
        torch.testing.assert_close(w[0].T, lin.weight, **EXACT)
        torch.testing.assert_close(bias[0, 0], lin.bias, **EXACT)
    for i, bn in enumerate(bns):
        torch.testing.assert_close(model.scales[i][0, 0], bn.weight, **EXACT)
        torch.testing.assert_close(model.shifts[i][0, 0], bn.bias, **EXACT)
        torch.testing.assert_close(model.running_vars[i][0, 0], bn.running_var, **EXACT)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", ["constant", "step", "cosine", "onecycle"])
def test_schedules_match_torchs_schedulers(name, optimizer):
    """The learning rate (and the momentum or beta1 that onecycle cycles) of every step."""
    epochs, per_epoch = 7, 9
    total = epochs * per_epoch
    spec = TrainSpec(
        optimizer=optimizer, lr=0.3, schedule=name, step_size=2, gamma=0.5, epochs=epochs
    )
    p = torch.zeros(1, requires_grad=True)
    if optimizer == "sgd":
        opt = torch.optim.SGD([p], lr=spec.lr, momentum=spec.momentum)
    else:
        opt = torch.optim.Adam([p], lr=spec.lr)
    scheduler = {
        "constant": lambda: None,
        "step": lambda: torch.optim.lr_scheduler.StepLR(opt, spec.step_size, spec.gamma),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total),
        "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(opt, spec.lr, total_steps=total),
    }[name]()
    tiny = StackedMLP(ModelSpec(hidden=[1]), [0], (1, 2), "cpu")
    mine = Optimizer(tiny, spec, total_steps=total)
    lrs = []
    for step in range(total):
        mine.begin_step()
        group = opt.param_groups[0]
        momentum = group["momentum"] if optimizer == "sgd" else group["betas"][0]
        assert mine.lr == pytest.approx(group["lr"], rel=1e-9, abs=1e-15)
        assert mine.momentum == pytest.approx(momentum, rel=1e-12)
        lrs.append(mine.lr)
        opt.step()
        if scheduler is not None and (name != "step" or (step + 1) % per_epoch == 0):
            scheduler.step()
    assert (len(set(lrs)) == 1) == (name == "constant")
    untimed = Optimizer(tiny, spec)  # no total steps given: a constant learning rate
    untimed.begin_step()
    assert untimed.lr == spec.lr


def runs_with(model: dict, train: dict) -> list:
    study = {
        "name": "options",
        "seeds": [0, 1],
        "levels": [0.0, 0.4],
        "model": {"hidden": [64, 32], **model},
        "train": {"epochs": 2, "batch_size": 32, **train},
        "setups": [
            {"name": "labels", "noise": "labels.uniform"},
            {"name": "pixels", "noise": "pixels.replace"},
        ],
    }
    return plan(parse_study(study))


def metrics(result) -> list[float]:
    keys = ("train_loss", "train_acc", "test_loss", "test_acc", "test_conf")
    return [e[k] for e in result.epochs for k in keys]


def test_a_run_with_options_is_the_same_in_any_pack_bit_for_bit(small_data, monkeypatch):
    """Alone, or in a pack of 3 as one shard, two or three, with 1 or 2 torch threads (a pack's
    ops on CPU are single-threaded whatever the thread count and NOISEBENCH_SHARDS)."""
    runs = runs_with({"batchnorm": True, "dropout": 0.2}, {"schedule": "onecycle", "lr": 0.05})
    picked = [runs[0], runs[3], runs[5]]  # clean, label noise, pixel noise
    assert [r.noise for r in picked] == [None, "labels.uniform", "pixels.replace"]
    threads = torch.get_num_threads()
    packed = {}
    try:  # (torch threads, NOISEBENCH_SHARDS): shards are the threads unless the variable says
        for setting in ((1, ""), (2, ""), (2, "1"), (1, "3")):
            torch.set_num_threads(setting[0])
            monkeypatch.setenv("NOISEBENCH_SHARDS", setting[1])
            packed[setting] = [metrics(r) for r in train_pack(picked[::-1], small_data)][::-1]
    finally:
        torch.set_num_threads(threads)
    monkeypatch.delenv("NOISEBENCH_SHARDS")
    for i, run in enumerate(picked):
        alone = metrics(train_pack([run], small_data)[0])
        assert all(math.isfinite(v) for v in alone)
        for (threads, shards), results in packed.items():
            assert results[i] == alone, f"run {i}, {threads} thread(s), NOISEBENCH_SHARDS={shards}"


def test_a_study_with_every_option_trains(small_data):
    options = {"schedule": "onecycle", "lr": 0.5, "epochs": 4}
    runs = [r for r in runs_with(EVERY_OPTION, options) if r.noise != "pixels.replace"]
    for run, result in zip(runs, train_pack(runs, small_data), strict=True):
        assert result.status == "done" and len(result.epochs) == 4
        assert all(math.isfinite(v) for v in metrics(result))
        assert result.epochs[-1]["train_loss"] < result.epochs[0]["train_loss"]
        assert result.epochs[-1]["test_acc"] > (0.6 if run.noise is None else 0.4)  # chance 0.1


def test_step_and_cosine_schedules_train(small_data):
    for recipe in (
        {"schedule": "step", "step_size": 1, "lr": 0.05},
        {"schedule": "cosine", "optimizer": "adam", "lr": 0.003},
    ):
        clean = [
            r for r in runs_with({"batchnorm": True}, {**recipe, "epochs": 3}) if r.noise is None
        ]
        result = train_pack(clean[:1], small_data)[0]
        assert result.epochs[-1]["test_acc"] > 0.6


def test_evaluation_uses_running_statistics_not_the_batch(small_data):
    spec = ModelSpec(hidden=[32, 16], batchnorm=True, dropout=0.3)
    model, _, trainer = engine(small_data, spec, TrainSpec(lr=0.05), [0, 1, 2])
    train(trainer, batches(small_data, 3, 32, 10))
    assert not torch.equal(model.running_means[0], torch.zeros_like(model.running_means[0]))
    x, y = small_data.test_x[:100], small_data.test_y[:100]
    full = model.logits_of_bytes(x)
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model.logits_of_bytes(x[perm]), full[:, perm])
    torch.testing.assert_close(model.logits_of_bytes(x[:3]), full[:, :3])
    torch.testing.assert_close(model.logits_of_bytes(x, classes_first=True), full.mT)
    with torch.no_grad():
        torch.testing.assert_close(model(x.float() / 255), full)
    sizes = (small_data.num_features, small_data.num_classes)
    for r in range(3):
        net = run_as_torch_net(model, r, spec, sizes).eval()
        with torch.no_grad():
            torch.testing.assert_close(net(x.float() / 255), full[r])
    in_sevens, whole = evaluate(model, x, y, chunk=7), evaluate(model, x, y, chunk=100)
    for a, b in zip(in_sevens, whole, strict=True):
        torch.testing.assert_close(a, b)


def test_generator_states_and_buffers_resume_bit_for_bit(small_data):
    """What a checkpoint keeps (parameters, buffers, optimizer, dropout generators) continues
    training exactly."""
    spec, recipe = ModelSpec(hidden=[32, 16], **EVERY_OPTION), TrainSpec(schedule="onecycle")
    steps = batches(small_data, 2, 32, 6)

    model, opt, trainer = engine(small_data, spec, recipe, [4, 9], total_steps=6)
    train(trainer, steps[:3])
    saved = (
        [t.clone() for t in model.parameters()],
        [t.clone() for t in model.buffers()],
        {k: v if k == "step" else [t.clone() for t in v] for k, v in opt.state_dict().items()},
        [s.clone() for s in trainer.generator_states()],
    )
    assert len(saved[3]) == 2 and len(saved[1]) == 4
    train(trainer, steps[3:])

    model2, opt2, trainer2 = engine(small_data, spec, recipe, [4, 9], total_steps=6)
    for mine, kept in zip(model2.parameters() + model2.buffers(), saved[0] + saved[1], strict=True):
        mine.detach().copy_(kept)
    opt2.load_state_dict(saved[2])
    trainer2.load_generator_states(saved[3])
    train(trainer2, steps[3:])
    for a, b in zip(
        model.parameters() + model.buffers(), model2.parameters() + model2.buffers(), strict=True
    ):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(),
        ModelSpec(hidden=[32, 16], batchnorm=True),
        ModelSpec(hidden=[7], **EVERY_OPTION),
    ],
)
def test_parameter_count_matches_the_torch_model(spec):
    expected = sum(p.numel() for p in torch_net(spec, 784, 10).parameters())
    assert parameter_count(spec, 784, 10) == expected
    stacked = StackedMLP(spec, [0, 1], (784, 10), "cpu")
    assert sum(p[0].numel() for p in stacked.parameters()) == expected


def test_options_off_leave_specs_and_run_ids_as_before():
    assert ModelSpec().model_dump() == {"hidden": [128, 128], "activation": "relu"}
    assert set(TrainSpec().model_dump()) == {
        "optimizer",
        "lr",
        "momentum",
        "weight_decay",
        "batch_size",
        "epochs",
    }
    assert ModelSpec(dropout=0.5).model_dump()["dropout"] == 0.5
    assert TrainSpec(schedule="step").model_dump()["schedule"] == "step"
    assert ModelSpec.model_validate(ModelSpec(**EVERY_OPTION).model_dump()) == ModelSpec(
        **EVERY_OPTION
    )
    plain = runs_with({}, {})[0]
    assert (
        runs_with({"dropout": 0.0, "loss": "cross-entropy"}, {"schedule": "constant"})[0].run_id
        == plain.run_id
    )
    assert runs_with({"dropout": 0.1}, {})[0].run_id != plain.run_id
    assert runs_with({}, {"schedule": "cosine"})[0].pack_key != plain.pack_key
    model = StackedMLP(ModelSpec(), [0], (784, 10), "cpu")
    assert model.buffers() == [] and len(model.parameters()) == 6
