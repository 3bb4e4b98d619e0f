"""The `helpdesk` command line: run the daemon, migrate, ingest files, inspect tickets,
manage web accounts, serve the web."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from datetime import date
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError

from daemon import config as config_module
from daemon.clock import Clock, parse_instant
from daemon.logs import configure_logging
from daemon.store import Store
from daemon.store.db import cannot_open
from daemon.store.migrate import current_revision, head_revision

log = logging.getLogger("helpdesk")


class CommandError(Exception):
    """A user-facing failure: printed without a traceback, exit status 1."""


def _print_json(value) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def _open_store(config, *, migrate: bool, checkpoint_thread: bool = True) -> Store:
    """The store, migrated first when MIGRATE; one line naming the database (never its
    password) when it cannot be reached."""
    # The commands that write for long (run, ingest, calls import) leave the copying of
    # SQLite's write-ahead log to a thread of the store's, not to their commits.
    store = Store(config.database_url, checkpoint_thread=checkpoint_thread)
    try:
        if migrate:
            from daemon.service import prepare_store
            prepare_store(config, store)
        elif current_revision(store) != head_revision(store):
            raise CommandError("the store is not migrated: run `helpdesk migrate` first")
    except (OperationalError, InterfaceError) as exc:
        store.dispose()
        raise CommandError(cannot_open(config.database_url, exc)) from None
    return store


def _check_data_dirs(config) -> None:
    """Refuse to start on a read-only or full data folder, before the store is touched."""
    from daemon.datadir import DataDirError, check_data_dirs
    try:
        check_data_dirs(config)
    except DataDirError as exc:
        raise CommandError(str(exc)) from None


# -- commands ---------------------------------------------------------------------------
def cmd_check_config(args, config) -> int:
    from daemon.environment import configuration_source
    print(configuration_source(args.config, config.source))
    print(f"configuration OK: {len(config.mailboxes)} mailboxes, {len(config.clients)} clients, "
          f"{len(config.technicians)} technicians")
    return 0


def cmd_migrate(args, config) -> int:
    _check_data_dirs(config)
    store = _open_store(config, migrate=True, checkpoint_thread=False)
    print(f"store at revision {current_revision(store)}")
    return 0


def _bind_ports(config):
    """The receiver's and the web's ports, bound (and kept) before anything is created."""
    from daemon.listeners import PortUnavailable, bind_listeners
    from webform.config import web_config
    web = web_config(config)
    try:
        return bind_listeners(config.smtp_server.listen if config.smtp_server.enabled else None,
                              web.listen if web.enabled else None)
    except PortUnavailable as exc:
        raise CommandError(str(exc)) from None


def cmd_run(args, config) -> int:
    from daemon.service import Daemon
    if args.once:
        _check_data_dirs(config)
        daemon = Daemon(config, _open_store(config, migrate=True), args.clock)
        report = daemon.run_once()
        _print_json({k: (dict(v) if isinstance(v, Counter) else v) for k, v in report.items()})
        return 0
    listeners = _bind_ports(config)
    try:
        _check_data_dirs(config)
        store = _open_store(config, migrate=True)
    except CommandError:
        listeners.close()
        raise
    Daemon(config, store, args.clock).run(listeners)
    return 0


def cmd_ingest(args, config) -> int:
    from daemon.ingest.files import NotMail, read_mail
    from daemon.ingest.intake import save_kept
    mailbox = args.mailbox or config.mailboxes[0].address
    if not config.mailbox(mailbox):
        raise CommandError(f"--mailbox {mailbox}: not a configured mailbox")
    store = _open_store(config, migrate=True)
    if args.archive:
        return _ingest_archive(args, config, store, mailbox)
    from daemon.pipeline import Pipeline
    saved = Counter()
    for path in args.paths:
        # Committed in batches: the files keep the mail (daemon.ingest.intake.save_kept).
        try:
            for result in save_kept(store, read_mail(Path(path)), channel="file",
                                    now=args.clock.now, mailbox=mailbox):
                saved["saved" if result.created else "already stored"] += 1
        except NotMail as exc:
            raise CommandError(str(exc)) from None
    # --no-process: only save (the durability point); a running daemon works them off.
    processed = Counter() if args.no_process else \
        Pipeline(config, store, args.clock).process_pending()
    summary = {"files": dict(saved), "processed": dict(processed)}
    if args.json:
        _print_json(summary)
    else:
        print(", ".join(f"{n} {k}" for k, n in {**saved, **processed}.items()) or "nothing to do")
    return 0


def _ingest_archive(args, config, store: Store, mailbox: str) -> int:
    """ingest --archive: the files' mail imported as history, sending nothing."""
    from daemon.ingest.archive import ArchiveImport
    from daemon.ingest.files import NotMail
    archive = ArchiveImport(config, store, args.clock, mailbox=mailbox,
                            importing=not args.no_process, workers=args.parse_workers)
    try:
        result = archive.run(args.paths)
    except NotMail as exc:
        raise CommandError(str(exc)) from None
    summary = {"files": dict(result.saved), "history": dict(result.imported)}
    if args.json:
        _print_json(summary)
    else:
        print(", ".join(f"{n} {k}" for k, n in result.saved.items()) or "no mail in the files")
        print("history: " + (", ".join(f"{n} {k}" for k, n in sorted(result.imported.items()))
                             or "nothing imported"))
    return 0


def cmd_tickets(args, config) -> int:
    from daemon.store.models import Ticket
    from daemon.views import ticket_summary
    store = _open_store(config, migrate=False)
    with store.transaction() as session:
        query = select(Ticket).order_by(Ticket.id)
        if args.status:
            query = query.where(Ticket.status == args.status)
        now = args.clock.now()
        rows = [ticket_summary(t, config.tz, now) for t in session.scalars(query).unique()]
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            print(f"{row['number']:<12} {row['status']:<9} {row['tier']} {row['priority']:<7} "
                  f"{row['requester']:<30} {row['subject'][:60]}")
    return 0


def cmd_ticket(args, config) -> int:
    from daemon.store.models import Ticket
    from daemon.views import ticket_detail
    store = _open_store(config, migrate=False)
    with store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == args.number.upper()))
        if ticket is None:
            raise CommandError(f"no ticket {args.number}")
        detail = ticket_detail(ticket, config.tz, args.clock.now())
    if args.json:
        _print_json(detail)
    else:
        print(f"{detail['number']} [{detail['status']}, {detail['tier']}, {detail['priority']}] "
              f"{detail['subject']}")
        for message in detail["messages"]:
            print(f"\n--- {message['created_at']} {message['direction']} {message['kind']} "
                  f"{message['from']}\n{message['text'].strip()}")
    return 0


def cmd_quarantine(args, config) -> int:
    from daemon.quarantine import quarantined
    from daemon.views import quarantine_view
    store = _open_store(config, migrate=False)
    if args.action == "retry":
        return _quarantine_retry(args, config, store)
    with store.transaction() as session:
        rows = [quarantine_view(r, config.tz) for r in quarantined(session)]
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            print(f"{row['id']:>6} {row['received_at']} {row['origin'][:40]:<40} {row['reason']}")
    return 0


def cmd_outbox(args, config) -> int:
    from daemon.outbound.listing import list_outbox
    store = _open_store(config, migrate=False)
    with store.transaction() as session:
        rows = list_outbox(session, config.tz, args.status)
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            print(f"{row['id']:>6} {row['status']:<8} {row['attempts']:>3} {row['ticket'] or '-':<12} "
                  f"{row['kind']:<16} {', '.join(row['to'])[:40]:<40} {row['subject'][:50]}")
            if row["last_error"]:
                print(f"{'':>6} {row['last_error']}")
    return 0


def _quarantine_retry(args, config, store: Store) -> int:
    from daemon.pipeline import Pipeline
    from daemon.quarantine import retry_quarantined
    if not args.ids:
        raise CommandError("quarantine retry: name the record IDs (see `helpdesk quarantine`)")
    pipeline = Pipeline(config, store, args.clock)
    failed = 0
    for raw_id in args.ids:
        status = retry_quarantined(pipeline, raw_id)
        if status is None:
            print(f"{raw_id}: not in quarantine", file=sys.stderr)
            failed += 1
            continue
        print(f"{raw_id}: {status}")
        failed += status == "quarantined"
    return 1 if failed else 0


def _password(args) -> str:
    """--password, else asked twice on a terminal, else one line from a pipe."""
    if args.password is not None:
        return args.password
    if sys.stdin.isatty():
        import getpass
        first = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != first:
            raise CommandError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


# What `helpdesk user` did, Polish and English.
USER_DONE = {
    "created": ("konto utworzone", "account created"),
    "updated": ("konto zaktualizowane; jego wcześniejsze sesje są zakończone",
                "account updated; its earlier sessions are signed out"),
    "passwd": ("hasło zmienione; wcześniejsze sesje konta są zakończone",
               "password changed; its earlier sessions are signed out"),
    "disable": ("dostęp do strony odebrany; sesje konta są zakończone",
                "web access removed; its sessions are signed out"),
}


def _user_done(what: str, language: str) -> str:
    return USER_DONE[what][language == "en"]


def _has_web_account(session, email: str) -> bool:
    """A row with a password, active. The configuration's technicians have rows from
    the start (mirrored on every start) but no web account until `user add`."""
    from daemon.store.models import Technician
    row = session.scalar(select(Technician).where(Technician.email == email.strip().lower()))
    return row is not None and bool(row.password_hash) and row.active


def cmd_user(args, config) -> int:
    from daemon.words import word
    from webform.accounts import AccountError, add_user, disable_user, set_password
    store = _open_store(config, migrate=True)
    password = _password(args) if args.action in ("add", "passwd") else None
    now, language = args.clock.now(), config.language
    try:
        with store.transaction() as session:
            if args.action == "add":
                existed = _has_web_account(session, args.email)
                row, _ = add_user(session, config, args.email, role=args.role, tier=args.tier,
                                  name=args.name, password=password, now=now)
                done = (f"{_user_done('updated' if existed else 'created', language)} "
                        f"({word(row.role, language)}, {row.tier})")
            elif args.action == "passwd":
                set_password(session, args.email, password, now=now)
                done = _user_done("passwd", language)
            else:
                disable_user(session, config, args.email, now=now)
                done = _user_done("disable", language)
    except AccountError as exc:
        raise CommandError(str(exc)) from None
    print(f"{args.email.strip().lower()}: {done}")
    return 0


def cmd_web(args, config) -> int:
    import signal
    import threading

    from daemon.listeners import PortUnavailable, bind
    from webform.config import web_config
    from webform.serve import WebServer
    try:
        sock = bind(args.listen or web_config(config).listen,
                    "--listen" if args.listen else "[web] listen")
    except PortUnavailable as exc:
        raise CommandError(str(exc)) from None
    try:
        store = _open_store(config, migrate=True)
    except CommandError:
        sock.close()
        raise
    server = WebServer(config, store, args.clock, sock=sock).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(timeout=1):
        pass
    server.stop()
    log.info("web stopped")
    return 0


def _listen(text: str):
    try:
        return config_module.parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_rules(args, config) -> int:
    """rules explain FILE.eml: what routing would do with the mail, changing nothing."""
    from daemon.parse import UnparseableMail, parse_mail
    from daemon.rules.explain import explain_mail, format_explanation
    if args.mailbox and not config.mailbox(args.mailbox):
        raise CommandError(f"--mailbox {args.mailbox}: not a configured mailbox")
    try:
        mail = parse_mail(Path(args.file).read_bytes(),
                          attachment_max_bytes=config.limits.attachment_max_bytes)
    except OSError as exc:
        raise CommandError(f"{args.file}: {exc.strerror}") from None
    except UnparseableMail as exc:
        raise CommandError(f"{args.file}: not a mail: {exc}") from None
    explanation = explain_mail(config, mail, now=args.clock.now(), mailbox=args.mailbox,
                               channel=args.channel, category=args.category)
    if args.json:
        _print_json(explanation)
    else:
        print(format_explanation(explanation))
    return 0


def cmd_sla(args, config) -> int:
    """sla recompute: due times of open tickets again from their history (after a config change)."""
    from daemon.rules.sla import recompute_open_tickets
    store = _open_store(config, migrate=False)
    count = recompute_open_tickets(config, store, args.clock.now())
    print(f"due times recomputed on {count} open tickets")
    return 0


def cmd_report(args, config) -> int:
    """report --from --to: service figures for local days FROM..TO (inclusive)."""
    from daemon.report_output import to_csv, to_text
    from daemon.reports import report
    if args.last < args.first:
        raise CommandError("--to is before --from")
    store = _open_store(config, migrate=False)
    with store.transaction() as session:
        result = report(session, config, args.first, args.last, args.clock.now())
    if args.json:
        _print_json(result)
    elif args.csv:
        sys.stdout.write(to_csv(result, config.language))
    else:
        print(to_text(result, config.language))
    return 0


def _date(text: str):
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date like 2026-03-29: {text!r}") from None


def _instant(text: str):
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- parser -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="helpdesk", description=__doc__)
    parser.add_argument("--config", help="TOML configuration (default: $HELPDESK_CONFIG, "
                                         "else built-in embedded defaults)")
    parser.add_argument("--now", type=_instant, metavar="ISO8601",
                        help="treat this instant as the present, e.g. 2026-03-30T09:00:00+02:00")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon (IMAP, SMTP receiver, jobs)")
    run.add_argument("--once", action="store_true", help="run every job once, then exit")
    run.set_defaults(func=cmd_run)
    commands.add_parser("migrate", help="create or upgrade the store's schema").set_defaults(
        func=cmd_migrate)
    commands.add_parser("check-config", help="validate the configuration").set_defaults(
        func=cmd_check_config)

    ingest = commands.add_parser("ingest", help="ingest .eml files, mbox files, Maildir folders")
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument("--mailbox", help="the dedicated address the mail counts as sent to")
    ingest.add_argument("--json", action="store_true")
    ingest.add_argument("--no-process", action="store_true",
                        help="only save the mail as pending; `helpdesk run` processes it")
    ingest.add_argument("--archive", action="store_true",
                        help="import the mail as history: closed tickets dated by the mail, "
                             "nothing sent")
    ingest.add_argument("--parse-workers", type=int, choices=(0, 1, 2, 3, 4), metavar="N",
                        help="with --archive: processes that parse beside the import "
                             "(default: 1 where a second core is idle, else 0)")
    ingest.set_defaults(func=cmd_ingest)

    tickets = commands.add_parser("tickets", help="list tickets")
    tickets.add_argument("--json", action="store_true")
    tickets.add_argument("--status", choices=("new", "open", "waiting", "resolved", "closed"))
    tickets.set_defaults(func=cmd_tickets)

    ticket = commands.add_parser("ticket", help="show one ticket with its messages")
    ticket.add_argument("number")
    ticket.add_argument("--json", action="store_true")
    ticket.set_defaults(func=cmd_ticket)

    quarantine = commands.add_parser("quarantine", help="list or retry unprocessable mail")
    quarantine.add_argument("action", nargs="?", choices=("list", "retry"), default="list")
    quarantine.add_argument("ids", nargs="*", type=int, metavar="ID")
    quarantine.add_argument("--json", action="store_true")
    quarantine.set_defaults(func=cmd_quarantine)

    outbox = commands.add_parser("outbox", help="list outgoing mail and its delivery status")
    outbox.add_argument("--json", action="store_true")
    outbox.add_argument("--status", choices=("pending", "sent", "failed"))
    outbox.set_defaults(func=cmd_outbox)

    rules = commands.add_parser("rules", help="routing rules: explain what they do with a mail")
    rules_actions = rules.add_subparsers(dest="action", required=True, metavar="ACTION")
    explain = rules_actions.add_parser("explain", help="which rules match FILE.eml and why; "
                                                       "the resulting tier, priority and due times")
    explain.add_argument("file", metavar="FILE.eml")
    explain.add_argument("--mailbox", help="the mailbox it counts as sent to (default: from To/Cc)")
    explain.add_argument("--channel", default="email", help="email (default), web or phone")
    explain.add_argument("--category", help="the form category, for rules that test one")
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(func=cmd_rules)

    sla = commands.add_parser("sla", help="SLA clocks")
    sla_actions = sla.add_subparsers(dest="action", required=True, metavar="ACTION")
    sla_actions.add_parser("recompute", help="recompute open tickets' due times from their "
                                             "history, e.g. after contracts changed").set_defaults(
        func=cmd_sla)

    report = commands.add_parser("report", help="service figures for local days FROM..TO: "
                                                "volume, speed, SLA, L1 rate, ratings")
    report.add_argument("--from", dest="first", type=_date, metavar="DATE", required=True)
    report.add_argument("--to", dest="last", type=_date, metavar="DATE", required=True,
                        help="the last day, inclusive")
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--csv", action="store_true", help="one row per group of each breakdown")
    report.set_defaults(func=cmd_report)

    user = commands.add_parser("user", help="web accounts of coordinators and technicians")
    user_actions = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = user_actions.add_parser("add", help="give EMAIL a web account (or update it)")
    add.add_argument("email")
    add.add_argument("--role", required=True, choices=config_module.ROLES)
    add.add_argument("--tier", choices=config_module.TIERS)
    add.add_argument("--name", help="display name (default: from the configuration or the address)")
    passwd = user_actions.add_parser("passwd", help="set a new password for EMAIL")
    passwd.add_argument("email")
    for action in (add, passwd):
        action.add_argument("--password", help="the password; without it: asked on a terminal, "
                                               "else one line read from standard input")
    disable = user_actions.add_parser("disable", help="take EMAIL's web access away")
    disable.add_argument("email")
    user.set_defaults(func=cmd_user)

    web = commands.add_parser("web", help="serve the web (form, triage) without the daemon")
    web.add_argument("--listen", type=_listen, metavar="HOST:PORT",
                     help="default: [web] listen, 127.0.0.1:8080")
    web.set_defaults(func=cmd_web)

    from daemon.calls_cli import add_calls_parser
    add_calls_parser(commands)
    from daemon.ops_cli import add_ops_parser
    add_ops_parser(commands)
    return parser


def _warn_unread_variables(source: str | os.PathLike | None) -> None:
    """A misspelt HELPDESK_CONFG must not go unnoticed (daemon.environment)."""
    from daemon.environment import referenced_variables, unread_variables
    for warning in unread_variables(os.environ,
                                    referenced_variables(Path(source) if source else None)):
        log.warning("%s", warning)


def _announce_configuration(args, config) -> None:
    """The file read (or the defaults), first thing in the log of the long-running commands."""
    from daemon.environment import configuration_source
    level = logging.INFO if args.func in (cmd_run, cmd_web) else logging.DEBUG
    log.log(level, "helpdesk %s: %s", args.command, configuration_source(args.config,
                                                                        config.source))
    _warn_unread_variables(config.source)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    args.clock = Clock(start=args.now)
    try:
        config = config_module.load(args.config)
    except config_module.ConfigError as exc:
        _warn_unread_variables(args.config or os.environ.get("HELPDESK_CONFIG"))
        print("configuration errors:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    _announce_configuration(args, config)
    try:
        return args.func(args, config)
    except CommandError as exc:
        print(f"helpdesk: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
