"""Charts as inline SVG drawn on the server: weekly lines and bars, and a heat map, that a
person reads at a glance.

No JavaScript and nothing fetched: the page's CSP forbids both, and an SVG written into
the HTML prints, zooms and works offline. Every text in a chart (title, axis labels,
series names) is passed in already translated; values are escaped by markupsafe.
"""
from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 250
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 34, 46
GRID = "#d8dde3"
INK = "#333"


@dataclass(frozen=True)
class Series:
    key: str                         # a stable name for tests and styling: "first_response"
    name: str                        # shown in the legend
    values: list[float | None]       # one per x label; None: nothing to show that week
    colour: str


@dataclass(frozen=True)
class Frame:
    """Where a chart's values land: y from 0 to y_max, x labels spread evenly."""

    count: int
    y_max: float

    @property
    def plot_width(self) -> float:
        return WIDTH - LEFT - RIGHT

    @property
    def plot_height(self) -> float:
        return HEIGHT - TOP - BOTTOM

    def x(self, index: int) -> float:
        step = self.plot_width / max(self.count, 1)
        return LEFT + step * (index + 0.5)

    def y(self, value: float) -> float:
        return TOP + self.plot_height * (1 - min(value, self.y_max) / self.y_max)


def _f(number: float) -> str:
    return f"{number:.1f}"


def _text(x: float, y: float, content, anchor: str = "middle", size: int = 11,
          extra: str = "") -> str:
    return (f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{INK}"{extra}>{escape(content)}</text>')


def _axes(frame: Frame, labels: list[str], y_label: str, tick_text) -> list[str]:
    parts = []
    for step in range(5):
        value = frame.y_max * step / 4
        y = frame.y(value)
        parts.append(f'<line x1="{LEFT}" y1="{_f(y)}" x2="{WIDTH - RIGHT}" y2="{_f(y)}" '
                     f'stroke="{GRID}" stroke-width="1"/>')
        parts.append(_text(LEFT - 6, y + 4, tick_text(value), anchor="end"))
    parts.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" '
                 f'stroke="{INK}" stroke-width="1"/>')
    parts.append(f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
                 f'y2="{HEIGHT - BOTTOM}" stroke="{INK}" stroke-width="1"/>')
    for index, label in enumerate(labels):
        parts.append(_text(frame.x(index), HEIGHT - BOTTOM + 16, label, size=10))
    parts.append(_text(14, TOP + frame.plot_height / 2, y_label, size=11,
                       extra=f' transform="rotate(-90 14 {_f(TOP + frame.plot_height / 2)})"'))
    return parts


def _legend(entries: list[tuple[str, str, bool]]) -> list[str]:
    """(name, colour, dashed) in a row above the plot, from the right."""
    parts, x = [], LEFT
    for name, colour, dashed in entries:
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(f'<line x1="{_f(x)}" y1="20" x2="{_f(x + 22)}" y2="20" stroke="{colour}" '
                     f'stroke-width="3"{dash}/>')
        parts.append(_text(x + 28, 24, name, anchor="start"))
        x += 40 + 7 * len(name)
    return parts


def _svg(title: str, parts: list[str], x_label: str, key: str) -> Markup:
    body = "".join(parts)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{escape(key)}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-label="{escape(title)}">'
        f'<title>{escape(title)}</title>{body}'
        f'{_text(LEFT + (WIDTH - LEFT - RIGHT) / 2, HEIGHT - 8, x_label, size=11)}</svg>')


def percent_tick(value: float) -> str:
    return f"{value * 100:.0f}%"


def line_chart(key: str, title: str, labels: list[str], series: list[Series], *,
               y_label: str, x_label: str, reference: tuple[str, float] | None = None) -> Markup:
    """Shares (0-1) per week as lines with dots; a week without a value breaks the line."""
    frame = Frame(len(labels), 1.0)
    parts = _axes(frame, labels, y_label, percent_tick)
    legend = [(s.name, s.colour, False) for s in series]
    if reference:
        name, value = reference
        y = _f(frame.y(value))
        parts.append(f'<line class="reference" data-value="{value}" x1="{LEFT}" y1="{y}" '
                     f'x2="{WIDTH - RIGHT}" y2="{y}" stroke="#c62828" stroke-width="2" '
                     f'stroke-dasharray="6 4"/>')
        legend.append((name, "#c62828", True))
    for line in series:
        parts.append(_line(frame, line, labels))
    return _svg(title, parts + _legend(legend), x_label, key)


def _line(frame: Frame, series: Series, labels: list[str]) -> str:
    runs, run = [], []
    for index, value in enumerate(series.values):
        if value is None:
            runs, run = runs + ([run] if run else []), []
        else:
            run.append(f"{_f(frame.x(index))},{_f(frame.y(value))}")
    runs += [run] if run else []
    paths = "".join(f'<polyline points="{" ".join(r)}" fill="none" stroke="{series.colour}" '
                    f'stroke-width="2.5"/>' for r in runs)
    dots = "".join(
        f'<circle cx="{_f(frame.x(i))}" cy="{_f(frame.y(v))}" r="3.5" fill="{series.colour}">'
        f'<title>{escape(series.name)} {escape(labels[i])}: {percent_tick(v)}</title></circle>'
        for i, v in enumerate(series.values) if v is not None)
    values = ",".join("" if v is None else f"{v:.4f}" for v in series.values)
    return (f'<g class="series" data-series="{escape(series.key)}" data-values="{values}">'
            f'{paths}{dots}</g>')


def _nice_max(value: float) -> float:
    """A top for the y axis: 4, 8, 16, ... so that the quarter ticks are whole numbers."""
    top = 4
    while top < value:
        top *= 2
    return float(top)


def bar_chart(key: str, title: str, labels: list[str], series: Series, *, y_label: str,
              x_label: str) -> Markup:
    """Counts per week as bars, each labelled with its number."""
    frame = Frame(len(labels), _nice_max(max([v or 0 for v in series.values], default=0)))
    parts = _axes(frame, labels, y_label, lambda v: f"{v:.0f}")
    width = frame.plot_width / max(len(labels), 1) * 0.6
    bars = []
    for index, value in enumerate(series.values):
        if value is None:
            continue
        x, y = frame.x(index) - width / 2, frame.y(value)
        bars.append(f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(width)}" '
                    f'height="{_f(HEIGHT - BOTTOM - y)}" fill="{series.colour}">'
                    f'<title>{escape(labels[index])}: {value:.0f}</title></rect>')
        bars.append(_text(frame.x(index), y - 4, f"{value:.0f}", size=10))
    values = ",".join("" if v is None else f"{v:.0f}" for v in series.values)
    group = (f'<g class="series" data-series="{escape(series.key)}" data-values="{values}">'
             f'{"".join(bars)}</g>')
    return _svg(title, parts + [group] + _legend([(series.name, series.colour, False)]),
                x_label, key)


# -- heat map -----------------------------------------------------------------------------
HEAT = ("#f3f5f7", "#fde0d2", "#fcae91", "#fb6a4a", "#de2d26", "#a50f15")  # 0, then 5 steps
HEAT_LEFT, HEAT_TOP, HEAT_ROW = 44, 30, 24


def heat_level(count: int, most: int) -> int:
    """0 for nothing, else 1-5 by the share of the busiest cell (a single call shows)."""
    return 0 if count <= 0 or most <= 0 else max(1, -(-5 * count // most))


def heat_map(key: str, title: str, rows: list[str], columns: list[str],
             counts: list[list[int]], *, cell_title, x_label: str) -> Markup:
    """Counts in a grid of ROWS × COLUMNS, each cell shaded by its count and labelled
    with it; `cell_title(row, column, count)` is the tooltip (an SVG <title>)."""
    most = max((n for line in counts for n in line), default=0)
    cell_width = (WIDTH - HEAT_LEFT - RIGHT) / max(len(columns), 1)
    height = HEAT_TOP + HEAT_ROW * len(rows) + 40
    parts = [_text(HEAT_LEFT + cell_width * (i + 0.5), HEAT_TOP - 8, column, size=10)
             for i, column in enumerate(columns)]
    for r, (row, line) in enumerate(zip(rows, counts)):
        y = HEAT_TOP + HEAT_ROW * r
        parts.append(_text(HEAT_LEFT - 6, y + HEAT_ROW / 2 + 4, row, anchor="end"))
        parts += [_heat_cell(HEAT_LEFT + cell_width * c, y, cell_width, r, c, count, most,
                             cell_title(row, columns[c], count))
                  for c, count in enumerate(line)]
    parts += _heat_legend(most, HEAT_TOP + HEAT_ROW * len(rows) + 12)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart heatmap" data-chart="{escape(key)}" '
        f'viewBox="0 0 {WIDTH} {height}" width="100%" role="img" aria-label="{escape(title)}">'
        f'<title>{escape(title)}</title>{"".join(parts)}'
        f'{_text(WIDTH - RIGHT, height - 6, x_label, anchor="end", size=11)}</svg>')


def _heat_cell(x: float, y: float, width: float, row: int, column: int, count: int, most: int,
               tooltip: str) -> str:
    level = heat_level(count, most)
    # Dark cells get white numbers (a style wins over _text's fill attribute).
    label = "" if not count else _text(x + width / 2, y + HEAT_ROW / 2 + 4, str(count), size=10,
                                       extra="" if level < 4 else ' style="fill:#fff"')
    return (f'<g class="cell" data-row="{row}" data-column="{column}" data-count="{count}">'
            f'<rect x="{_f(x + 1)}" y="{_f(y + 1)}" width="{_f(width - 2)}" '
            f'height="{HEAT_ROW - 2}" fill="{HEAT[level]}"/>{label}'
            f'<title>{escape(tooltip)}</title></g>')


def _heat_legend(most: int, y: float) -> list[str]:
    """The shades from none to the busiest cell's count."""
    parts = [_text(HEAT_LEFT, y + 11, "0", anchor="start", size=10)]
    for level, colour in enumerate(HEAT):
        parts.append(f'<rect x="{HEAT_LEFT + 14 + 18 * level}" y="{_f(y)}" width="16" '
                     f'height="14" fill="{colour}"/>')
    parts.append(_text(HEAT_LEFT + 18 + 18 * len(HEAT), y + 11, str(most), anchor="start",
                       size=10))
    return parts
