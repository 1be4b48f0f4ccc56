"""The Summary: the answer first, in 5-20 plain sentences, each a checked Finding.

What the noises are, that the test set is never noised, the headline comparison of the first
two setups at a middle level (last epoch and best epoch, paired by seed), how that comparison
changes with training length within the epochs measured, the mechanism the tool measured
(confidence against the share of correct labels; background pixels), what X = 100 % means,
and the scope (data, seeds, epochs). Every sentence reads the Frames and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..noise import counts_copies
from .finding import Finding, ordered
from .frames import Frames
from .methods_section import BASELINE, clear_of_ce, ranked_tables
from .stats import Paired, binomial_half, mean_half, paired
from .words import acc, count, listing, nats, noise_words, pm, pts, runs_of, verb, x

SAMPLE = "mnist-sample"
# noises whose X = 100 % leaves no information about the true class in the training data
NO_INFORMATION = {
    "labels.uniform": "the labels are random",
    "labels.shuffle": "the labels are shuffled",
    "pixels.replace": "the images are pure noise",
    "images.random": "the images are pure noise",
}


@dataclass(frozen=True)
class Peak:
    """The mean curve's best epoch of test accuracy, and the paired fall after it."""

    epoch: int
    value: float  # the mean curve at `epoch`
    last_epoch: int
    last: float  # the mean curve at the last epoch
    fall: Paired  # per seed: value at `epoch` minus value at the last epoch


def peak(fr: Frames, setup: str, level: float) -> Peak | None:
    table = fr.curves(setup, level, "test_acc")
    if table.empty:
        return None
    table = table.ffill(axis=1)
    mean = table.mean(axis=0)
    best = int(mean.idxmax())
    last = int(mean.index[-1])
    fall = paired(table[best], table[last], fr.n_test)
    return Peak(best, float(mean[best]), last, float(mean[last]), fall)


def _mean(series: pd.Series) -> float:
    return float(series.mean()) if len(series) else float("nan")


def middle_level(fr: Frames, setups: list[str]) -> float | None:
    """The noisy level all `setups` share that is nearest to 50 %, below 100 % if possible."""
    shared = set.intersection(*(set(fr.levels(s)) for s in setups)) - {0.0}
    if not shared:
        return None
    inner = [lv for lv in shared if lv < 1] or sorted(shared)
    return min(inner, key=lambda lv: (round(abs(lv - 0.5), 9), lv))


def _label(setup: str) -> str:
    return setup[:1].upper() + setup[1:]


def _costs(setup: str) -> str:
    return verb(setup, "costs", "cost")


# --- scope and definitions -------------------------------------------------------------------
def data_scope(fr: Frames) -> Finding:
    meta = fr.meta
    name, train, test = meta.get("dataset"), meta.get("train_size"), meta.get("test_size")
    sizes = f"{train:,} training and {test:,} test images" if train and test else "its images"
    if name == SAMPLE:
        why = " because full MNIST was not available" if meta.get("dataset_fallback") else ""
        text = (
            f"This study ran on mnist-sample{why}: {int(train or 0) + int(test or 0):,} "
            f"MNIST digits ({sizes}), a small sample, so its numbers are not full-MNIST results."
        )
    else:
        fallback = (
            f" ({meta.get('dataset_requested')} was requested but not available)"
            if meta.get("dataset_fallback")
            else ""
        )
        text = f"This study ran on {name}{fallback}, with {sizes}."
    return Finding("data", text, True, "the store's dataset record", fr.scope, None, 100)


def training_scope(fr: Frames) -> Finding:
    n = len(fr.seeds)
    cap = fr.study.train.epochs
    if fr.epochs < cap:
        text = (
            f"It trained every setup and level with {count(n, 'seed')}; each run stopped at its "
            f"own epoch, at most {fr.epochs} of the {cap} allowed, and a number below is after "
            "each run's last epoch unless it names another."
        )
    else:
        text = (
            f"It trained every setup and level with {count(n, 'seed')} for {fr.epochs} epochs; "
            f"a number below is after epoch {fr.epochs} unless it names another epoch."
        )
    return Finding("length", text, True, "the runs' stored epochs", fr.scope, "table", 99)


def definitions(fr: Frames) -> list[Finding]:
    out = []
    for i, s in enumerate(fr.study.setups):
        if not [lv for lv in fr.levels(s.name) if lv > 0]:
            continue  # only its clean baseline: no noise to describe
        text = f"Under {s.name}, {noise_words(s.noise, s.params, fr.num_classes)}."
        out.append(Finding(f"define-{s.name}", text, True, "the study", fr.scope, None, 98 - i))
    return out[:4]


def clean_test(fr: Frames) -> Finding:
    n = fr.meta.get("test_size")
    images = f"the same {n:,} clean test images" if n else "the same clean test images"
    text = (
        f"The test set is never noised: every test accuracy is measured on {images}, "
        f"where guessing scores {acc(fr.chance)}."
    )
    return Finding("clean-test", text, True, "the study design", fr.scope, None, 94)


# --- the headline comparison -----------------------------------------------------------------
def _differs(d: Paired, worse: str, better: str, where: str) -> tuple[bool, str]:
    """The sentence that `worse` costs more than `better` by d, or that the data cannot tell."""
    if d.n >= 2:
        if d.clear:
            return True, (
                f"{_label(worse)} {_costs(worse)} {pm(abs(d.mean), d.half)} points more "
                "accuracy than "
                f"{better} {where} (paired by seed, 95 % interval)."
            )
        return False, (
            f"The data cannot tell which setup costs more accuracy {where}: the paired "
            f"difference, {pm(abs(d.mean), d.half)} points, includes zero."
        )
    if d.clear:
        return True, (
            f"{_label(worse)} {_costs(worse)} {pts(abs(d.mean))} more accuracy than {better} "
            f"{where}, "
            f"more than the test set's sampling error of about {pts(d.binomial)}."
        )
    return False, (
        f"The data cannot tell which setup costs more accuracy {where}: the {pts(abs(d.mean))} "
        f"difference is within the test set's sampling error of about {pts(d.binomial)}."
    )


def compare_last(fr: Frames, a: str, b: str, lv: float) -> list[Finding]:
    va, vb = fr.last(a, lv, "test_acc"), fr.last(b, lv, "test_acc")
    d = paired(va, vb, fr.n_test)
    values = (
        f"At X = {x(lv)}, the last epoch's test accuracy is {acc(_mean(va))} under {a} "
        f"and {acc(_mean(vb))} under {b}."
    )
    worse, better = (a, b) if d.mean < 0 else (b, a)
    holds, verdict = _differs(d, worse, better, "there")
    stat = f"paired difference {pm(d.mean, d.half, digits=2)} points over {count(d.n, 'seed')}"
    return [
        Finding("values-last", values, True, "mean over seeds", fr.scope, "table", 90),
        Finding("compare-last", verdict, holds, stat, fr.scope, "final_accuracy", 89),
    ]


def compare_levels(fr: Frames, a: str, b: str) -> Finding | None:
    """Which setup costs more at every shared noisy level, by the paired last-epoch check."""
    shared = [lv for lv in fr.levels(a) if lv > 0 and lv in fr.levels(b)]
    if len(shared) < 2:
        return None
    signs = {
        lv: paired(fr.last(a, lv, "test_acc"), fr.last(b, lv, "test_acc"), fr.n_test)
        for lv in shared
    }
    a_worse = [lv for lv in shared if signs[lv].sign < 0]
    b_worse = [lv for lv in shared if signs[lv].sign > 0]
    unclear = [lv for lv in shared if signs[lv].sign == 0]
    parts = []
    if a_worse:
        parts.append(f"{a} {_costs(a)} clearly more at {runs_of(shared, a_worse)}")
    if b_worse:
        parts.append(f"{b} {_costs(b)} clearly more at {runs_of(shared, b_worse)}")
    if len(unclear) == len(shared):
        text = (
            "At no shared noisy level can the data tell which setup leaves the lower last-epoch "
            f"accuracy ({runs_of(shared, shared)})."
        )
    else:
        if unclear:
            parts.append(f"the data cannot tell at {runs_of(shared, unclear)}")
        text = f"Over the shared noisy levels after the last epoch, {listing(parts)}."
    stat = "paired difference per level over seeds (or the test set's binomial error, one seed)"
    return Finding("compare-levels", text, not unclear, stat, fr.scope, "final_accuracy", 80)


def ranking(fr: Frames, setups: list[str]) -> Finding | None:
    """With three or more setups: which leaves the lowest and which the highest last-epoch
    test accuracy at the shared level nearest 50 %, and from how many of the others the
    paired check tells each apart."""
    shares = [s for s in setups if not counts_copies(fr.noise_of(s) or "")]
    lv = middle_level(fr, shares) if len(shares) >= 3 else None
    if lv is None:
        return None
    finals = {s: fr.last(s, lv, "test_acc") for s in shares}
    order = sorted(shares, key=lambda s: _mean(finals[s]))
    worst, best = order[0], order[-1]
    n_test = fr.n_test

    def apart(a: str, b: str) -> bool:
        return paired(finals[a], finals[b], n_test).clear

    seeds = len(fr.seeds)
    how = f"over {seeds} seeds" if seeds > 1 else "(one seed: beyond the test set's sampling error)"
    where = f"Of the {len(order)} setups at X = {x(lv)}"
    low, high = f"{worst} ({acc(_mean(finals[worst]))})", f"{best} ({acc(_mean(finals[best]))})"
    if not apart(worst, best):
        text = (
            f"{where}, the paired check {how} cannot tell even the lowest last-epoch test "
            f"accuracy, {low}, from the highest, {high}."
        )
        holds = False
    else:
        below = sum(apart(s, worst) for s in order[1:])
        above = sum(apart(best, s) for s in order[:-1])
        others = len(order) - 1
        text = (
            f"{where}, {worst} {verb(worst, 'leaves', 'leave')} the lowest last-epoch test "
            f"accuracy ({acc(_mean(finals[worst]))}) and {high} the highest. The paired check "
            f"{how} tells the lowest apart from {below} of the other {others} setups and the "
            f"highest from {above}."
        )
        holds = True
    stat = "paired difference against the lowest and the highest setup"
    ref = "setup-ranking" if len(setups) >= 4 else "final_accuracy"
    return Finding("ranking", text, holds, stat, fr.scope, ref, 88)


def methods(fr: Frames) -> list[Finding]:
    """With training methods: per noise setting (at most four), plain ce's last-epoch accuracy
    and the methods that end clearly above it, by the methods section's paired check."""
    if fr.runs.method.nunique() < 2:
        return []
    out = []
    for i, ((setup, lv), table) in enumerate(list(ranked_tables(fr.runs, fr.values).items())[:4]):
        ce = table[table.method == BASELINE]
        if ce.empty:
            continue
        where = f"Under {setup} at X = {x(lv)}, plain ce ends at {acc(float(ce.last_acc.iloc[0]))}"
        up, _ = clear_of_ce(table)
        if table.seeds.max() < 2:
            text = f"{where}; with one seed no method is claimed above or below it."
        elif up:
            best = max(up, key=lambda r: r.last_acc)
            many = "1 method ends" if len(up) == 1 else f"{len(up)} methods end"
            text = (
                f"{where}; {many} clearly above it, {best.method} highest on average at "
                f"{acc(best.last_acc)}."
            )
        else:
            text = f"{where}, and no other method ends clearly above it."
        stat = f"paired difference against ce over {count(int(table.seeds.max()), 'seed')}"
        out.append(
            Finding(f"methods-{setup}-{lv}", text, bool(up), stat, fr.scope, "methods", 88 - i)
        )
    return out


# --- training length -------------------------------------------------------------------------
def peak_then_fall(fr: Frames, setup: str, lv: float, importance: int) -> Finding | None:
    p = peak(fr, setup, lv)
    if p is None or p.last_epoch < 2:
        return None
    where = f"Under {setup} at X = {x(lv)}"
    scope = fr.scope
    if p.epoch == p.last_epoch:
        text = (
            f"{where}, mean test accuracy is highest at the last epoch measured, "
            f"{acc(p.value)}; these epochs show no peak."
        )
        return Finding(
            f"peak-{setup}", text, True, "mean curve", scope, "accuracy_epochs", importance
        )
    if p.fall.clear and p.fall.mean > 0:
        text = (
            f"{where}, mean test accuracy peaks at {acc(p.value)} at epoch {p.epoch}, then "
            f"falls by {pts(p.fall.mean)} to the last epoch."
        )
        holds = True
    else:
        text = (
            f"{where}, the data cannot tell a fall after the peak: mean test accuracy peaks at "
            f"{acc(p.value)} at epoch {p.epoch} and ends at {acc(p.last)}."
        )
        holds = False
    stat = f"paired fall peak − last {pm(p.fall.mean, p.fall.half, digits=2)} points"
    return Finding(f"peak-{setup}", text, holds, stat, scope, "accuracy_epochs", importance)


def _stretches(epochs: list[int]) -> list[list[int]]:
    """Consecutive epochs grouped: [1, 2, 3, 7] -> [[1, 2, 3], [7]]."""
    groups: list[list[int]] = []
    for e in epochs:
        if groups and groups[-1][-1] == e - 1:
            groups[-1].append(e)
        else:
            groups.append([e])
    return groups


def _sustained(epochs: list[int], last: int) -> list[int]:
    """The epochs in stretches of at least two consecutive epochs, or ending at the last
    epoch (the last-epoch comparison says the same): with a test at every epoch, one lone
    clear epoch in ten is what chance alone gives at 95 %."""
    return [e for g in _stretches(epochs) if len(g) >= 2 or g[-1] == last for e in g]


def compare_best(fr: Frames, a: str, b: str, lv: float) -> Finding | None:
    """The comparison with each setup stopped at its own best epoch (the mean curve's)."""
    pa, pb = peak(fr, a, lv), peak(fr, b, lv)
    if pa is None or pb is None or pa.last_epoch < 2:
        return None
    va = fr.at_epoch(a, lv, "test_acc", pa.epoch)
    vb = fr.at_epoch(b, lv, "test_acc", pb.epoch)
    d = paired(va, vb, fr.n_test)
    values = (
        f"{acc(pa.value)} under {a} (epoch {pa.epoch}) against {acc(pb.value)} under {b} "
        f"(epoch {pb.epoch})"
    )
    if d.clear:
        worse = a if d.mean < 0 else b
        text = f"Stopped at each setup's best epoch, {worse} still {_costs(worse)} more: {values}."
    else:
        text = (
            f"Stopped at each setup's best epoch, the data cannot tell which costs more: {values}."
        )
    stat = f"paired difference at the best epochs {pm(d.mean, d.half, digits=2)} points"
    return Finding("compare-best", text, d.clear, stat, fr.scope, "table", 83)


def above_clean(fr: Frames, setup: str, lv: float) -> Finding | None:
    """A noisy level that ends clearly above the clean runs (noise acting as augmentation)."""
    noisy, clean = fr.last(setup, lv, "test_acc"), fr.last(setup, 0.0, "test_acc")
    if noisy.empty or clean.empty:
        return None
    d = paired(noisy, clean, fr.n_test)
    if not (d.clear and d.mean > 0):
        return None
    text = (
        f"{_label(setup)} at X = {x(lv)} {verb(setup, 'ends', 'end')} above the clean runs: "
        f"{acc(_mean(noisy))} "
        f"against {acc(_mean(clean))}."
    )
    stat = f"paired difference {pm(d.mean, d.half, digits=2)} points"
    return Finding(f"above-clean-{setup}", text, True, stat, fr.scope, "table", 82)


def memorising(fr: Frames, setup: str, lv: float) -> Finding | None:
    """Memorising the noisy labels: how often the network predicts the wrong label it was
    trained on, for the training images whose label the noise changed (fit_noisy)."""
    p = peak(fr, setup, lv)
    table = fr.curves(setup, lv, "fit_noisy")
    if p is None or table.empty or p.epoch not in table.columns:
        return None
    table = table.ffill(axis=1)
    last = int(table.columns[-1])
    rise = paired(table[last], table[p.epoch])
    at_peak, at_last = float(table[p.epoch].mean()), float(table[last].mean())
    if p.epoch != last and rise.clear and rise.mean > 0 and at_last > fr.chance:
        text = (
            f"Under {setup} at X = {x(lv)}, the network memorises the noisy labels after its "
            f"peak: of the training images whose label was changed, it predicts that wrong "
            f"label for {acc(at_peak)} at epoch {p.epoch} and {acc(at_last)} at the last epoch."
        )
        holds = True
    elif at_last <= fr.chance:
        text = (
            f"Under {setup} at X = {x(lv)}, the network has not memorised the noisy labels: it "
            f"predicts the changed (wrong) label for {acc(at_last)} of the training images "
            f"whose label was changed, no more often than a random guess would "
            f"({acc(fr.chance)})."
        )
        holds = True
    elif p.epoch == last:
        text = (
            f"Under {setup} at X = {x(lv)}, the network predicts the changed (wrong) label for "
            f"{acc(at_last)} of the training images whose label was changed "
            f"(chance: {acc(fr.chance)})."
        )
        holds = True
    else:
        text = (
            f"Under {setup} at X = {x(lv)}, the data cannot tell whether the network memorises "
            f"more noisy labels after its peak: it predicts the changed (wrong) label for "
            f"{acc(at_peak)} of the training images whose label was changed at epoch {p.epoch} and "
            f"{acc(at_last)} at the last epoch."
        )
        holds = False
    stat = f"paired rise {pm(rise.mean, rise.half, digits=2)} points"
    return Finding("memorising", text, holds, stat, fr.scope, "fitting-noise", 86)


def _epoch_runs(epochs: list[int]) -> str:
    parts = [f"{g[0]}" if len(g) == 1 else f"{g[0]}–{g[-1]}" for g in _stretches(epochs)]
    word = "epoch" if len(epochs) == 1 else "epochs"
    return f"{word} {listing(parts)}"


def compare_over_epochs(fr: Frames, a: str, b: str, lv: float) -> Finding | None:
    """How the comparison at level lv changes with training length, epoch by epoch."""
    ta, tb = fr.curves(a, lv, "test_acc"), fr.curves(b, lv, "test_acc")
    if ta.empty or tb.empty:
        return None
    epochs = [int(e) for e in ta.columns if e in tb.columns]
    if len(epochs) < 2:
        return None
    n_test = fr.n_test
    sign = {e: paired(ta[e], tb[e], n_test).sign for e in epochs}
    last = epochs[-1]
    a_worse = _sustained([e for e in epochs if sign[e] < 0], last)
    b_worse = _sustained([e for e in epochs if sign[e] > 0], last)
    where = f"at X = {x(lv)}"
    if a_worse and b_worse:
        text = (
            f"Which setup costs more {where} changes with training length: {a} {_costs(a)} "
            f"clearly more at {_epoch_runs(a_worse)}, {b} at {_epoch_runs(b_worse)}."
        )
        holds = True
    elif a_worse or b_worse:
        worse, clear = (a, a_worse) if a_worse else (b, b_worse)
        if clear == epochs[epochs.index(clear[0]) :]:
            text = (
                f"{_label(worse)} {_costs(worse)} clearly more {where} at every epoch from "
                f"{clear[0]} on."
            )
        else:
            text = (
                f"{_label(worse)} {_costs(worse)} clearly more {where} at {_epoch_runs(clear)} "
                f"of the {len(epochs)} measured; the data cannot tell at the others."
            )
        holds = True
    else:
        text = (
            f"At no stretch of epochs up to epoch {last} can the data tell which setup costs "
            f"more {where}."
        )
        holds = False
    stat = "paired difference per epoch over seeds; a sign counts over two or more epochs in a row"
    return Finding("compare-epochs", text, holds, stat, fr.scope, "accuracy_epochs", 84)


# --- mechanisms --------------------------------------------------------------------------
def _correct_share(noise: str, params: dict, lv: float, k: int) -> float | None:
    if noise == "labels.uniform":
        return 1 - lv if params.get("exclude_true") else 1 - lv * (k - 1) / k
    return None


def label_confidence(fr: Frames, setup: str, lv: float) -> Finding | None:
    spec = next(s for s in fr.study.setups if s.name == setup)
    share = _correct_share(spec.noise or "", spec.params, lv, fr.num_classes)
    conf = _mean(fr.last(setup, lv, "test_conf"))
    if share is None or not math.isfinite(conf):
        return None
    if abs(conf - share) < 0.05:
        relation = "close to"
    else:
        relation = "below" if conf < share else "above"
    text = (
        f"At X = {x(lv)}, the mean test confidence of the models trained with {setup}, "
        f"{acc(conf)}, is {relation} the {acc(share)} of training labels that are correct."
    )
    return Finding("label-confidence", text, True, "means over seeds", fr.scope, "calibration", 70)


def cross_entropy(fr: Frames, a: str, b: str, lv: float) -> Finding | None:
    la, lb = fr.last(a, lv, "test_loss"), fr.last(b, lv, "test_loss")
    if la.empty or lb.empty:
        return None
    d = paired(la, lb)
    uniform = math.log(fr.num_classes)
    values = (
        f"{nats(_mean(la))} nats under {a} and {nats(_mean(lb))} under {b}, "
        f"against {nats(uniform)} for a uniform guess"
    )
    if d.n >= 2 and d.clear:
        higher = a if d.mean > 0 else b
        text = f"Test cross-entropy at X = {x(lv)} is higher under {higher}: {values}."
        holds = True
    elif d.n >= 2:
        text = f"The data cannot tell which setup has the higher test cross-entropy: {values}."
        holds = False
    else:
        text = f"Test cross-entropy at X = {x(lv)} is {values} (one seed, not compared)."
        holds = False
    stat = f"paired difference {pm(d.mean, d.half, 1, 3)} nats"
    return Finding("cross-entropy", text, holds, stat, fr.scope, "final_loss", 55)


def pixel_background(fr: Frames, setup: str, lv: float) -> list[Finding]:
    spec = next(s for s in fr.study.setups if s.name == setup)
    share = (fr.meta.get("changed_share") or {}).get(setup)
    if spec.noise != "pixels.replace" or share is None:
        return []
    out = []
    background = fr.meta.get("background_share")
    if background is not None and spec.params.get("values", "data") == "data":
        much = "mostly" if background > 0.5 else "often"
        text = (
            f"{acc(background)} of the training images' pixels are background (exactly 0), so "
            f"a replacement drawn from those pixels is {much} background too: only "
            f"{acc(share)} of replaced pixels change value."
        )
        out.append(
            Finding(
                "background", text, True, "measured on the training set", fr.scope, "examples", 66
            )
        )
    else:
        text = f"Only {acc(share)} of the pixels that {setup} replaces change value."
        out.append(
            Finding(
                "background", text, True, "measured on the training set", fr.scope, "examples", 66
            )
        )
    text = f"So at X = {x(lv)}, only about {acc(lv * share)} of each training image really differs."
    out.append(Finding("differs", text, True, "X × changed share", fr.scope, "examples", 65))
    return out


def no_information(fr: Frames) -> list[Finding]:
    setups = [s for s in fr.study.setups if s.noise in NO_INFORMATION and 1.0 in fr.levels(s.name)]
    if not setups:
        return []
    why = listing([f"{NO_INFORMATION[s.noise]} under {s.name}" for s in setups])
    first = Finding(
        "no-information",
        f"At X = 100 % the training data carry no information about the true class: {why}.",
        True,
        "the noise's definition",
        fr.scope,
        None,
        59,
    )
    n_test = fr.n_test
    parts, sides = [], []
    for s in setups:
        values = fr.last(s.name, 1.0, "test_acc")
        mean, half, n = mean_half(values - fr.chance)
        error = half if n >= 2 else binomial_half(fr.chance, n_test)
        side = (
            ""
            if not math.isfinite(error) or abs(mean) <= error
            else ("above" if mean > 0 else "below")
        )
        sides.append(side)
        parts.append(f"{acc(_mean(values))} under {s.name}")
    holds = not any(sides)  # no setup can be told from chance
    if holds:
        text = (
            f"Test accuracy there cannot be told from chance ({acc(fr.chance)}): {listing(parts)}."
        )
    else:
        clear = [
            f"{side} chance under {s.name}" for s, side in zip(setups, sides, strict=True) if side
        ]
        text = (
            f"Test accuracy there is {listing(parts)}, against {acc(fr.chance)} by guessing: "
            f"clearly {listing(clear)}."
        )
    second = Finding(
        "at-chance",
        text,
        holds,
        "mean − chance, 95 % t (or binomial, one seed)",
        fr.scope,
        "final_accuracy",
        58,
    )
    return [first, second]


def intervals(fr: Frames) -> Finding:
    n_test = fr.n_test
    error = binomial_half(0.9, n_test)
    images = f"{n_test:,}" if n_test else "the"
    if len(fr.seeds) >= 2:
        text = (
            f"Every ± is a 95 % t-interval over the {len(fr.seeds)} seeds (for a comparison, of "
            "the per-seed difference); it leaves out the test set's own sampling error, about "
            f"±{pts(error)} at 90 % accuracy on {images} images."
        )
    else:
        text = (
            "With one seed there are no intervals: a difference counts only when it exceeds the "
            f"test set's sampling error, about {pts(error)} at 90 % accuracy on {images} images."
        )
    return Finding("intervals", text, True, "binomial, 95 %", fr.scope, "table", 57)


def diverged(fr: Frames) -> Finding | None:
    finished = fr.runs[fr.runs.status.isin(["done", "diverged"])]
    bad = int((finished.status == "diverged").sum())
    if not bad:
        return None
    text = f"{bad} of {len(finished)} finished runs diverged; their curves stop at the divergence."
    return Finding("diverged", text, True, "run status", fr.scope, "table", 95)


# --- the section -------------------------------------------------------------------------
def summary(fr: Frames) -> list[Finding]:
    """The Summary's findings, most important first; [] when no run has finished."""
    if fr.shown.empty:
        return []
    found: list[Finding | None] = [data_scope(fr), training_scope(fr), clean_test(fr)]
    found += definitions(fr)
    found.append(diverged(fr))
    setups = [s for s in fr.setups if fr.levels(s)]
    pair = setups[:2]
    lv = middle_level(fr, pair) if pair else None
    found.append(ranking(fr, setups))
    found += methods(fr)
    if lv is not None:
        if len(pair) == 2:
            a, b = pair
            found += compare_last(fr, a, b, lv)
            found.append(compare_levels(fr, a, b))
            found.append(compare_over_epochs(fr, a, b, lv))
            found.append(compare_best(fr, a, b, lv))
            found.append(cross_entropy(fr, a, b, lv))
        for i, s in enumerate(pair):
            found.append(peak_then_fall(fr, s, lv, 87 - 2 * i))
        labels = [s for s in pair if (fr.noise_of(s) or "").startswith("labels.")]
        pixels = [s for s in pair if fr.noise_of(s) == "pixels.replace"]
        found += [above_clean(fr, s, lv) for s in pair]
        if labels:
            found.append(label_confidence(fr, labels[0], lv))
            found.append(memorising(fr, labels[0], lv))
        if pixels:
            found += pixel_background(fr, pixels[0], lv)
    found += no_information(fr)
    # what the intervals leave out closes the Summary, whatever else is cut for length
    return capped(ordered(found), MOST_SENTENCES - 1) + [intervals(fr)]


MOST_SENTENCES = 20


def capped(findings: list[Finding], most: int) -> list[Finding]:
    """The most important findings that fit in `most` sentences."""
    kept, sentences = [], 0
    for f in findings:
        n = f.text.count(". ") + 1
        if sentences + n <= most:
            kept.append(f)
            sentences += n
    return kept


def best_epoch_row(fr: Frames, setup: str, lv: float) -> tuple[str, str]:
    """(value, epoch) of the mean curve's best test accuracy, as the table writes them."""
    p = peak(fr, setup, lv)
    if p is None:
        return "—", "—"
    table = fr.curves(setup, lv, "test_acc").ffill(axis=1)
    mean, half, _ = mean_half(table[p.epoch])
    return pm(mean, half), str(p.epoch)
