"""`helpdesk calls`: list call records, import them now (a source or a file), show the figures."""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime

from daemon.cli import CommandError, _open_store, _print_json


def add_calls_parser(commands) -> None:
    calls = commands.add_parser("calls", help="hotline call records: list, import, figures")
    calls.add_argument("--json", action="store_true")
    calls.add_argument("--from", dest="first", type=_date, metavar="DATE",
                       help="calls from this local day (YYYY-MM-DD)")
    calls.add_argument("--to", dest="last", type=_date, metavar="DATE",
                       help="calls up to this local day, inclusive")
    calls.add_argument("--source", help="only this [[pbx_sources]] name")
    calls.add_argument("--number", help="calls from or to this number (any format)")
    calls.add_argument("--client", help="calls of this client (name)")
    calls.add_argument("--contact", help="calls of this contact (address)")
    actions = calls.add_subparsers(dest="action", metavar="ACTION")

    run = actions.add_parser("import", help="import now: a source from its cursor, or FILE")
    run.add_argument("file", nargs="?", metavar="FILE",
                     help="a CSV export or an Asterisk Master.csv, read with --source's mapping")
    run.add_argument("--source", required=True, help="the [[pbx_sources]] name")
    run.add_argument("--format", choices=("csv", "asterisk"),
                     help="FILE's format (default: asterisk for an asterisk source, else csv)")
    run.add_argument("--progress", action="store_true",
                     help="show a progress bar on stderr even when it is not a terminal")
    run.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    report = actions.add_parser("report", help="figures for local days FROM..TO")
    report.add_argument("--from", dest="first", type=_date, metavar="DATE", required=True)
    report.add_argument("--to", dest="last", type=_date, metavar="DATE", required=True)
    report.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    calls.set_defaults(func=cmd_calls)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date like 2026-03-29: {text!r}") from None


def cmd_calls(args, config) -> int:
    if args.action == "import":
        return _import(args, config)
    if args.action == "report":
        return _report(args, config)
    return _list(args, config)


# -- list ---------------------------------------------------------------------------------
def _list(args, config) -> int:
    from sqlalchemy import select

    from daemon.call_views import call_view, calls_query
    from daemon.ingest.calls.numbers import normalise_number
    from daemon.store.models import Client
    store = _open_store(config, migrate=False)
    start, end = _bounds(args, config)
    with store.transaction() as session:
        client_id = None
        if args.client:
            client_id = session.scalar(select(Client.id).where(Client.name == args.client))
            if client_id is None:
                raise CommandError(f"no client named {args.client!r}")
        query = calls_query(start=start, end=end, source=args.source,
                            number=normalise_number(args.number) if args.number else None,
                            client_id=client_id, contact=args.contact)
        calls = (call_view(c, config.tz)
                 for c in session.scalars(query.execution_options(yield_per=1000)))
        if args.json:
            _json_lines(calls)
        else:
            _table(calls)
    return 0


def _bounds(args, config) -> tuple[datetime | None, datetime | None]:
    from daemon.call_figures import period
    start = period(args.first, args.first, config.tz)[0] if args.first else None
    end = period(args.last, args.last, config.tz)[1] if args.last else None
    return start, end


def _json_lines(rows) -> None:
    """A JSON array written one call at a time: a long listing needs no memory for itself."""
    sys.stdout.write("[")
    for index, row in enumerate(rows):
        sys.stdout.write(("," if index else "") + "\n  " + json.dumps(row, ensure_ascii=False))
    sys.stdout.write("\n]\n")


def _table(rows) -> None:
    for row in rows:
        print(f"{row['started_at'][:19]} {row['direction']:<3} {row['outcome']:<9} "
              f"{row['caller'] or 'withheld':<14} -> {row['callee'] or '-':<14} "
              f"wait {row['wait_seconds'] if row['wait_seconds'] is not None else '-':>4} "
              f"talk {row['talk_seconds'] if row['talk_seconds'] is not None else '-':>5} "
              f"{row['client'] or '':<20} {row['ticket'] or ''}")


# -- import -------------------------------------------------------------------------------
def _import(args, config) -> int:
    from daemon.ingest.calls.config import calls_config
    from daemon.ingest.calls.run import CallImportError, import_file, run_source
    store = _open_store(config, migrate=True)
    show = args.progress or sys.stderr.isatty()
    bar = ProgressBar(sys.stderr) if show else None
    try:
        if args.file:
            source = calls_config(config).source(args.source)
            file_format = args.format or ("asterisk" if source and source.kind == "asterisk"
                                          else "csv")
            result = import_file(config, store, args.source, args.file, file_format,
                                 args.clock.now(), progress=bar)
        else:
            result = run_source(config, store, args.source, args.clock.now(), progress=bar)
    except CallImportError as exc:
        raise CommandError(str(exc)) from None
    finally:
        if bar:
            bar.finish()
    if getattr(args, "json", False):
        _print_json(result.as_dict())
    else:
        print(f"{args.source}: {result.summary()}")
        for error in result.call_import_errors[:20]:
            print(f"  {error['file']}:{error['line']}: {error['error']}", file=sys.stderr)
    return 0


class ProgressBar:
    """A one-line text bar on a terminal: file, share of its bytes read, a bar."""

    WIDTH = 30

    def __init__(self, stream):
        self.stream, self.shown = stream, None

    def __call__(self, name: str, done: int, total: int) -> None:
        share = done / total if total else 1.0
        filled = int(share * self.WIDTH)
        line = f"\r{name[-40:]} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {share:4.0%}"
        if line != self.shown:
            self.stream.write(line)
            self.stream.flush()
            self.shown = line

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


# -- report -------------------------------------------------------------------------------
def _report(args, config) -> int:
    from daemon.call_figures import call_figures
    from daemon.ingest.calls.config import calls_config
    if args.last < args.first:
        raise CommandError("--to is before --from")
    store = _open_store(config, migrate=False)
    settings = calls_config(config).settings
    with store.transaction() as session:
        figures = call_figures(session, args.first, args.last, config.tz,
                               settings.service_level_seconds)
    if getattr(args, "json", False):
        _print_json(figures)
    else:
        from daemon.report_output import calls_to_text
        print(calls_to_text(figures, config.language))
    return 0
