"""Shared look of every figure: colour-blind-safe colours used the same way everywhere.

One Okabe–Ito colour per setup (by its position in the study) and one viridis shade per noise
level (by the level's value, so the same X always gets the same shade).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .frames import SetupInfo  # noqa: E402

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
LEVEL_MAP = plt.get_cmap("viridis")
DPI = 150
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "noisebench",  # stable SVG ids
}


def setup_colour(setup: SetupInfo) -> str:
    return OKABE_ITO[setup.index % len(OKABE_ITO)]


def level_colour(level: float) -> tuple[float, float, float, float]:
    return LEVEL_MAP(0.9 * level)  # stop before viridis' pale yellow end


def pct_label(level: float) -> str:
    return f"X = {level * 100:.0f} %"


LINESTYLES = ["-", "--", "-."]
MARKERS = ["o", "s", "^"]


def setup_line(setup: SetupInfo) -> dict[str, str]:
    """Line style and marker of a setup's line: beyond the 7 colours, setups that share a
    colour differ in dashes and marker (a study can have a dozen setups)."""
    cycle = setup.index // len(OKABE_ITO)
    return {"linestyle": LINESTYLES[cycle % 3], "marker": MARKERS[cycle % 3]}
