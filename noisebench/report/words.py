"""The report's wording helpers: how numbers, levels and noises are written in sentences.

One meaning per word: "memorising the noisy labels" is the network predicting the wrong label
it was trained on (per epoch); "fitting random labels" is reaching a training accuracy on
labels that carry no information; "peak then fall" is test accuracy falling after its best
epoch. "Measurement" is what a run records; "section" is a part of the report.
"""

from __future__ import annotations

import math

from ..summary import Estimate


# --- numbers ------------------------------------------------------------------------------
def x(level: float) -> str:
    return f"{level * 100:.0f} %"


def acc(value: float) -> str:
    return f"{value * 100:.1f} %"


def pct(e: Estimate) -> str:
    """'71.2 ± 3.1 %' (no ± with one seed)."""
    if not math.isfinite(e.half):
        return acc(e.mean)
    return f"{e.mean * 100:.1f} ± {e.half * 100:.1f} %"


def signed(e) -> str:
    """'+12.3 ± 1.0 points' of an Estimate or a paired difference (no ± with one seed)."""
    half = f" ± {e.half * 100:.1f}" if math.isfinite(e.half) else ""
    return f"{e.mean * 100:+.1f}{half} points"


def pts(value: float) -> str:
    """A difference of two percentages, in percentage points."""
    return f"{value * 100:.1f} points"


def nats(value: float) -> str:
    return f"{value:.2f}"


def pm(mean: float, half: float, scale: float = 100.0, digits: int = 1) -> str:
    """'85.6 ± 1.5' with an interval, '85.6' without (one seed)."""
    if not math.isfinite(half):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


def count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def verb(subject: str, singular: str, plural: str) -> str:
    """The form that agrees with a setup's name: 'label noise costs', 'uniform labels cost'."""
    last = subject.split()[-1].lower() if subject.strip() else ""
    # a last word in -s is a plural noun ("labels", "pixels") unless in -ss, -us, -is, -as
    many = last.endswith("s") and not last.endswith(("ss", "us", "is", "as"))
    return plural if many else singular


# --- levels -------------------------------------------------------------------------------
def levels_text(levels: list[float]) -> str:
    """'X = 10 %', 'X = 10 and 30 %', 'X = 10, 30 and 50 %'."""
    nums = [f"{lv * 100:.0f}" for lv in levels]
    if len(nums) == 1:
        return f"X = {nums[0]} %"
    return f"X = {', '.join(nums[:-1])} and {nums[-1]} %"


def span(levels: list[float]) -> str:
    if len(levels) == 1:
        return f"X = {x(levels[0])}"
    return f"X = {levels[0] * 100:.0f}–{x(levels[-1])}"


def runs_of(levels: list[float], members: list[float]) -> str:
    """`members` of the ordered `levels` written as ranges of neighbours: 'X = 10–50 and 90 %'."""
    groups: list[list[float]] = []
    for lv in levels:
        if lv in members:
            if groups and levels.index(groups[-1][-1]) == levels.index(lv) - 1:
                groups[-1].append(lv)
            else:
                groups.append([lv])
    parts = [
        f"{g[0] * 100:.0f}" if len(g) == 1 else f"{g[0] * 100:.0f}–{g[-1] * 100:.0f}"
        for g in groups
    ]
    if not parts:
        return ""
    if len(parts) == 1:
        return f"X = {parts[0]} %"
    return f"X = {', '.join(parts[:-1])} and {parts[-1]} %"


def listing(items: list[str], most: int | None = None) -> str:
    """'a, b and c'; beyond `most` items, the rest as 'N more'."""
    if most is not None and len(items) > most:
        items = items[:most] + [f"{len(items) - most} more"]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# --- estimates (the sections' Estimate objects) -------------------------------------------
def has_ci(*ests: Estimate) -> bool:
    return all(math.isfinite(e.half) for e in ests)


# --- noises in words ----------------------------------------------------------------------
def noise_words(noise: str | None, params: dict, classes: int) -> str:
    """What a noise does to the training data at level X, as a clause: 'X % of ...'."""
    values = params.get("values", "data")
    drawn = (
        f"the other {classes - 1} classes"
        if params.get("exclude_true")
        else f"the {classes} classes (sometimes the true one again)"
    )
    said = {
        "labels.uniform": (
            f"X % of the training images get a new label drawn at random from {drawn}, once "
            "before training"
        ),
        "labels.shuffle": "the labels of X % of the training images are shuffled among them",
        "labels.pairflip": "X % of the training images are moved to one fixed other class",
        "labels.matrix": "X % of the training images are relabelled by a class-to-class table",
        "labels.feature": (
            "the X % of training images a reference model finds most confusing get that "
            "model's wrong guess as their label"
        ),
        "labels.dilution": "X noisy copies with random labels are added per clean image",
        "pixels.replace": (
            "X % of each training image's pixels are replaced, anew at every step, by "
            + (
                "values drawn from the training images' own pixels"
                if values == "data"
                else "uniformly random values"
            )
        ),
        "pixels.gaussian": "X % of each training image's pixels get added Gaussian noise",
        "pixels.saltpepper": "X % of each training image's pixels are set to black or white",
        "pixels.shuffle": "X % of each training image's pixel positions are shuffled",
        "images.random": "X % of the training images are replaced whole by random noise",
    }
    return said.get(noise or "", f"the noise {noise} is applied at level X")
