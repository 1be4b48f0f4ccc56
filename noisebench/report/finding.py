"""A finding: one claim of the report, rendered from numbers, with the check behind it.

Every sentence the report writes is the `text` of a Finding. The builder of a finding runs
its check first and writes the sentence that the check allows: when the check fails, the
sentence itself says that the data cannot tell (never a confident claim with a caveat).
Findings are ordered by `importance` (highest first) within their section.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    key: str  # a stable name, e.g. "compare-last": tests and the renderer find it by this
    text: str  # the sentence(s), every number in it from the frames
    holds: bool  # the claim's check passed; False: `text` says what the data cannot tell
    statistic: str  # what supports it, e.g. "paired difference over 3 seeds, 95 % t"
    scope: str  # the data, seeds and epochs it covers
    ref: str | None = None  # the figure or table it refers to
    importance: int = 50  # higher comes first


def ordered(findings: list[Finding | None]) -> list[Finding]:
    """The findings that exist, most important first (stable for equal importance)."""
    present = [f for f in findings if f is not None]
    return sorted(present, key=lambda f: -f.importance)
