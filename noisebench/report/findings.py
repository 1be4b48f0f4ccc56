"""Sentences that explain why (measured causes) and point out surprises in the numbers.

Each function reads stored numbers and returns one sentence, or None when the study has
nothing to say on the point; overlapping 95 % CIs are worded as uncertain.
"""

from __future__ import annotations

import math

from .data import LevelStats, ReportData, SetupInfo
from .words import acc, final_series, finite, has_ci, nats, pts, x

MEMORISATION_POINTS = 0.01  # best-minus-final accuracy that counts as "peaks then falls"


# --- why ----------------------------------------------------------------------------------
def changed_pixels(data: ReportData, setup: SetupInfo) -> str | None:
    """How much of an image a pixel noise really alters (meta changed_share, measured at X=1)."""
    share = (data.meta.get("changed_share") or {}).get(setup.name)
    if share is None or not math.isfinite(share):
        return None
    levels = [lv for lv in data.levels(setup.name) if 0 < lv < 1] or [1.0]
    mid = min(levels, key=lambda lv: abs(lv - 0.5))
    if share >= 0.9:
        return (
            f"Under {setup.name} nearly every pixel the noise touches changes value "
            f"({acc(share)}), so at X = {x(mid)} about {acc(mid * share)} of each image differs."
        )
    text = (
        f"{setup.name.capitalize()} corrupts less than its X suggests: only {acc(share)} of the "
        "pixels it touches actually change value"
    )
    images = data.examples.get(setup.name)
    same_distribution = (
        setup.noise == "pixels.replace" and setup.params.get("values", "data") == "data"
    )
    if images is not None and setup.levels and setup.levels[0] == 0 and same_distribution:
        background = float((images[0] == 0).mean())
        text += (
            f", because {acc(background)} of a clean image's pixels are background and values "
            "drawn from the data's own pixel distribution are mostly background too"
        )
    return text + f", so at X = {x(mid)} only about {acc(mid * share)} of each image differs."


def confidence(data: ReportData, labels: SetupInfo, others: list[SetupInfo]) -> str | None:
    """How sure the label-noise models are on the test set, against the label signal."""
    picked = _confidence_level(data, labels)
    if picked is None:
        return None
    lv, st = picked
    a1, c1 = st.final["test_acc"].mean, st.final["test_conf"].mean
    text = (
        f"At X = {x(lv)}, the models trained with {labels.name} are still right on {acc(a1)} "
        f"of test images but their mean confidence (max softmax) is only {acc(c1)}"
    )
    expected = true_label_share(data, labels, lv)
    if expected is not None:
        relation = "close to" if abs(c1 - expected) < 0.1 else "below" if c1 < expected else "above"
        text += f", {relation} the {acc(expected)} of training labels that are correct"
    return text + "."


def _confidence_level(data: ReportData, labels: SetupInfo) -> tuple[float, LevelStats] | None:
    levels = [lv for lv in data.levels(labels.name) if 0 < lv < 1]
    base = data.get(labels.name, 0.0)
    if not levels or base is None:
        return None
    lv = min(levels, key=lambda v: abs(v - 0.5))
    st = data.stats[(labels.name, lv)]
    values = [base.final[m].mean for m in ("test_acc", "test_loss")]
    values += [st.final[m].mean for m in ("test_acc", "test_loss", "test_conf")]
    if not all(math.isfinite(v) and v > 0 for v in values):
        return None
    return lv, st


def loss_outpaces(data: ReportData, labels: SetupInfo, others: list[SetupInfo]) -> str | None:
    """Cross-entropy against accuracy under label noise, and a pixel-noise contrast."""
    picked = _confidence_level(data, labels)
    if picked is None:
        return None
    lv, st = picked
    base = data.stats[(labels.name, 0.0)]
    a0, l0 = base.final["test_acc"].mean, base.final["test_loss"].mean
    a1, l1 = st.final["test_acc"].mean, st.final["test_loss"].mean
    c1 = st.final["test_conf"].mean
    loss_up, acc_down = l1 / l0 - 1, 1 - a1 / a0
    if loss_up > 2 * max(acc_down, 0):
        text = (
            f"Cross-entropy charges every low-confidence answer, so under {labels.name} it has "
            f"risen by {loss_up * 100:.0f} % ({nats(l0)} to {nats(l1)}) at X = {x(lv)} while "
            f"accuracy fell by only {acc_down * 100:.0f} %"
        )
    else:
        text = (
            f"Under {labels.name} at X = {x(lv)}, cross-entropy rose by {loss_up * 100:.0f} % "
            f"and accuracy fell by {acc_down * 100:.0f} %, so loss does not outpace accuracy here"
        )
    for other in others:
        ost = data.get(other.name, lv)
        if ost is None or not finite(ost.final["test_conf"]):
            continue
        oc, ol = ost.final["test_conf"].mean, ost.final["test_loss"].mean
        link = "whereas" if oc > c1 + 0.1 and ol < l1 else "and"
        verb = "keeps" if link == "whereas" else "has"
        text += (
            f", {link} {other.name} at the same X {verb} confidence at {acc(oc)} and "
            f"cross-entropy at {nats(ol)}"
        )
        break
    return text + "."


def true_label_share(data: ReportData, setup: SetupInfo, level: float) -> float | None:
    """Expected share of training labels equal to the true class under uniform label noise."""
    if setup.noise != "labels.uniform":
        return None
    k = data.num_classes
    if setup.params.get("exclude_true"):
        return 1 - level
    return 1 - level + level / k


def plurality(data: ReportData, setup: SetupInfo) -> str | None:
    """The true class stays the most frequent label; compare with where accuracy collapses."""
    if setup.noise != "labels.uniform" or data.get(setup.name, 0.0) is None:
        return None
    k = data.num_classes
    exclude = bool(setup.params.get("exclude_true"))
    limit = (k - 1) / k if exclude else 1.0
    mats = data.label_matrices.get(setup.name, {})
    probe = [lv for lv in mats if 0 < lv < limit]
    base = data.stats[(setup.name, 0.0)].final["test_acc"].mean
    halfway = data.chance + (base - data.chance) / 2
    series = final_series(data, setup.name, "test_acc")
    collapse = next((lv for lv, e in series if e.mean < halfway), None)
    at_chance = next((lv for lv, e in series if lv > 0 and e.low <= data.chance + 0.02), None)
    wrong = "1 − X" if exclude else "1 − X + X/K"
    text = (
        f"Under {setup.name} the true class remains the most frequent training label for every "
        f"X < {x(limit)} (share {wrong} against {'X/(K − 1)' if exclude else 'X/K'} for each "
        "wrong class"
    )
    if probe:
        hi = max(probe)
        m = mats[hi]
        text += (
            f"; measured at X = {x(hi)}: {acc(m.true_share)} true vs at most "
            f"{acc(m.max_wrong_share)} for any wrong label"
        )
    text += ")"
    if collapse is None or collapse >= limit:
        below = [(lv, e) for lv, e in series if 0 < lv < limit]
        text += (
            f", and accuracy indeed stays above half-way between clean ({acc(base)}) and "
            f"chance ({acc(data.chance)}) for every measured X < {x(limit)}"
        )
        if below:
            text += f" ({acc(below[-1][1].mean)} at X = {x(below[-1][0])})"
    else:
        text += (
            f"; yet accuracy already falls below half-way between clean ({acc(base)}) and "
            f"chance ({acc(data.chance)}) at X = {x(collapse)}, well before the label signal "
            "runs out"
        )
    if at_chance is not None:
        text += f"; at X = {x(at_chance)} it is indistinguishable from chance"
    return text + "."


# --- surprises -----------------------------------------------------------------------------
def beats_baseline(data: ReportData) -> str | None:
    """A noisy level above the clean baseline: a finding only when the CIs separate."""
    every = []
    for setup in data.setups:
        base = data.get(setup.name, 0.0)
        if base is None:
            continue
        b = base.final["test_acc"]
        for lv in data.levels(setup.name):
            e = data.stats[(setup.name, lv)].final["test_acc"]
            if lv > 0 and finite(e) and finite(b):
                every.append((not e.overlaps(b), e.mean - b.mean, setup, lv, e, b))
    if not every:
        return None
    cands = [c for c in every if c[1] > 0]
    if not cands:
        _, gap, setup, lv, e, b = max(every, key=lambda c: c[1])
        return (
            "No noisy level scores above the clean baseline in final test accuracy; the "
            f"closest, {setup.name} at X = {x(lv)}, reaches {acc(e.mean)} against "
            f"{acc(b.mean)}."
        )
    sep, _, setup, lv, e, b = max(cands, key=lambda c: (c[0], c[1]))
    if not has_ci(e, b):
        return (
            f"{setup.name.capitalize()} at X = {x(lv)} scores above the clean baseline "
            f"({acc(e.mean)} vs {acc(b.mean)}), but with one seed that is uncertain."
        )
    if sep:
        return (
            f"Surprisingly, {setup.name} at X = {x(lv)} beats the clean baseline "
            f"({acc(e.mean)} vs {acc(b.mean)}, 95 % CIs separate), so a little noise acted as "
            "a regulariser here."
        )
    return (
        f"{setup.name.capitalize()} at X = {x(lv)} scores slightly above the clean baseline "
        f"({acc(e.mean)} vs {acc(b.mean)}), but the 95 % CIs overlap, so that is within noise."
    )


def memorisation(data: ReportData) -> str | None:
    """Test accuracy that peaks and then falls over epochs."""
    if data.epochs < 2:
        return None
    found: list[tuple[float, SetupInfo, float, LevelStats]] = []
    for setup in data.setups:
        for lv in data.levels(setup.name):
            st = data.stats[(setup.name, lv)]
            if finite(st.drop):
                found.append((st.drop.mean, setup, lv, st))
    if not found:
        return None
    sure = [f for f in found if f[0] >= MEMORISATION_POINTS and f[3].drop.low > 0]
    drop, setup, lv, st = max(sure or found, key=lambda f: f[0])
    if drop < MEMORISATION_POINTS:
        return (
            f"No level's test accuracy peaks and then falls over epochs by "
            f"{pts(MEMORISATION_POINTS)} or more (largest: {pts(max(drop, 0))}, {setup.name} "
            f"at X = {x(lv)})."
        )
    text = (
        f"Over epochs, test accuracy under {setup.name} at X = {x(lv)} peaks at "
        f"{acc(st.best_acc.mean)} (epoch {st.best_epoch:.0f} on average) and ends at "
        f"{acc(st.final['test_acc'].mean)}, {pts(drop)} lower"
    )
    if not sure:
        return text + ", but that drop's 95 % CI includes zero, so a peak-then-fall is uncertain."
    others = len(sure) - 1
    why = " as it fits the wrong labels" if setup.kind == "labels" else ""
    also = f" ({others} other setup × level {'shows' if others == 1 else 'show'} it too)"
    return (
        text
        + " (95 % CI of the drop excludes zero): more epochs made the model worse here"
        + why
        + (also if others else "")
        + "."
    )


def memorised_labels(data: ReportData, setup: SetupInfo) -> str | None:
    """Train accuracy on noisy labels above what predicting the true class would earn."""
    rows = []
    for lv in data.levels(setup.name):
        expected = true_label_share(data, setup, lv)
        tr = data.stats[(setup.name, lv)].final["train_acc"]
        if lv > 0 and expected is not None and finite(tr):
            rows.append((tr.mean - expected, lv, tr, expected))
    if not rows:
        return None
    excess, lv, tr, expected = max(rows, key=lambda r: r[0])
    if excess <= 0:
        return (
            f"Under {setup.name}, train accuracy against the noisy labels never exceeds the share "
            f"of labels that are correct (at most {pts(-excess)} short of it, at X = {x(lv)}), "
            "so the network has not started memorising wrong labels."
        )
    sure = tr.low > expected
    return (
        f"Under {setup.name} at X = {x(lv)}, train accuracy against the noisy labels reaches "
        f"{acc(tr.mean)}, {'above' if sure else 'slightly above'} the {acc(expected)} that "
        f"predicting every true class would earn, so the network "
        f"{'memorises' if sure else 'may be memorising'} some wrong labels"
        f"{'' if sure else ' (the 95 % CI includes that share)'}."
    )


def divergence(data: ReportData) -> str | None:
    counts = data.status_counts()
    finished = counts.get("done", 0) + counts.get("diverged", 0)
    if finished == 0:
        return None
    bad = [r for r in data.runs if r["status"] == "diverged"]
    if not bad:
        return f"None of the {finished} finished runs diverged."
    where = sorted({(r["setup"], r["level"]) for r in bad})
    listed = ", ".join(f"{s} at X = {x(lv)}" for s, lv in where[:4])
    more = f" and {len(where) - 4} more" if len(where) > 4 else ""
    return (
        f"{len(bad)} of {finished} finished runs diverged (non-finite loss): {listed}{more}; "
        "their curves stop at the last finite epoch."
    )
