"""Training methods (study.Method): every loss and its gradient equal torch's objective and
autograd in float64; `ce` is what noisebench ran before methods existed; a run's numbers do
not depend on its pack, whatever the methods beside it (a co-teaching pair as one unit); the
transition matrices are the ones the noise implies; every method trains and is stored."""

import functools
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from noisebench.engine import backward, train_pack
from noisebench.engine.methods import CoTeaching, anchor_transition, true_transition
from noisebench.study import load_preset, method_label, packs, parse_study, plan

EXACT = {"rtol": 1e-9, "atol": 1e-12}


def _onehot(y, z):
    return F.one_hot(y, z.shape[1]).to(z.dtype)


def _random_transitions(runs: int, k: int, gen) -> torch.Tensor:
    """Row-stochastic, diagonal-heavy (invertible) matrices [R, K, K]."""
    t = torch.rand(runs, k, k, generator=gen, dtype=torch.float64) + 3 * torch.eye(k)
    return t / t.sum(2, keepdim=True)


RUNS, CLASSES, B = 3, 10, 17
TRANSITIONS = _random_transitions(RUNS, CLASSES, torch.Generator().manual_seed(1))

# Each loss as the engine takes it, and its objective as torch computes it (mean over a batch
# of logits [b, C] with labels [b], for run r), written independently of the engine's formula.
LOSSES = {
    "gce": (
        functools.partial(backward.generalized_cross_entropy, q=0.7),
        lambda z, y, _r: ((1 - z.softmax(1).gather(1, y[:, None]) ** 0.7) / 0.7).mean(),
    ),
    "sce": (
        functools.partial(backward.symmetric_cross_entropy, alpha=0.1, beta=1.0, log_zero=-4.0),
        lambda z, y, _r: (
            0.1 * F.cross_entropy(z, y)
            - (z.softmax(1) * _onehot(y, z).clamp(min=math.exp(-4.0)).log()).sum(1).mean()
        ),
    ),
    "bootstrap-soft": (
        functools.partial(backward.soft_bootstrap, beta=0.95),
        lambda z, y, _r: (
            -((0.95 * _onehot(y, z) + 0.05 * z.softmax(1)) * z.log_softmax(1)).sum(1).mean()
        ),
    ),
    "bootstrap-hard": (
        functools.partial(backward.hard_bootstrap, beta=0.8),
        lambda z, y, _r: (
            -((0.8 * _onehot(y, z) + 0.2 * _onehot(z.detach().argmax(1), z)) * z.log_softmax(1))
            .sum(1)
            .mean()
        ),
    ),
    "forward": (
        backward.ForwardCorrected(TRANSITIONS),
        lambda z, y, r: F.nll_loss((z.softmax(1) @ TRANSITIONS[r]).log(), y),
    ),
    "backward": (
        backward.BackwardCorrected(TRANSITIONS),
        lambda z, y, r: (
            (-z.log_softmax(1) @ torch.linalg.inv(TRANSITIONS[r]).T).gather(1, y[:, None]).mean()
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_method_loss_and_its_gradient_equal_torch_autograd_in_float64(name):
    loss, objective = LOSSES[name]
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(RUNS, CLASSES, B, generator=gen, dtype=torch.float64) * 3
    labels = torch.randint(0, CLASSES, (RUNS, 1, B), generator=gen)
    loss_sum = torch.full((RUNS,), 0.5, dtype=torch.float64)  # sums are added to it
    grad = loss(logits.clone(), labels, loss_sum)
    for r in range(RUNS):
        z = logits[r].T.clone().requires_grad_()
        mean = objective(z, labels[r, 0], r)
        mean.backward()
        assert loss_sum[r].item() == pytest.approx(0.5 + mean.item() * B, rel=1e-12)
        torch.testing.assert_close(grad[r], z.grad.T, **EXACT)
    assert not torch.allclose(grad, backward.cross_entropy(logits.clone(), labels, loss_sum))


class _Steps:
    def __init__(self, step_count: int):
        self.step_count = step_count


@pytest.mark.parametrize("epoch, kept", [(0, B), (1, round((1 - 0.4 * 0.5) * B)), (5, 10)])
def test_coteaching_updates_each_network_on_the_small_loss_examples_of_its_peer(epoch, kept):
    """τ = 0.4 reached over t_k = 2 epochs: epoch 0 keeps all, epoch 1 keeps (1 − 0.2)·b,
    later (1 − 0.4)·b. Each network's gradient is that of its mean cross-entropy over the
    examples its peer finds easiest."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(4, CLASSES, B, generator=gen, dtype=torch.float64) * 3
    labels = torch.randint(0, CLASSES, (4, 1, B), generator=gen)
    loss = CoTeaching([0.4, 0.4], t_k=2, opt=_Steps(epoch * 7 + 3), steps_per_epoch=7)
    loss_sum = torch.zeros(4, dtype=torch.float64)
    grad = loss(logits.clone(), labels, loss_sum)
    for me, peer in ((0, 1), (1, 0), (2, 3), (3, 2)):
        z = logits[me].T.clone().requires_grad_()
        peer_losses = F.cross_entropy(logits[peer].T, labels[peer, 0], reduction="none")
        chosen = peer_losses.argsort()[:kept]
        mean = F.cross_entropy(z[chosen], labels[me, 0, chosen])
        mean.backward()
        torch.testing.assert_close(grad[me], z.grad.T, **EXACT)
        assert loss_sum[me].item() == pytest.approx(mean.item() * B, rel=1e-12)
        assert int((grad[me].abs().sum(0) > 0).sum()) == kept


def test_the_true_transition_matrix_is_the_one_the_noise_implies():
    study = parse_study(
        {
            "name": "t",
            "seeds": [0],
            "levels": [0.5],
            "methods": ["forward"],
            "setups": [
                {"name": "sym", "noise": "labels.uniform", "params": {"exclude_true": True}},
                {"name": "uni", "noise": "labels.uniform"},
                {"name": "pair", "noise": "labels.pairflip"},
            ],
        }
    )
    sym, uni, pair = (true_transition(r, 4) for r in plan(study))
    assert sym[0].tolist() == [0.5, 0.5 / 3, 0.5 / 3, 0.5 / 3]
    assert uni[2].tolist() == [0.125, 0.125, 0.625, 0.125]
    assert pair[3].tolist() == [0.5, 0.0, 0.0, 0.5]  # 3 flips to 0
    for t in (sym, uni, pair):
        torch.testing.assert_close(t.sum(1), torch.ones(4, dtype=torch.float64))


def test_the_anchor_estimate_reads_t_off_the_most_confident_example_of_each_class():
    t = torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=torch.float64)
    # examples of true class 0 and 1 give p(ỹ | x) = rows of T; others are mixtures
    probs = torch.stack([t[0], 0.5 * t[0] + 0.5 * t[1], t[1], 0.9 * t[1] + 0.1 * t[0]])
    assert anchor_transition(probs).tolist() == t.tolist()


# --- in training -----------------------------------------------------------------------------

EVERY_METHOD = [
    "ce",
    "gce",
    "sce",
    "bootstrap",
    {"name": "bootstrap", "hard": True},
    "forward",
    "backward",
    {"name": "forward", "T": "estimated", "estimate_after": 1},
    "coteaching",
    "early-stop",
]


def study_of(methods, epochs=2, **extra):
    spec = {
        "name": "methods",
        "seeds": [0],
        "levels": [0.0, 0.4],
        "validation": 0.1,
        "methods": methods,
        "train": {"epochs": epochs, "batch_size": 32, "optimizer": "adam", "lr": 0.003},
        "analysis": {"fgsm_eps": [], "label_issues": False},
        "setups": [{"name": "sym", "noise": "labels.uniform", "params": {"exclude_true": True}}],
    }
    return parse_study(spec | extra)


def numbers(result) -> list[float]:
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    return [e[k] for e in result.epochs for k in keys]


def test_a_study_without_methods_keeps_its_run_ids_and_digest():
    """Recorded on main before methods existed (tests/helpers.TINY_STUDY_TOML)."""
    study = parse_study(
        {
            "name": "tiny",
            "seeds": [0],
            "levels": [0.0, 0.5],
            "train": {"epochs": 1, "batch_size": 128},
            "setups": [{"name": "label noise", "noise": "labels.uniform"}],
        }
    )
    assert [r.run_id for r in study.plan()] == ["22d9fa7205394f44", "48926d63e1b768d5"]
    assert study.digest() == "83f0c1ccbe2144ef"
    with_ce = parse_study(study.model_dump() | {"methods": ["ce"]})
    assert [r.run_id for r in with_ce.plan()] == ["22d9fa7205394f44", "48926d63e1b768d5"]


def test_every_method_trains_and_a_run_is_the_same_alone_as_in_a_mixed_pack(small_data):
    """One pack of every method (two shards), then each run alone (a co-teaching pair as a
    unit): bit for bit the same numbers. `ce` in the mixed pack is the run of a study
    without methods; the 10% validation split leaves 577 examples, so every epoch ends on a
    batch of one."""
    methods = EVERY_METHOD
    runs = plan(study_of(methods))
    assert len(runs) == 2 * (len(methods) + 1)  # co-teaching is a pair
    packed = {r.run_id: r for r in train_pack(runs[::-1], small_data)}
    for unit in packs(runs, max_pack=1):
        alone = train_pack(unit, small_data)
        for run, result in zip(unit, alone, strict=True):
            assert numbers(result) == numbers(packed[run.run_id]), method_label(run.method)
            assert result.status == "done" and all(math.isfinite(v) for v in numbers(result))
    plain = plan(study_of(["ce"]))
    assert [r.run_id for r in plain] == [r.run_id for r in runs if not r.method]
    for run, result in zip(plain, train_pack(plain, small_data), strict=True):
        assert numbers(result) == numbers(packed[run.run_id])
    by_method = {method_label(r.method): packed[r.run_id] for r in runs if r.level == 0.4}
    distinct = {tuple(numbers(r)) for r in by_method.values()}
    assert len(distinct) >= len(by_method) - 2  # forward/estimated ≈ ce in epoch 1 only


def test_resuming_continues_bit_for_bit_with_estimated_t_and_coteaching(small_data, tmp_path):
    """The estimate of T made after epoch 1 and the co-teaching schedule survive a restart in
    epoch 3."""
    estimated = {"name": "backward", "T": "estimated", "estimate_after": 1}
    runs = plan(study_of([estimated, {"name": "coteaching", "t_k": 2}], 3, validation=0.0))
    reference = [numbers(r) for r in train_pack(runs, small_data)]
    checkpoint = tmp_path / "pack.pt"

    class Stop(Exception):
        pass

    def stop_in_third_epoch(step: int, total: int) -> None:
        if step >= 2 * total // 3 + 1:
            raise Stop

    with pytest.raises(Stop):
        train_pack(runs, small_data, checkpoint=checkpoint, progress=stop_in_third_epoch)
    resumed = train_pack(runs, small_data, checkpoint=checkpoint)
    assert [numbers(r) for r in resumed] == reference
    for run, result in zip(runs, resumed, strict=True):  # the estimate, against the true T
        if run.method_name == "backward":
            assert 0 < result.final["transition_l1"] < 2


def test_early_stop_stops_on_the_validation_loss_and_keeps_its_best_epoch(small_data):
    runs = [r for r in plan(study_of(["ce", {"name": "early-stop", "patience": 1}], 8))]
    results = {r.run_id: res for r, res in zip(runs, train_pack(runs, small_data), strict=True)}
    for run in runs:
        result = results[run.run_id]
        if run.method_name == "early-stop":
            # it watches the validation split with labels as noisy as its training labels
            losses = [e["val_noisy_loss"] for e in result.epochs]
            best = result.final["best_epoch"]
            assert losses[best - 1] == min(losses)
            assert len(losses) == 8 or losses[-1] >= losses[-2]
            noisy_acc = result.epochs[-1]["val_noisy_acc"]
            clean_acc = result.epochs[-1]["val_acc"]
            if run.level == 0.4:  # about 40 % of the held-out labels are wrong
                assert 0.45 * clean_acc < noisy_acc < 0.75 * clean_acc
            else:
                assert noisy_acc == clean_acc
        else:
            assert len(result.epochs) == 8 and "best_epoch" not in result.final


def test_the_remedies_preset_loads_with_every_method_and_noise():
    study = load_preset("remedies")
    names = {m.name for m in study.methods}
    assert names == {
        "ce",
        "gce",
        "sce",
        "bootstrap",
        "forward",
        "backward",
        "coteaching",
        "early-stop",
    }
    assert {s.noise for s in study.setups} == {"labels.uniform", "labels.pairflip"}
    assert study.seeds == [0, 1, 2]


# --- the report section ------------------------------------------------------------------------


def _frames():
    """ce, gce, early-stop and a co-teaching pair at one setting over 3 seeds, 3 epochs, and
    a clean ce baseline; gce is exactly 10 points above ce in every seed."""
    import pandas as pd

    runs, metrics = [], []

    def add(run_id, setup, level, seed, method, accs, peer=0, fit=0.5, best_epoch=None):
        runs.append(
            dict(run_id=run_id, setup=setup, level=level, seed=seed, method=method, peer=peer)
        )
        for epoch, acc in enumerate(accs, start=1):
            metrics.append(dict(run_id=run_id, epoch=epoch, metric="test_acc", value=acc))
            metrics.append(dict(run_id=run_id, epoch=epoch, metric="fit_noisy", value=fit))
        if best_epoch is not None:
            metrics.append(dict(run_id=run_id, epoch=0, metric="best_epoch", value=best_epoch))

    for seed, base in enumerate((0.5, 0.6, 0.7)):
        add(f"clean{seed}", "clean", 0.0, seed, "ce", [0.85, 0.9, 0.9])
        add(f"ce{seed}", "sym", 0.5, seed, "ce", [base + 0.2, base + 0.1, base], fit=0.8)
        add(f"gce{seed}", "sym", 0.5, seed, "gce", [base, base + 0.05, base + 0.1], fit=0.1)
        add(f"es{seed}", "sym", 0.5, seed, "early-stop", [base + 0.2, base + 0.1], best_epoch=1)
        add(f"ct{seed}", "sym", 0.5, seed, "coteaching", [0.1, 0.1, 0.1])
        add(f"ct{seed}b", "sym", 0.5, seed, "coteaching", [0.9, 0.9, 0.9], peer=1)
    return pd.DataFrame(runs), pd.DataFrame(metrics)


def test_the_methods_section_ranks_methods_with_paired_intervals_against_ce():
    from noisebench.report.methods_section import as_text, methods_section

    section = methods_section(*_frames())
    table = section.tables[("sym", 0.5)].set_index("method")
    assert list(table.index) == ["early-stop", "gce", "ce", "coteaching"]
    # early-stop keeps epoch 1 (ce's peak there, 20 points above ce's last epoch)
    assert table.at["early-stop", "last_acc"] == pytest.approx(0.8)
    gce = table.at["gce", "last_vs_ce"]
    assert (gce.mean, gce.low, gce.high, gce.n) == pytest.approx((0.1, 0.1, 0.1, 3))
    assert table.at["gce", "best_vs_ce"].mean == pytest.approx(-0.1)  # ce's best is epoch 1
    # ce ends at 60 %, clean at 90 %: gce buys back 10 of the 30 points lost
    assert table.at["gce", "bought_back"] == pytest.approx(1 / 3)
    assert table.at["gce", "fit_noisy"] == pytest.approx(0.1)
    assert table.at["coteaching", "last_acc"] == pytest.approx(0.1)  # peer 0 only
    assert table.at["coteaching", "compute_vs_ce"] == pytest.approx(2.0)
    assert table.at["early-stop", "compute_vs_ce"] == pytest.approx(2 / 3)
    assert (
        "the largest mean gain is early-stop's, +20.0 [+20.0, +20.0] points"
        in section.paragraphs[0]
    )
    assert "2 methods end clearly above plain ce at the last epoch" in section.paragraphs[0]
    assert "coteaching ends clearly below it" in section.paragraphs[0]
    assert as_text(section.tables[("sym", 0.5)]).iloc[1, 2] == "+10.0 [+10.0, +10.0]"
    assert len(section.figures[("sym", 0.5)].axes[0].lines) == 5  # 4 methods, clean line


def test_a_tiny_study_of_every_method_is_stored_and_shown_method_by_method(tmp_path):
    """Every method's runs reach the store with their method; the main summary shows only
    plain ce (one seed, not eleven runs averaged); the methods section ranks all of them."""
    from noisebench.report import read
    from noisebench.report.experiments import early_stopping_section
    from noisebench.report.render import title
    from noisebench.store import Store

    study = study_of(EVERY_METHOD, 2, train_sizes=[300])
    results = study.run(tmp_path, dataset="mnist-sample")
    summary = results.summary()
    assert summary["seeds"].tolist() == [1, 1]
    with Store.open_existing(tmp_path, readonly=True) as store:
        stored = [r["config"].get("method", {}).get("name", "ce") for r in store.runs()]
    assert sorted(set(stored)) == sorted(
        {m if isinstance(m, str) else m["name"] for m in EVERY_METHOD}
    )
    section = results.methods()
    table = section.tables[("sym", 0.4)]
    assert len(table) == len(EVERY_METHOD)  # co-teaching once (peer 0)
    ce = table.set_index("method").at["ce", "last_acc"]
    assert ce == pytest.approx(summary.set_index("level").at[0.4, "test_acc"])
    # the Summary answers with the methods: plain ce's number, no claim from one seed
    said = f"Under sym at X = 40 %, plain ce ends at {ce * 100:.1f} %; with one seed no method"
    assert any(sentence.startswith(said) for sentence in results.explanation())
    with Store.open_existing(tmp_path, readonly=True) as store:
        frames = read(store)
    head, _ = title(frames)
    assert head == f"{len(EVERY_METHOD)} training methods under sym"
    # the validation section averages plain-ce runs only (clean and X = 40 %), never methods
    stopping = early_stopping_section(frames, tmp_path / "figures")
    assert "over all 2 runs" in " ".join(stopping.paragraphs)


def test_the_share_bought_back_needs_a_clear_loss_of_plain_ce():
    from noisebench.report.methods_section import _setting_table

    def setting(ce_last: list[float]) -> pd.DataFrame:
        rows = [
            {"method": m, "seed": seed, "last": v + (0.05 if m == "gce" else 0.0), "best": v,
             "fit_noisy": 0.1, "networks": 1, "epochs": 10, "transition_l1": float("nan")}
            for m in ("ce", "gce")
            for seed, v in enumerate(ce_last)
        ]  # fmt: skip
        return pd.DataFrame(rows)

    clean = pd.Series([0.90, 0.91, 0.92])
    lost = _setting_table(setting([0.70, 0.71, 0.72]), clean).set_index("method")
    assert lost.at["gce", "bought_back"] == pytest.approx(0.25)  # 5 of the 20 points
    # ce within seed noise of clean (per-seed gaps +2, -3, +1 points): no share is made up
    close = _setting_table(setting([0.88, 0.94, 0.91]), clean).set_index("method")
    assert math.isnan(close.at["gce", "bought_back"])


def test_best_epoch_is_where_the_methods_mean_curve_peaks_as_in_the_main_table():
    from noisebench.report.methods_section import _at_mean_peak

    # seed 0 peaks at epoch 2 (90 %), seed 1 at epoch 1 (80 %); the mean curve peaks at epoch 2
    curves = pd.DataFrame(
        [(run, e + 1, v) for run, vs in (("a", [0.5, 0.9, 0.6]), ("b", [0.8, 0.7, 0.75]))
         for e, v in enumerate(vs)],
        columns=["run_id", "epoch", "test_acc"],
    )  # fmt: skip
    table = pd.DataFrame({"run_id": ["a", "b"], "method": ["ce", "ce"]})
    best = _at_mean_peak(table, curves)
    assert best.tolist() == [0.9, 0.7]  # mean 80 %, not the 85 % of per-seed maxima
