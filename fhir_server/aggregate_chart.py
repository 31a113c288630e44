"""The chart of the aggregates, drawn by hand as SVG (no plotting library): tests per day as bars
against the left axis, the positivity rate as a line against the right one, over the days asked.

It is meant to be read by people on a phone as on a screen: a 320-unit-wide drawing (text is
12 units: about 11 CSS px at 320 px wide), French words and numbers, few ticks. For assistive
technologies: `role="img"` named by its `<title>` and described by a `<desc>` giving the totals,
the busiest day and the last day; each bar carries its day's figures in a `<title>` (a tooltip).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from xml.sax.saxutils import escape

from .aggregates import Day, positivity

WIDTH, HEIGHT = 320, 240
LEFT, RIGHT, TOP, BOTTOM = 46, 42, 40, 30  # margins: tick labels left and right, legend, dates
STEPS = (1, 2, 4, 6, 8, 10)  # axis tops (times a power of ten) whose halves are round too
BAR, LINE, INK, GRID = "#3d6aa2", "#b03a00", "#1e1e1e", "#c8c8c8"


def french_integer(value: int) -> str:
    return f"{value:,}".replace(",", "\u202f")  # a narrow no-break space between thousands


def french_percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}".replace(".", ",") + "\u00a0%"


def french_day(day: date, year: bool = True) -> str:
    return day.strftime("%d/%m/%Y" if year else "%d/%m")


def svg(days: Sequence[Day], scope: str, chart_id: str = "graphique", declaration: bool = True) -> str:
    """The chart of `days` (consecutive, at least one), `scope` saying what they count (e.g.
    "France entière, tous types de test"). `chart_id` prefixes the ids of its title and
    description (unique in a page); `declaration` False for an SVG inlined in HTML."""
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top_tests = _nice(max((d.T for d in days), default=0), minimum=2)
    top_rate = _nice(max((d.positivity or 0 for d in days), default=0), minimum=4)
    step = plot_width / len(days)
    x = [LEFT + step * (index + 0.5) for index in range(len(days))]

    def y_tests(value: float) -> float:
        return TOP + plot_height * (1 - value / top_tests)

    def y_rate(value: float) -> float:
        return TOP + plot_height * (1 - value / top_rate)

    parts = [
        f'<title id="{chart_id}-titre">{escape(_title(days, scope))}</title>',
        f'<desc id="{chart_id}-desc">{escape(describe(days, scope))}</desc>',
        *_grid(top_tests, top_rate, y_tests),
        *_bars(days, x, step, y_tests),
        _line(days, x, y_rate),
        *_date_labels(days, x),
        *_legend(),
    ]
    head = '<?xml version="1.0" encoding="UTF-8"?>\n' if declaration else ""
    return (
        f'{head}<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-titre {chart_id}-desc" font-family="DejaVu Sans, Arial, sans-serif" '
        f'font-size="12" fill="{INK}" class="graphique">' + "".join(parts) + "</svg>\n"
    )


def _title(days: Sequence[Day], scope: str) -> str:
    return (
        f"Tests et taux de positivité par jour de prélèvement, du {french_day(days[0].jour)} "
        f"au {french_day(days[-1].jour)} — {scope}"
    )


def describe(days: Sequence[Day], scope: str) -> str:
    """The chart in words: what a screen reader says, and the page's summary."""
    tests, positives = sum(d.T for d in days), sum(d.P for d in days)
    text = (
        f"{scope}, du {french_day(days[0].jour)} au {french_day(days[-1].jour)} : "
        f"{counted(tests, 'test')}, dont {counted(positives, 'positif')}, "
        f"taux de positivité {french_percent(positivity(positives, tests))}."
    )
    if tests:
        busiest = max(days, key=lambda d: d.T)
        last = days[-1]
        text += (
            f" Jour le plus chargé : {french_day(busiest.jour)}, {counted(busiest.T, 'test')}."
            f" Dernier jour : {french_day(last.jour)}, {counted(last.T, 'test')}, "
            f"taux de positivité {french_percent(last.positivity)}."
        )
    return text


def _nice(value: float, minimum: float) -> float:
    """The axis' top: one of STEPS times a power of ten, at or above `value`."""
    value = max(value, minimum)
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in STEPS if m * power >= value)


def counted(value: int, word: str) -> str:
    """ "1 test", "0 test", "1 200 tests" (French: the plural from 2 on)."""
    return f"{french_integer(value)} {word}{'s' if value >= 2 else ''}"


def compact(value: float) -> str:
    """A tick label that fits the margin: 9 500, 125 k, 1,5 M (the exact figures are in the
    bars' titles and the description)."""
    for size, unit in ((1_000_000, "M"), (10_000, "k")):
        if value >= size:
            scaled = value / (size if unit == "M" else 1000)
            text = f"{scaled:.2f}".rstrip("0").rstrip(".").replace(".", ",")
            return f"{text}\u00a0{unit}"
    return french_integer(round(value))


def _grid(top_tests: float, top_rate: float, y_tests) -> list[str]:
    parts = []
    for fraction in (0, 0.5, 1):
        y = y_tests(top_tests * fraction)
        tests, rate = top_tests * fraction, top_rate * fraction
        rate_text = f"{rate:g}".replace(".", ",") + "\u00a0%"
        parts += [
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}" stroke-width="1"/>',
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{escape(compact(tests))}</text>',
            f'<text x="{WIDTH - RIGHT + 4}" y="{y + 4:.1f}" font-size="11">{escape(rate_text)}</text>',
        ]
    return parts


def _bars(days: Sequence[Day], x: list[float], step: float, y_tests) -> list[str]:
    width = max(step * 0.75, 0.5)
    bars = []
    for day, center in zip(days, x, strict=True):
        top = y_tests(day.T)
        label = (
            f"{french_day(day.jour)} : {counted(day.T, 'test')}, {counted(day.P, 'positif')}, "
            f"taux {french_percent(day.positivity)}"
        )
        bars.append(
            f'<rect x="{center - width / 2:.2f}" y="{top:.2f}" width="{width:.2f}" '
            f'height="{y_tests(0) - top:.2f}" fill="{BAR}"><title>{escape(label)}</title></rect>'
        )
    return bars


def _line(days: Sequence[Day], x: list[float], y_rate) -> str:
    """The positivity line, broken over the days without a test (no rate to draw)."""
    path, drawing = [], False
    for day, center in zip(days, x, strict=True):
        if day.positivity is None:
            drawing = False
            continue
        path.append(f"{'L' if drawing else 'M'}{center:.2f} {y_rate(day.positivity):.2f}")
        drawing = True
    return f'<path d="{" ".join(path)}" fill="none" stroke="{LINE}" stroke-width="2" stroke-linejoin="round"/>'


def _date_labels(days: Sequence[Day], x: list[float]) -> list[str]:
    """Four or five days along the bottom, the first and the last among them."""
    count = len(days)
    picks = sorted({0, count - 1, *(round(count * k / 4) for k in (1, 2, 3))} & set(range(count)))
    if count > 1 and len(picks) > 1 and picks[-1] - picks[-2] < count / 8:
        picks.pop(-2)  # too close to the last label to be read apart
    y = HEIGHT - BOTTOM + 16
    return [
        f'<text x="{x[i]:.1f}" y="{y}" text-anchor="{_anchor(i, count)}">'
        f"{escape(french_day(days[i].jour, year=False))}</text>"
        for i in picks
    ]


def _anchor(index: int, count: int) -> str:
    return "start" if index == 0 and count > 1 else "end" if index == count - 1 and count > 1 else "middle"


def _legend() -> list[str]:
    return [
        f'<rect x="4" y="6" width="12" height="12" fill="{BAR}"/>',
        '<text x="20" y="16">Tests par jour</text>',
        f'<line x1="128" x2="148" y1="12" y2="12" stroke="{LINE}" stroke-width="2"/>',
        '<text x="152" y="16">Taux de positivité</text>',
        f'<text x="{LEFT}" y="{TOP - 6}" font-size="11">Tests</text>',
        f'<text x="{WIDTH - RIGHT + 4}" y="{TOP - 6}" font-size="11" text-anchor="start">Taux</text>',
    ]
