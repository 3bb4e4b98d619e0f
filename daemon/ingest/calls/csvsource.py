"""CSV call exports: a header row names their columns, [pbx_sources.columns] maps them to ours.

`csv_rows` reads one stream (a file of a drop folder, a mail attachment) row by row and
hands each well-formed row to the writer; a row it cannot read is reported with the file
and the line it starts on. A file without a column the mapping needs is reported once
and not imported at all (its cursor does not move, so it is read again after the
mapping is fixed).
"""
from __future__ import annotations

import csv
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from daemon.ingest.calls.config import PbxSource
from daemon.ingest.calls.files import FileProblem, TextLines, sniff_delimiter
from daemon.ingest.calls.records import RowError, make_record
from daemon.ingest.calls.writer import CallWriter

Progress = Callable[[int], None]   # called with the bytes read so far, every PROGRESS_ROWS rows
PROGRESS_ROWS = 5000
csv.field_size_limit(1024 * 1024)  # one broken quote must not swallow a whole file silently


@dataclass
class Layout:
    """How a file's rows are read: its separator, its header, where our fields are."""

    delimiter: str
    header: list[str]
    positions: dict[str, tuple[int, ...]]   # our field -> indexes of their columns

    def as_dict(self) -> dict:
        return {"delimiter": self.delimiter, "header": self.header}


def read_layout(lines: TextLines, source: PbxSource) -> Layout:
    """Skip the title lines, read the header (or number the columns 1, 2, …)."""
    for _ in range(source.skip_lines):
        lines.readline()
    first = lines.readline()
    while first is not None and not first.strip():
        first = lines.readline()
    if first is None:
        raise FileProblem("empty: no header row", lines.line)
    delimiter = source.delimiter or sniff_delimiter(first)
    cells = next(csv.reader([first], delimiter=delimiter), [])
    if source.header:
        header = [c.strip().lstrip("\ufeff") for c in cells]
        layout = Layout(delimiter, header, {})
    else:
        layout = Layout(delimiter, [str(i + 1) for i in range(len(cells))], {})
    layout.positions = _positions(layout.header, source, lines.line)
    return layout


def resumed_layout(saved: dict, source: PbxSource, line: int) -> Layout:
    layout = Layout(saved["delimiter"], list(saved["header"]), {})
    layout.positions = _positions(layout.header, source, line)
    return layout


def _positions(header: list[str], source: PbxSource, line: int) -> dict[str, tuple[int, ...]]:
    index = {name.lower(): i for i, name in reversed(list(enumerate(header)))}
    positions, missing = {}, []
    for ours, theirs in source.columns.items():
        found = [index.get(name.lower()) for name in theirs]
        missing += [f"{name!r} ({ours})" for name, i in zip(theirs, found) if i is None]
        positions[ours] = tuple(i for i in found if i is not None)
    if missing:
        raise FileProblem(f"no column {', '.join(missing)} in the header; it has: "
                          f"{', '.join(repr(h) for h in header)}", line)
    return positions


def csv_rows(lines: TextLines, layout: Layout) -> Iterator[tuple[int, list[str]]]:
    """(line the row starts on, its cells) for every non-empty row after the header."""
    start = lines.line + 1
    for cells in csv.reader(lines, delimiter=layout.delimiter):
        row_start, start = start, lines.line + 1
        if cells and (cells[0].strip() or any(c.strip() for c in cells)):
            yield row_start, cells


def import_csv_stream(lines: TextLines, layout: Layout, source: PbxSource, writer: CallWriter,
                      label: str, progress: Progress | None = None) -> None:
    """Every row of LINES into WRITER; bad rows reported as LABEL:line."""
    needed = max((i for ps in layout.positions.values() for i in ps), default=-1) + 1
    header, add, result = layout.header, writer.add, writer.result
    # Every field from one column (the usual mapping): its cells picked in one call.
    single = all(len(ps) == 1 for ps in layout.positions.values()) and len(layout.positions) > 1
    if single:
        names = tuple(layout.positions)
        pick = operator.itemgetter(*(ps[0] for ps in layout.positions.values()))
    for count, (line, cells) in enumerate(csv_rows(lines, layout), 1):
        if progress and count % PROGRESS_ROWS == 0:
            progress(lines.offset)
        try:
            if single and len(cells) >= needed and not lines.undecodable:
                values = dict(zip(names, pick(cells)))
            else:
                values = _values(cells, layout, needed, lines, line)
            record = make_record(values, source)
        except RowError as exc:
            result.read += 1
            result.error(label, line, str(exc))
            continue
        add(record, dict(zip(header, cells)), f"{label}:{line}")


def _values(cells: list[str], layout: Layout, needed: int, lines: TextLines,
            line: int) -> dict[str, str]:
    if lines.undecodable and any(n in lines.undecodable for n in range(line, lines.line + 1)):
        raise RowError(f"bytes that are not {lines.encoding}: check [pbx_sources] encoding")
    if len(cells) < needed:
        raise RowError(f"{len(cells)} fields, the header has {len(layout.header)} "
                       f"(check the delimiter {layout.delimiter!r} and the quoting)")
    return {ours: cells[positions[0]] if len(positions) == 1
            else " ".join(cells[i].strip() for i in positions)
            for ours, positions in layout.positions.items()}
