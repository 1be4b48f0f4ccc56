"""The written explanation: small functions, each turning stored numbers into one sentence.

Nothing here is canned: every number is read from the store, every ordering is decided by the
numbers, and a comparison whose 95 % confidence intervals overlap is worded as uncertain.
`explain(data)` returns the sentences (at most MAX_SENTENCES) in reading order, and
`paragraphs(data)` the same sentences grouped by topic. The "why" and "surprise" sentences
live in findings.py; the sentences on curve fits over epochs (late loss slopes, logistic
plateaus) read the fits of fits.py.
"""

from __future__ import annotations

import math
from typing import Any

from ..noise import counts_copies
from .data import ReportData, SetupInfo
from .findings import (
    beats_baseline,
    changed_pixels,
    confidence,
    divergence,
    loss_outpaces,
    memorisation,
    memorised_labels,
    plurality,
)
from .fits import POOR, PROBLEMS, accuracy_fits, slopes
from .words import (
    acc,
    final_series,
    finite,
    has_ci,
    levels_text,
    nats,
    pts,
    span,
    steepest,
    within_noise,
    x,
)

MAX_SENTENCES = 20
MORE_EPOCHS = 0.01  # a fitted plateau this far above the last epoch: more epochs would help


# --- how fast things change -------------------------------------------------------------
def accuracy_trend(data: ReportData, setup: SetupInfo) -> str | None:
    series = [(lv, e) for lv, e in final_series(data, setup.name, "test_acc") if finite(e)]
    if len(series) < 2:
        return None
    (l0, e0), (l1, e1) = series[0], series[-1]
    fell = e1.mean < e0.mean
    if counts_copies(setup.noise):  # levels count noisy copies per example
        rate = abs(e1.mean - e0.mean) / (l1 - l0)
        text = (
            f"Under {setup.name}, final test accuracy {'falls' if fell else 'rises'} from "
            f"{acc(e0.mean)} without noisy copies to {acc(e1.mean)} with {l1:g} noisy copies "
            f"per example, {pts(rate)} per copy on average"
        )
        return text + within_noise(e0, e1) + "."
    rate = abs(e1.mean - e0.mean) / ((l1 - l0) * 10)
    a, b, steep = steepest(series, -1)
    text = (
        f"Under {setup.name}, final test accuracy {'falls' if fell else 'rises'} from "
        f"{acc(e0.mean)} at X = {x(l0)} to {acc(e1.mean)} at X = {x(l1)}, "
        f"{pts(rate)} per 10 % of X on average"
    )
    text += within_noise(e0, e1)
    if steep > 0 and len(series) > 2:
        text += (
            f"; the steepest drop is between X = {a * 100:.0f} and {x(b)} ({pts(steep)} per 10 %)"
        )
    return text + "."


def loss_trend(data: ReportData, setup: SetupInfo) -> str | None:
    series = [(lv, e) for lv, e in final_series(data, setup.name, "test_loss") if finite(e)]
    if len(series) < 2:
        return None
    e0, e1 = series[0][1], series[-1][1]
    verb = "rises" if e1.mean > e0.mean else "falls"
    a, b, steep = steepest(series, +1)
    text = f"Its test cross-entropy {verb} from {nats(e0.mean)} to {nats(e1.mean)} nats"
    text += within_noise(e0, e1)
    if steep > 0 and len(series) > 2 and not counts_copies(setup.noise):
        text += f", fastest between X = {a * 100:.0f} and {x(b)} (+{steep:.2f} per 10 %)"
    return text + "."


# --- which setup hurts more -------------------------------------------------------------
def compare(data: ReportData, a: SetupInfo, b: SetupInfo, metric: str) -> str | None:
    """Which of two setups is worse at equal X, where the order flips, and how sure we are."""
    shared = [lv for lv in data.levels(a.name) if lv > 0 and lv in data.levels(b.name)]
    rows = []
    for lv in shared:
        ea, eb = data.stats[(a.name, lv)].final[metric], data.stats[(b.name, lv)].final[metric]
        if finite(ea) and finite(eb) and ea.mean != eb.mean:
            a_worse = ea.mean < eb.mean if metric == "test_acc" else ea.mean > eb.mean
            rows.append((lv, a if a_worse else b, abs(ea.mean - eb.mean), not ea.overlaps(eb)))
    if not rows:
        return None
    what = "accuracy" if metric == "test_acc" else "cross-entropy"
    cost = "costs more accuracy" if metric == "test_acc" else "raises test cross-entropy more"
    gap = pts if metric == "test_acc" else (lambda v: f"{v:.2f} nats")
    segments: list[tuple[SetupInfo, list[float]]] = []
    for lv, worse, _, _ in rows:
        if segments and segments[-1][0] is worse:
            segments[-1][1].append(lv)
        else:
            segments.append((worse, [lv]))
    big = max(rows, key=lambda r: r[2])
    separated = [lv for lv, _, _, sep in rows if sep]
    overlapping = [lv for lv, _, _, sep in rows if not sep]
    with_ci = all(
        has_ci(data.stats[(a.name, lv)].final[metric], data.stats[(b.name, lv)].final[metric])
        for lv, *_ in rows
    )
    if len(segments) == 1:
        worse = segments[0][0]
        other = b if worse is a else a
        where = "at every shared level" if len(rows) > 1 else f"at {levels_text(segments[0][1])}"
        text = (
            f"At equal X, {worse.name} {cost} than {other.name} {where} "
            f"(largest gap {gap(big[2])} at X = {x(big[0])})"
        )
    else:
        parts = [f"{worse.name} at {span(lvls)}" for worse, lvls in segments]
        flips = [
            f"between X = {s0[1][-1] * 100:.0f} and {x(s1[1][0])}"
            for s0, s1 in zip(segments, segments[1:], strict=False)
        ]
        text = (
            f"Which setup hurts {what} more depends on X: the worse one is "
            f"{', then '.join(parts)}, so the order flips {' and '.join(flips)}"
        )
    if not with_ci:
        text += "; but with one seed there are no CIs, so this ordering is uncertain."
    elif len(separated) == len(rows):
        text += "; the 95 % CIs separate at every one of these levels."
    elif separated:
        text += (
            f"; the 95 % CIs separate at {levels_text(separated)} but overlap at "
            f"{levels_text(overlapping)}, where the difference is within noise."
        )
    else:
        text += "; but the 95 % CIs overlap everywhere, so this ordering is uncertain."
    return text


def one_seed(data: ReportData) -> str | None:
    if data.seeds_used == 1:
        return (
            "With a single seed per level there are no confidence intervals, so every "
            "comparison below is uncertain."
        )
    return None


# --- over epochs: curve fits ------------------------------------------------------------------
def _where(setup: str, level: float) -> str:
    return "the clean baseline" if level == 0 else f"{setup} at X = {x(level)}"


def _once(found: dict[tuple[str, float], Any]) -> list[tuple[str, float, Any]]:
    """(setup, level, value) in study order, the shared clean baseline only once."""
    out, seen_clean = [], False
    for (setup, level), value in sorted(found.items(), key=lambda kv: kv[0][1]):
        if level == 0:
            if seen_clean:
                continue
            seen_clean = True
        out.append((setup, level, value))
    return out


def rate(value: float) -> str:
    """A per-epoch change with two significant digits, never in scientific notation."""
    if value == 0 or not math.isfinite(value):
        return f"{value:.2f}"
    return f"{value:.{max(2, 1 - math.floor(math.log10(abs(value))))}f}"


def late_overfitting(data: ReportData) -> str | None:
    """Test loss rising while train loss falls over the last epochs (fitted slopes)."""
    found = _once(slopes(data))
    if not found:
        return None
    n = found[0][2].window
    sure = [f for f in found if f[2].overfitting]
    leaning = [f for f in found if f[2].leaning]
    if sure or leaning:
        setup, lv, s = max(sure or leaning, key=lambda f: f[2].test.mean)
        text = (
            f"Over the last {n} epochs the test loss of {_where(setup, lv)} rises by "
            f"{rate(s.test.mean)} nats per epoch while its train loss falls by "
            f"{rate(-s.train.mean)}"
        )
        what = "overfitting its training set" if lv == 0 else "fitting the noise"
        if not sure:
            why = "with one seed there are no CIs" if not s.certain else "a 95 % CI includes zero"
            return text + f", but {why}, so whether the network is {what} there is uncertain."
        others = len(sure) - 1
        also = f" ({others} other setup × level {'shows' if others == 1 else 'show'} it too)"
        return text + f" (95 % CIs exclude zero): the network is {what}{also if others else ''}."
    setup, lv, s = max(found, key=lambda f: f[2].test.mean)
    return (
        f"Over the last {n} epochs no test loss rises while its train loss falls, so no setup × "
        f"level shows late overfitting in the loss (steepest late test-loss slope: "
        f"{'+' if s.test.mean > 0 else ''}{rate(s.test.mean)} nats per epoch, "
        f"{_where(setup, lv)})."
    )


def plateaus(data: ReportData) -> str | None:
    """Where the fitted logistic says test accuracy levels off, against the last epoch."""
    found = _once(accuracy_fits(data))
    if not found:
        return None
    good = [f for f in found if f[2].ok]
    bad = [f for f in found if not f[2].ok]
    if bad:
        setup, lv, fit = min(bad, key=lambda f: (PROBLEMS.index(f[2].problem), -f[1]))
        r2 = f", R² = {fit.r2:.2f}" if fit.problem == POOR else ""
        poor = (
            f"{len(bad)} of {len(found)} curves are not fitted well enough to say (e.g. "
            f"{_where(setup, lv)} {fit.problem}{r2})"
        )
    if not good:
        return f"No test-accuracy curve is well described by a logistic in the epoch: {poor}."
    setup, lv, fit = max(good, key=lambda f: f[2].gain)
    text = (
        f"A logistic fitted to the mean test-accuracy curve of {_where(setup, lv)} levels off at "
        f"{acc(fit.plateau)} (95 % CI ± {pts(fit.plateau_half)}, R² = {fit.r2:.2f}), "
    )
    if fit.gain > max(fit.plateau_half, MORE_EPOCHS):
        text += (
            f"{pts(fit.gain)} above the last epoch's {acc(fit.last)}: more epochs would still "
            "help there"
        )
    elif fit.gain > MORE_EPOCHS:
        text += (
            f"{pts(fit.gain)} above the last epoch's {acc(fit.last)}, but that is within the "
            "plateau's 95 % CI, so more epochs may or may not help"
        )
    else:
        text = (
            f"Logistic fits of the mean test-accuracy curves put no plateau more than "
            f"{pts(MORE_EPOCHS)} above the last epoch at any of the {len(good)} well-fitted "
            f"setup × levels (largest: {'+' if fit.gain > 0 else ''}{pts(fit.gain)} for "
            f"{_where(setup, lv)}), so by these fits more epochs would add little"
        )
    return text + (f"; {poor}." if bad else ".")


TOPICS = ("how fast", "which hurts more", "why", "surprises")


def _ranked(data: ReportData) -> list[tuple[int, str, str | None]]:
    """(priority, topic, sentence) in reading order; lower priority numbers are kept first."""
    labels, pixels = data.of_kind("labels"), data.of_kind("pixels")
    out: list[tuple[int, str, str | None]] = [(0, "how fast", one_seed(data))]
    for setup in data.setups:
        out += [
            (1, "how fast", accuracy_trend(data, setup)),
            (3, "how fast", loss_trend(data, setup)),
        ]
    pairs = [(a, b) for i, a in enumerate(data.setups) for b in data.setups[i + 1 :]]
    pairs.sort(key=lambda p: p[0].kind == p[1].kind)  # label-vs-pixel pairs first
    for a, b in pairs[:3]:
        out += [
            (1, "which hurts more", compare(data, a, b, "test_acc")),
            (2, "which hurts more", compare(data, a, b, "test_loss")),
        ]
    out += [(2, "why", changed_pixels(data, setup)) for setup in pixels]
    for setup in labels:
        out += [
            (2, "why", confidence(data, setup, pixels)),
            (2, "why", loss_outpaces(data, setup, pixels)),
            (2, "why", plurality(data, setup)),
        ]
    out += [(2, "surprises", beats_baseline(data)), (2, "surprises", memorisation(data))]
    out += [(3, "surprises", memorised_labels(data, setup)) for setup in labels]
    out.append((3, "how fast", plateaus(data)))
    out.append((2, "surprises", late_overfitting(data)))
    out.append((3, "surprises", divergence(data)))
    return out


def paragraphs(data: ReportData) -> list[list[str]]:
    """The explanation as paragraphs (one per topic), at most MAX_SENTENCES sentences."""
    if not data.stats:
        return [["No run has finished yet, so there is nothing to explain."]]
    present = [(rank, i, topic, s) for i, (rank, topic, s) in enumerate(_ranked(data)) if s]
    keep = sorted(present, key=lambda r: (r[0], r[1]))[:MAX_SENTENCES]
    keep.sort(key=lambda r: r[1])
    grouped = [[s for _, _, t, s in keep if t == topic] for topic in TOPICS]
    return [g for g in grouped if g]


def explain(data: ReportData) -> list[str]:
    """The explanation's sentences in reading order."""
    return [s for para in paragraphs(data) for s in para]
