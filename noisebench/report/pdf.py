"""The PDF: reportlab platypus on A4 — text, the metrics table, then every figure scaled to fit.

Each page carries "page N of M" in its footer (drawn after layout, so M is the real count).
"""

from __future__ import annotations

import html
from pathlib import Path

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import (
    CondPageBreak,
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from .figures import FigureFile
from .render import TABLE_TITLE, Content

MARGIN = 16 * mm
FOOTER = "noisebench report"


class NumberedCanvas(rl_canvas.Canvas):
    """Defers pages so the footer can say 'page N of M'."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pages: list[dict] = []

    def showPage(self) -> None:  # noqa: N802 - reportlab's name
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for number, state in enumerate(self._pages, 1):
            self.__dict__.update(state)
            self.setFont("Helvetica", 8)
            self.setFillColor(colors.grey)
            self.drawRightString(A4[0] - MARGIN, 9 * mm, f"{FOOTER} — page {number} of {total}")
            super().showPage()
        super().save()


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=base["BodyText"], fontSize=9.5, leading=13, spaceAfter=5)
    return {
        "title": base["Title"],
        "h2": ParagraphStyle("h2", parent=base["Heading2"], spaceBefore=10),
        "title2": ParagraphStyle("title2", parent=base["Heading1"], spaceAfter=6),
        "body": body,
        "small": ParagraphStyle("small", parent=body, fontSize=8, leading=10),
        "cell": ParagraphStyle("cell", parent=body, fontSize=7.5, leading=9),
        "notice": ParagraphStyle(
            "notice",
            parent=body,
            fontName="Helvetica-Bold",
            textColor=colors.HexColor("#7a2e00"),
            backColor=colors.HexColor("#fff1e6"),
            borderColor=colors.HexColor("#D55E00"),
            borderWidth=2,
            borderPadding=6,
            spaceBefore=6,
            spaceAfter=10,
        ),
    }


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    return Paragraph(html.escape(text, quote=False), style)


def _figure(png: Path, width: float, max_height: float) -> Image:
    w, h = ImageReader(str(png)).getSize()
    scale = min(width / w, max_height / h)
    return Image(str(png), width=w * scale, height=h * scale)


def write_pdf(c: Content, path: Path) -> Path:
    st = _styles()
    doc = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN + 4 * mm,
        title=c.title,
        author="noisebench",
    )
    width, height = doc.width, doc.height
    story: list = [_p(c.title, st["title"]), _p(c.subtitle, st["small"]), Spacer(1, 4 * mm)]
    story += [_p(n, st["notice"]) for n in c.notices]
    story += [_p("Summary", st["h2"])]
    story += [_p(" ".join(para), st["body"]) for para in c.paragraphs]

    story += [_p(TABLE_TITLE, st["h2"])]
    rows = [[_p(h, st["cell"]) for h in c.table_head]]
    rows += [[_p(v, st["cell"]) for v in row] for row in c.table_rows]
    col = [0.14, 0.07, 0.15, 0.08, 0.15, 0.15, 0.14, 0.07]
    if len(c.table_head) > len(col):  # a training-size column after X
        col = [0.13, 0.06, 0.09, 0.13, 0.07, 0.13, 0.13, 0.12, 0.06]
    tbl = Table(rows, colWidths=[f * width for f in col], repeatRows=1)
    tbl.setStyle(
        TableStyle(
            [
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
                ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.lightgrey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    story += [tbl, Spacer(1, 2 * mm), _p(c.table_note, st["small"]), Spacer(1, 4 * mm)]

    def figure(f: FigureFile) -> KeepTogether:
        return KeepTogether(
            [
                _p(f"Figure {c.number(f)}: {f.title}", st["h2"]),
                _figure(f.png, width, height * 0.62),
                Spacer(1, 2 * mm),
                _p(f.caption, st["small"]),
                Spacer(1, 4 * mm),
            ]
        )

    story += [figure(f) for f in c.figures]
    for s in c.sections:
        story += [CondPageBreak(height * 0.35), _p(s.title, st["title2"])]
        story += [_p(para, st["body"]) for para in s.paragraphs]
        story += [figure(f) for f in s.figures]
        if s.table_rows:
            story += [_table(s.table_head, s.table_rows, st, width), Spacer(1, 4 * mm)]
    # last, as in the HTML and Markdown
    facts = Table(
        [[_p(k, st["cell"]), _p(v, st["cell"])] for k, v in c.facts],
        colWidths=[0.16 * width, 0.84 * width],
    )
    facts.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story += [CondPageBreak(height * 0.3), _p("Data and configuration", st["h2"]), facts]
    doc.build(story, canvasmaker=NumberedCanvas)
    return path


def _table(head: list[str], rows: list[list[str]], st: dict, width: float) -> Table:
    """A section's table: the first column twice as wide as the others."""
    cells = [[_p(h, st["cell"]) for h in head]] + [[_p(v, st["cell"]) for v in r] for r in rows]
    unit = width / (len(head) + 1)
    tbl = Table(cells, colWidths=[2 * unit] + [unit] * (len(head) - 1), repeatRows=1)
    tbl.setStyle(
        TableStyle(
            [
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
                ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.lightgrey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    return tbl
